/**
 * The three stacks the chaos harness breaks, each built from real processes this harness starts (and so may kill):
 *   serve:   `kiln serve` (web + built-in SSH glue + local runner in one process), SQLite;
 *   jenkins: `kiln web` -> OpenSSH (forced command `kiln glue`, jenkins backend) -> the Jenkins double process;
 *   pg:      two `kiln web` on one PostgreSQL database -> `kiln glue-server` (built-in SSH, local runner).
 * Every stack runs the chaos SDK (fake for `# fake:` Dockerfiles, else the real `kiln sdk build`), which writes a
 * ledger line when an SDK run starts and ends: the harness's own witness of how often each build really ran.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createDb, type Db } from '../../src/db/index.js';
import { ensureKeyPair } from '../../src/shared/ssh-keys.js';
import { PG_ADMIN_URL } from '../db/engines.js';
import { freePort, startOpenSshGlue, type OpenSshGlue } from '../helpers/glue.js';
import { Part, onHarnessExit, type PartCommand } from './parts.js';
import { allProcs, cwdOf, descendants, envOf, signalGroupIfSame, signalIfSame, type Proc } from './procs.js';

export type StackName = 'serve' | 'jenkins' | 'pg';
export const STACKS: readonly StackName[] = ['serve', 'jenkins', 'pg'];

/** What every stack shares in one run. */
export interface RunContext {
  runId: string;
  root: string;
  /** The private copy of `kiln` (immune to other runs recompiling dist/). */
  kiln: string;
  /** The chaos SDK wrapper and the fake SDK it calls. */
  sdk: string;
  fakeSdk: string;
  ledger: string;
  repo: string;
}

/** A build as the backend (local data dir or Jenkins) has it. */
export interface BackendBuild {
  job: number;
  build: number;
  key?: string;
  state: string;
  detail?: string;
  startedAt?: string;
  finishedAt?: string;
}

/** The build a kill cut off directly (an SDK or a build step), as far as its process tells. */
export interface Hit {
  key?: string;
  job?: number;
  build?: number;
}

/** Something the harness can kill: a long-lived part, or a process found below one. */
export interface KillTarget {
  name: string;
  weight: number;
  /** Kills one instance now; returns what it killed, or undefined when there is none at this moment. */
  kill(): Promise<{ what: string; hit?: Hit } | undefined>;
  /** The part to restart after the kill, if any. */
  part?: Part;
}

/** Which build a process works for: the key Jenkins exports, the local runner's job/build, or its --out path. */
function hitOf(p: Proc): Hit {
  const key = envOf(p.pid, 'KILN_BUILD_KEY');
  const job = envOf(p.pid, 'KILN_JOB') ?? /^kiln-job-(\d+)$/.exec(envOf(p.pid, 'JOB_NAME') ?? '')?.[1];
  const build = envOf(p.pid, 'KILN_BUILD') ?? envOf(p.pid, 'BUILD_NUMBER');
  const out = /\/kiln-job-(\d+)\/builds\/(\d+)\//.exec(p.cmdline);
  return {
    ...(key ? { key } : {}),
    ...(job && build
      ? { job: Number(job), build: Number(build) }
      : out
        ? { job: Number(out[1]), build: Number(out[2]) }
        : {}),
  };
}

export interface Stack {
  name: StackName;
  dir: string;
  tmp: string;
  parts: Part[];
  targets: KillTarget[];
  /** Base URLs of the web instances (running or not). */
  webs: string[];
  /** Database checks run after the stack stopped: problems found. */
  dbCheck(ackedIds: number[]): Promise<string[]>;
  backendBuilds(): Promise<BackendBuild[]>;
  /** Empty when the backend has nothing queued or running; else what it still has. */
  backendBusy(): Promise<string[]>;
  /** Backend-side leftovers (work dirs of finished builds, temp files, scripts, stale queue entries). */
  backendLeftovers(): Promise<string[]>;
  /**
   * Jobs whose workspace still holds a killed build's SDK scratch: the backend's own recovery is the job's next
   * build (Jenkins keeps a workspace between builds; Kiln's step empties it first), so the harness runs one.
   */
  scratchJobs?(): number[];
  /** PIDs of processes that belong to the stack's long-lived parts and may run at quiescence. */
  expectedProcess(p: Proc): boolean;
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

const SDK_MARKERS = (ctx: RunContext) => [ctx.fakeSdk, 'dist/cmd/kiln.js sdk'];

/** The SDK processes below `roots` (the innermost: the fake script or the real SDK's node, not the ledger wrapper). */
export function sdkProcesses(ctx: RunContext, roots: number[]): Proc[] {
  const procs = allProcs();
  return roots
    .flatMap((r) => descendants(r, procs))
    .filter((p) => SDK_MARKERS(ctx).some((m) => p.cmdline.includes(m)) && !p.cmdline.includes(ctx.sdk));
}

function sdkTarget(ctx: RunContext, roots: () => number[], pick: (n: number) => number): KillTarget {
  return {
    name: 'sdk',
    weight: 2,
    async kill() {
      const found = sdkProcesses(ctx, roots());
      if (!found.length) return undefined;
      const p = found[pick(found.length)]!;
      const hit = hitOf(p);
      return signalIfSame(p, 'SIGKILL') ? { what: `sdk pid ${p.pid} (${p.cmdline.slice(0, 160)})`, hit } : undefined;
    },
  };
}

function partTarget(part: Part, weight: number): KillTarget {
  return {
    name: part.name,
    weight,
    part,
    kill: async () => ((await part.kill()) ? { what: `${part.name} pid ${part.proc?.pid}` } : undefined),
  };
}

function baseEnv(ctx: RunContext, tmp: string, extra: Record<string, string>): Record<string, string> {
  return {
    PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: process.env.HOME ?? '/root',
    TMPDIR: tmp,
    // Inherited by everything the part starts (unless it filters its children's environment): how leftover
    // processes of this run are recognised on a shared machine.
    KILN_CHAOS_RUN: ctx.runId,
    KILN_LOG_LEVEL: 'info',
    KILN_WORKER_RECONCILE_SECONDS: '1',
    KILN_WORKER_REFRESH_MS: '500',
    KILN_WORKER_LEASE_SECONDS: '10',
    KILN_WEB_QUOTA_QUEUED_BUILDS: '1000',
    KILN_WEB_QUOTA_DOCKERFILES: '200',
    KILN_SDK_FORMATS: 'raw',
    ...extra,
  };
}

const kilnPart = (
  ctx: RunContext,
  name: string,
  dir: string,
  args: string[],
  env: () => Record<string, string>,
  ready: RegExp,
): Part =>
  new Part(
    name,
    (): PartCommand => ({ file: ctx.kiln, args, env: env(), cwd: dir, ready }),
    path.join(dir, `${name}.log`),
  );

/** Builds of the local backend, read from its data directory (the runner's own records). */
async function localBuilds(dataDir: string): Promise<BackendBuild[]> {
  const jobs = path.join(dataDir, 'glue', 'jobs');
  const out: BackendBuild[] = [];
  for (const j of await fsp.readdir(jobs).catch(() => [] as string[])) {
    const m = /^kiln-job-(\d+)$/.exec(j);
    if (!m) continue;
    for (const n of await fsp.readdir(path.join(jobs, j, 'builds')).catch(() => [] as string[])) {
      try {
        const rec = JSON.parse(await fsp.readFile(path.join(jobs, j, 'builds', n, 'build.json'), 'utf8')) as {
          idempotencyKey?: string;
          state: string;
          reason?: string;
          startedAt?: string;
          finishedAt?: string;
        };
        out.push({
          job: Number(m[1]),
          build: Number(n),
          key: rec.idempotencyKey,
          state: rec.state,
          detail: rec.reason,
          startedAt: rec.startedAt,
          finishedAt: rec.finishedAt,
        });
      } catch (e) {
        out.push({ job: Number(m[1]), build: Number(n), state: 'unreadable', detail: (e as Error).message });
      }
    }
  }
  return out;
}

async function localBusy(dataDir: string): Promise<string[]> {
  const busy = (await localBuilds(dataDir))
    .filter((b) => b.state === 'queued' || b.state === 'running')
    .map((b) => `local build ${b.job}#${b.build} ${b.state}`);
  const queue = await fsp.readdir(path.join(dataDir, 'glue', 'queue')).catch(() => [] as string[]);
  return [...busy, ...queue.filter((q) => !q.startsWith('.')).map((q) => `queue entry ${q}`)];
}

/** What a local backend leaves that a quiet one should not have. */
async function localLeftovers(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  const root = path.join(dataDir, 'glue');
  const builds = await localBuilds(dataDir);
  for (const b of builds) {
    if (b.state === 'queued' || b.state === 'running') continue;
    const ws = path.join(root, 'jobs', `kiln-job-${b.job}`, 'builds', String(b.build), 'ws');
    if (existsSync(ws)) out.push(`work dir of finished build ${b.job}#${b.build} (${b.state}) left: ${ws}`);
  }
  const walk = async (d: string, depth: number): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (/^\..*\.tmp$/.test(e.name)) out.push(`half-written temp file ${p}`);
      if (e.name.startsWith('.deleted-')) out.push(`deleted job not removed: ${p}`);
      if (e.isDirectory() && depth < 6 && e.name !== 'archive') await walk(p, depth + 1);
    }
  };
  await walk(root, 0);
  if (existsSync(path.join(root, '.lock'))) out.push(`data directory lock left: ${path.join(root, '.lock')}`);
  return out;
}

/** Consistency of the web's rows, on either engine (run after the stack stopped). */
export async function checkRows(db: Db, ackedIds: number[]): Promise<string[]> {
  const problems: string[] = [];
  const final = ['succeeded', 'failed', 'cancelled', 'lost'];
  const rows = (await db('builds').select('*')) as Array<Record<string, unknown>>;
  const ids = new Set(rows.map((r) => Number(r.id)));
  for (const id of ackedIds) if (!ids.has(id)) problems.push(`acknowledged build ${id} has no row`);
  const seenBackend = new Map<string, number>();
  for (const r of rows) {
    const st = String(r.state);
    if (final.includes(st) && !r.finished_at) problems.push(`build ${r.id} is ${st} without finished_at`);
    if (!final.includes(st) && r.finished_at) problems.push(`build ${r.id} is ${st} but has finished_at`);
    if ((st === 'queued' || st === 'running') && r.backend_build == null)
      problems.push(`build ${r.id} is ${st} without a backend build`);
    if (r.backend_build != null) {
      const k = `${r.dockerfile_id}#${r.backend_build}`;
      if (seenBackend.has(k)) problems.push(`builds ${seenBackend.get(k)} and ${r.id} share backend build ${k}`);
      seenBackend.set(k, Number(r.id));
    }
  }
  const orphans = await db('builds as b')
    .leftJoin('dockerfile_versions as v', 'v.id', 'b.version_id')
    .whereNull('v.id')
    .select('b.id');
  for (const o of orphans) problems.push(`build ${o.id} points at a missing version`);
  const wrongVersion = await db('builds as b')
    .join('dockerfile_versions as v', 'v.id', 'b.version_id')
    .whereRaw('v.dockerfile_id <> b.dockerfile_id')
    .select('b.id');
  for (const o of wrongVersion) problems.push(`build ${o.id} points at another Dockerfile's version`);
  const dupKeys = (await db('builds')
    .select('idempotency_key')
    .count({ n: '*' })
    .groupBy('idempotency_key')
    .havingRaw('count(*) > 1')) as Array<{ idempotency_key: string; n: number }>;
  for (const d of dupKeys) problems.push(`idempotency key ${d.idempotency_key} on ${d.n} builds`);
  const badCurrent = await db('dockerfiles as d')
    .leftJoin('dockerfile_versions as v', 'v.id', 'd.current_version_id')
    .where((q) => q.whereNull('v.id').orWhereRaw('v.dockerfile_id <> d.id'))
    .select('d.id');
  for (const d of badCurrent) problems.push(`Dockerfile ${d.id} has no valid current version`);
  return problems;
}

async function sqliteCheck(file: string, ackedIds: number[]): Promise<string[]> {
  if (!existsSync(file)) return [`database file ${file} is missing`];
  const db = createDb({ client: 'sqlite', filename: file });
  try {
    const problems: string[] = [];
    const ic = (await db.raw('PRAGMA integrity_check')) as Array<{ integrity_check: string }>;
    if (ic.map((r) => r.integrity_check).join(',') !== 'ok')
      problems.push(`integrity_check: ${JSON.stringify(ic).slice(0, 500)}`);
    const fk = (await db.raw('PRAGMA foreign_key_check')) as unknown[];
    if (fk.length) problems.push(`foreign_key_check: ${JSON.stringify(fk).slice(0, 500)}`);
    return [...problems, ...(await checkRows(db, ackedIds))];
  } finally {
    await db.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** The stack's directory and its subdirectories (made): [dir, tmp, ...subs]. */
function stackDirs(ctx: RunContext, name: StackName, ...subs: string[]): string[] {
  const dir = path.join(ctx.root, name);
  const all = [path.join(dir, 'tmp'), ...subs.map((s) => path.join(dir, s))];
  for (const d of all) mkdirSync(d, { recursive: true });
  return [dir, ...all];
}

export async function startServeStack(ctx: RunContext, pick: (n: number) => number): Promise<Stack> {
  const [dir, tmp, data] = stackDirs(ctx, 'serve', 'data') as [string, string, string];
  const [webPort, sshPort] = [await freePort(), await freePort()];
  const serve = kilnPart(
    ctx,
    'serve',
    dir,
    ['serve'],
    () =>
      baseEnv(ctx, tmp, {
        KILN_DATA_DIR: data,
        KILN_WEB_PORT: String(webPort),
        KILN_SSH_PORT: String(sshPort),
        KILN_GLUE_SDK_COMMAND: ctx.sdk,
        KILN_GLUE_CONCURRENCY: '2',
      }),
    /Kiln is ready at (\S+)/,
  );
  await serve.start();
  return {
    name: 'serve',
    dir,
    tmp,
    parts: [serve],
    webs: [`http://127.0.0.1:${webPort}`],
    targets: [partTarget(serve, 3), sdkTarget(ctx, () => (serve.child?.pid ? [serve.child.pid] : []), pick)],
    dbCheck: (acked) => sqliteCheck(path.join(data, 'kiln.sqlite'), acked),
    backendBuilds: () => localBuilds(data),
    backendBusy: () => localBusy(data),
    backendLeftovers: () => localLeftovers(data),
    expectedProcess: (p) => p.pid === serve.child?.pid,
    stop: () => serve.stop(),
    cleanup: async () => undefined,
  };
}

export async function startPgStack(ctx: RunContext, pick: (n: number) => number): Promise<Stack> {
  const [dir, tmp, glueData] = stackDirs(ctx, 'pg', 'glue') as [string, string, string];
  const dbName = `kiln_chaos_${randomBytes(5).toString('hex')}`;
  const admin = createDb({ client: 'pg', url: PG_ADMIN_URL, poolMax: 1 });
  await admin.raw(`CREATE DATABASE ${dbName}`);
  const url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${dbName}`);
  // Keys made before anything starts: the web's client key (the glue authorizes it) and the glue's host key (the
  // webs pin it); both survive every restart.
  const webKey = path.join(dir, 'keys', 'web_ed25519');
  await ensureKeyPair(webKey, 'kiln-web');
  const hostKey = path.join(dir, 'keys', 'glue_host_ed25519');
  const host = await ensureKeyPair(hostKey, 'kiln-glue-host');
  const sshPort = await freePort();
  const glue = kilnPart(
    ctx,
    'glue-server',
    dir,
    ['glue-server'],
    () =>
      baseEnv(ctx, tmp, {
        KILN_DATA_DIR: glueData,
        KILN_SSH_PORT: String(sshPort),
        KILN_SSH_HOST_KEY_FILE: hostKey,
        KILN_SSH_CLIENT_KEY_FILE: webKey,
        KILN_GLUE_SDK_COMMAND: ctx.sdk,
        KILN_GLUE_CONCURRENCY: '2',
      }),
    /kiln glue listening on/,
  );
  await glue.start();
  // The first start migrates; the second web then finds the schema in place.
  const webs: Part[] = [];
  for (const n of [1, 2]) {
    const webPort = await freePort();
    const webData = path.join(dir, `web${n}`);
    mkdirSync(webData, { recursive: true });
    const w = kilnPart(
      ctx,
      `web${n}`,
      dir,
      ['web'],
      () =>
        baseEnv(ctx, tmp, {
          KILN_DATA_DIR: webData,
          KILN_WEB_PORT: String(webPort),
          KILN_DB_CLIENT: 'pg',
          KILN_DB_URL: url,
          KILN_SSH_PORT: String(sshPort),
          KILN_SSH_HOST_FINGERPRINT: host.fingerprint,
          KILN_SSH_CLIENT_KEY_FILE: webKey,
        }),
      /Kiln web is ready at (\S+)/,
    );
    await w.start();
    webs.push(w);
  }
  return {
    name: 'pg',
    dir,
    tmp,
    parts: [glue, ...webs],
    webs: webs.map((w) => w.url.replace(/\/$/, '')),
    targets: [
      partTarget(webs[0]!, 2),
      partTarget(webs[1]!, 2),
      partTarget(glue, 2),
      sdkTarget(ctx, () => (glue.child?.pid ? [glue.child.pid] : []), pick),
    ],
    dbCheck: async (acked) => {
      const db = createDb({ client: 'pg', url, poolMax: 1 });
      try {
        return await checkRows(db, acked);
      } finally {
        await db.destroy();
      }
    },
    backendBuilds: () => localBuilds(glueData),
    backendBusy: () => localBusy(glueData),
    backendLeftovers: () => localLeftovers(glueData),
    expectedProcess: (p) => [glue, ...webs].some((w) => w.child?.pid === p.pid),
    stop: async () => {
      for (const w of webs) await w.stop();
      await glue.stop();
    },
    cleanup: async () => {
      await admin.raw(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
      await admin.destroy();
    },
  };
}

const JENKINS_USER = { name: 'kiln-glue', token: `11aa${randomBytes(12).toString('hex')}` };

export async function startJenkinsStack(ctx: RunContext, pick: (n: number) => number): Promise<Stack> {
  const [dir, tmp, jenkinsData, glueData, webData] = stackDirs(ctx, 'jenkins', 'jenkins-home', 'glue', 'web') as [
    string,
    string,
    string,
    string,
    string,
  ];
  const jenkinsPort = await freePort();
  const jenkinsUrl = `http://127.0.0.1:${jenkinsPort}/`;
  const double = new Part(
    'jenkins',
    (): PartCommand => ({
      file: process.execPath,
      args: [
        '--import',
        'tsx',
        path.join(ctx.repo, 'test/jenkins-double/main.ts'),
        '--port',
        String(jenkinsPort),
        '--data',
        jenkinsData,
        '--user',
        `${JENKINS_USER.name}:${JENKINS_USER.token}`,
        '--quiet',
        '1',
        '--executors',
        '2',
        '--label',
        'kiln-builder',
        '--node',
        'builder-1',
      ],
      env: baseEnv(ctx, tmp, {}),
      cwd: ctx.repo,
      runtimeHelper: (p: Proc) => p.cmdline.includes('/@esbuild/') && p.cmdline.includes('--service'),
      ready: /Jenkins double listening on (\S+)/,
    }),
    path.join(dir, 'jenkins.log'),
  );
  await double.start();
  const clientKey = await ensureKeyPair(path.join(webData, 'ssh', 'web_ed25519'), 'kiln-web');
  const openssh: OpenSshGlue = await startOpenSshGlue({
    dataDir: glueData,
    clientKey,
    env: {
      KILN_GLUE_BACKEND: 'jenkins',
      KILN_GLUE_JENKINS_URL: jenkinsUrl,
      KILN_GLUE_JENKINS_USER: JENKINS_USER.name,
      KILN_GLUE_JENKINS_TOKEN: JENKINS_USER.token,
      KILN_GLUE_JENKINS_SDK_COMMAND: ctx.sdk,
      // Every build stays listed: the harness counts Jenkins builds per request key at the end.
      KILN_GLUE_JENKINS_KEEP_BUILDS: '100000',
      KILN_GLUE_JENKINS_KEEP_ARTIFACTS: '100000',
      TMPDIR: tmp,
      KILN_CHAOS_RUN: ctx.runId,
      KILN_SDK_FORMATS: 'raw',
    },
  });
  const webPort = await freePort();
  const web = kilnPart(
    ctx,
    'web',
    dir,
    ['web'],
    () =>
      baseEnv(ctx, tmp, {
        KILN_DATA_DIR: webData,
        KILN_WEB_PORT: String(webPort),
        KILN_SSH_PORT: String(openssh.port),
        KILN_SSH_USER: openssh.username,
        KILN_SSH_HOST_FINGERPRINT: openssh.hostFingerprint,
      }),
    /Kiln web is ready at (\S+)/,
  );
  await web.start();
  const auth = `Basic ${Buffer.from(`${JENKINS_USER.name}:${JENKINS_USER.token}`).toString('base64')}`;
  const api = async <T>(p: string): Promise<T> => {
    const r = await fetch(new URL(p, jenkinsUrl), {
      headers: { authorization: auth },
      signal: AbortSignal.timeout(30_000),
    });
    if (!r.ok) throw new Error(`Jenkins double ${p}: ${r.status}`);
    return (await r.json()) as T;
  };
  type JBuild = {
    number: number;
    result: string | null;
    building: boolean;
    actions?: Array<{ parameters?: Array<{ name: string; value: string }> }>;
  };
  const builds = async (): Promise<BackendBuild[]> => {
    const root = await api<{ jobs: Array<{ name: string }> }>('api/json');
    const out: BackendBuild[] = [];
    for (const j of root.jobs) {
      const m = /^kiln-job-(\d+)$/.exec(j.name);
      if (!m) continue;
      const job = await api<{ builds: JBuild[] }>(
        `job/${j.name}/api/json?tree=builds[number,result,building,actions[parameters[name,value]]]`,
      );
      for (const b of job.builds) {
        const key = b.actions?.flatMap((a) => a.parameters ?? []).find((p) => p.name === 'KILN_BUILD_KEY')?.value;
        out.push({ job: Number(m[1]), build: b.number, key, state: b.building ? 'running' : String(b.result) });
      }
    }
    return out;
  };
  onHarnessExit(() => {
    for (const pid of sshdPid()) process.kill(pid, 'SIGKILL');
  });
  const sshdPid = (): number[] => {
    try {
      return [Number(readFileSync(path.join(openssh.dir, 'sshd.pid'), 'utf8').trim())];
    } catch {
      return [];
    }
  };
  const doublePid = () => (double.child?.pid ? [double.child.pid] : []);

  const glueTarget: KillTarget = {
    name: 'glue',
    weight: 2,
    // A `kiln glue` process under sshd, caught in flight; half the time one that creates (job.put / job.build).
    async kill() {
      const wantCreate = pick(2) === 0;
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const glues = descendants(sshdPid()[0] ?? -1).filter((p) => p.cmdline.includes('dist/cmd/kiln.js glue'));
        const creating = glues.filter((p) => /^job\.(put|build) /.test(envOf(p.pid, 'SSH_ORIGINAL_COMMAND') ?? ''));
        const pool = wantCreate ? creating : glues;
        if (pool.length) {
          const p = pool[pick(pool.length)]!;
          const cmd = envOf(p.pid, 'SSH_ORIGINAL_COMMAND') ?? '?';
          if (signalIfSame(p, 'SIGKILL')) return { what: `kiln glue pid ${p.pid} (${cmd})` };
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return undefined;
    },
  };
  const runnerTarget: KillTarget = {
    name: 'runner',
    weight: 1,
    // The executor's build step (the shell step, by then `timeout ... sdk`): a child of the double working in a
    // job's workspace (its other children, such as tsx's esbuild service, are not builds).
    async kill() {
      const steps = descendants(doublePid()[0] ?? -1).filter(
        (p) => p.ppid === doublePid()[0] && cwdOf(p.pid).startsWith(path.join(jenkinsData, 'workspace')),
      );
      if (!steps.length) return undefined;
      const p = steps[pick(steps.length)]!;
      const hit = hitOf(p);
      return signalIfSame(p, 'SIGKILL')
        ? { what: `build step pid ${p.pid} (${p.cmdline.slice(0, 120)})`, hit }
        : undefined;
    },
  };
  const doubleTarget: KillTarget = {
    name: 'jenkins',
    weight: 2,
    part: double,
    // A hard restart of the controller: its build processes die with it (as the double's own crash() does).
    async kill() {
      const below = descendants(doublePid()[0] ?? -1);
      if (!(await double.kill())) return undefined;
      for (const p of below) {
        if (p.pgid === p.pid) signalGroupIfSame(p, 'SIGKILL');
        else signalIfSame(p, 'SIGKILL');
      }
      return { what: `jenkins double pid ${double.proc?.pid} and ${below.length} processes below it` };
    },
  };
  return {
    name: 'jenkins',
    dir,
    tmp,
    parts: [double, web],
    webs: [`http://127.0.0.1:${webPort}`],
    targets: [partTarget(web, 2), glueTarget, runnerTarget, sdkTarget(ctx, doublePid, pick), doubleTarget],
    dbCheck: (acked) => sqliteCheck(path.join(webData, 'kiln.sqlite'), acked),
    backendBuilds: builds,
    backendBusy: async () => {
      const q = await api<{ items: Array<{ id: number; task?: { name: string } }> }>('queue/api/json');
      const running = (await builds()).filter((b) => b.state === 'running');
      return [
        ...q.items.map((i) => `queue item ${i.id} (${i.task?.name})`),
        ...running.map((b) => `jenkins build ${b.job}#${b.build} running`),
      ];
    },
    // What a hard-killed Jenkins leaves in its own home (step scripts) is Jenkins' business, not Kiln's.
    backendLeftovers: async () => [],
    scratchJobs: () => {
      const ws = path.join(jenkinsData, 'workspace');
      let jobs: string[];
      try {
        jobs = readdirSync(ws);
      } catch {
        return [];
      }
      return jobs.flatMap((j) => {
        const m = /^kiln-job-(\d+)$/.exec(j);
        return m && sdkDirsBelow(path.join(ws, j), 2).length ? [Number(m[1])] : [];
      });
    },
    expectedProcess: (p) =>
      p.pid === web.child?.pid ||
      p.pid === double.child?.pid ||
      sshdPid().includes(p.pid) ||
      descendants(sshdPid()[0] ?? -1).some((d) => d.pid === p.pid),
    stop: async () => {
      await web.stop();
      await openssh.cleanup();
      await double.stop();
    },
    cleanup: async () => undefined,
  };
}

/** kiln-sdk-* directories below `dir` (how the SDK names its work directory), as paths. */
export function sdkDirsBelow(dir: string, depth = 8): string[] {
  const out: string[] = [];
  const walk = (d: string, n: number) => {
    let ents: string[];
    try {
      ents = readdirSync(d);
    } catch {
      return;
    }
    for (const e of ents) {
      const p = path.join(d, e);
      let st;
      try {
        st = statSync(p, { throwIfNoEntry: false });
      } catch {
        continue;
      }
      if (!st?.isDirectory()) continue;
      if (e.startsWith('kiln-sdk-')) out.push(p);
      else if (n < depth) walk(p, n + 1);
    }
  };
  walk(dir, 0);
  return out;
}

export const systemTmp = (): string[] => [...new Set([os.tmpdir(), '/tmp', '/var/tmp', '/dev/shm'])];

/**
 * What a real SDK makes outside any directory of ours: its pids cgroup (one per build, in every hierarchy the engine
 * uses) and the staging tree on the tmpfs. Names are random, so these are attributed by time (see harness.ts).
 */
export function systemEntries(): string[] {
  const out: string[] = [];
  const list = (d: string, re: RegExp) => {
    try {
      for (const e of readdirSync(d)) if (re.test(e)) out.push(path.join(d, e));
    } catch {
      /* absent */
    }
  };
  list('/sys/fs/cgroup/kiln', /^build-/);
  try {
    for (const h of readdirSync('/sys/fs/cgroup')) list(path.join('/sys/fs/cgroup', h, 'kiln'), /^build-/);
  } catch {
    /* no cgroup fs */
  }
  list('/dev/shm', /^kiln-sdk-/);
  return out;
}
