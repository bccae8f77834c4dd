/**
 * The REST API and `kiln client`, measured against the real `kiln serve` (web, worker, built-in SSH glue and local
 * backend in one process) with a scripted SDK that stamps its own start and end:
 *  (1) the API's overhead on a build: from the start of `bin/kiln client build` to the SDK's start (the glue's
 *      `job.build` starts it at once: one build at a time, none waiting), and from the SDK's end to the client's
 *      exit, with the client following the log (SSE) and with `--no-log` (long poll); once with the defaults (the
 *      worker holds a `build.wait` on the running build and the glue answers it at the end) and once with
 *      `worker.buildWaits` 0 (the end noticed by the worker's next refresh, every `worker.refreshMs`); of the part
 *      after the SDK, the verification (hashing, signing, the commit) from the server's log;
 *  (2) poll load: 100 clients (10 users, 10 builds each, held at a gate) waiting on their builds, first with the
 *      long poll, then following the log, for a fixed time each: the server process's CPU (utime + stime from
 *      /proc, the counterpart of process.cpuUsage for another process), per client per minute, against the same
 *      time with nobody waiting. The clients are the client's own code (src/cmd/client), in this process.
 * Run: `make bench-api` (or `npx tsc -p tsconfig.build.json && npx tsx bench/api.ts [builds] [seconds]`).
 * Writes bench/RESULTS-api.md.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnApi, clientEnv } from '../src/cmd/client/api.js';
import { followLog, waitQuietly } from '../src/cmd/client/follow.js';
import { createDb } from '../src/db/index.js';
import { ciEnv } from '../test/helpers/client.js';
import { writeFakeSdk } from '../test/helpers/glue.js';
import { kiln, kilnRun } from '../test/helpers/kiln.js';
import { startKilnServe, type KilnServe } from '../test/helpers/serve.js';
import { tempDir } from '../test/helpers/tmp.js';
import { until } from '../test/helpers/wait.js';

const BUILDS = Number(process.argv[2] ?? 10);
const SECONDS = Number(process.argv[3] ?? 60);
const USERS = 10;
/** The image of the run that shows what a real image adds to the verification (streamed and hashed once). */
const BIG_MIB = 256;
const PER_USER = 10;

const tmp = tempDir('kiln-bench-api-');
const stamps = path.join(tmp.dir, 'stamps');
const fake = writeFakeSdk(tmp.dir)[0]!;
const gates = path.join(tmp.dir, 'gates');

/** The fake SDK, with `start <ms> <bench-id>` and `end <ms> <bench-id>` lines around it. */
function stampingSdk(): string {
  const file = path.join(tmp.dir, 'stamping-sdk.sh');
  writeFileSync(
    file,
    `#!/bin/sh
prev=; for a in "$@"; do [ "$prev" = --dockerfile ] && df=$a; prev=$a; done
id=$(sed -n 's/^# bench-id: //p' "$df" | head -n 1)
echo "start $(date +%s%3N) $id" >> '${stamps}'
'${fake}' "$@"; rc=$?
echo "end $(date +%s%3N) $id" >> '${stamps}'
exit $rc
`,
  );
  chmodSync(file, 0o755);
  return file;
}

const q = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
const ms = (x: number) => `${Math.round(x)}`;
const row = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;

/** CPU seconds (user + system) the process has used, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const tick = 100; // getconf CLK_TCK on Linux
  return (Number(fields[11]) + Number(fields[12])) / tick;
}

async function startServe(name: string, env: Record<string, string>): Promise<{ serve: KilnServe; data: string }> {
  const data = path.join(tmp.dir, name);
  const serve = await startKilnServe(tmp.dir, {
    KILN_DATA_DIR: data,
    KILN_GLUE_SDK_COMMAND: stampingSdk(),
    KILN_SDK_FORMATS: 'raw',
    KILN_LOG_LEVEL: 'warn',
    KILN_WEB_QUOTA_QUEUED_BUILDS: String(PER_USER),
    ...env,
  });
  return { serve, data };
}

async function tokenFor(data: string, user: string): Promise<string> {
  const server = { KILN_DATA_DIR: data, KILN_LOG_LEVEL: 'silent' };
  if ((await kilnRun(['user', 'add', user], server)).code !== 0) throw new Error(`user add ${user}`);
  const t = await kilnRun(['user', 'token', user, '--scope', 'build'], server);
  if (t.code !== 0) throw new Error(t.stderr);
  return t.stdout.trim();
}

// --------------------------------------------------------------------------------------------- (1) the overhead

interface Sample {
  toSdk: number;
  toRequested: number;
  fromSdk: number;
  toFinal: number;
  /** The verification's parts (build.attest), from its log line: streaming and hashing, signing, the commit. */
  verify: { hashMs: number; signMs: number; commitMs: number };
}

/** The verification's log line of each build (`artifacts verified and signed`), by build id. */
function verifications(output: string): Map<number, Sample['verify']> {
  const out = new Map<number, Sample['verify']>();
  for (const line of output.split('\n')) {
    if (!line.includes('artifacts verified and signed')) continue;
    const j = JSON.parse(line) as { build: number } & Sample['verify'];
    out.set(j.build, { hashMs: j.hashMs, signMs: j.signMs, commitMs: j.commitMs });
  }
  return out;
}

/** BUILDS builds one after the other with the real client; the times around the SDK's run. */
async function overhead(label: string, env: Record<string, string>, noLog: boolean, fake = ''): Promise<Sample[]> {
  // At info, the server logs each verification's parts (and each glue request: a few lines per build).
  const { serve, data } = await startServe(label, { KILN_LOG_LEVEL: 'info', ...env });
  const db = createDb({ client: 'sqlite', filename: path.join(data, 'kiln.sqlite') });
  try {
    const clientEnvVars = ciEnv({ KILN_URL: serve.url, KILN_TOKEN: await tokenFor(data, 'bench') });
    const out: Sample[] = [];
    for (let i = 0; i < BUILDS + 1; i++) {
      const id = `${label}-${i}`;
      const df = path.join(tmp.dir, `${id}.Dockerfile`);
      writeFileSync(df, `FROM debian:bookworm\n# bench-id: ${id}\n${fake}# fake-packages: a=1\nRUN true\n`);
      const args = ['client', 'build', '--name', `b${i}`, '--dockerfile', df, '--wait', '--json'];
      const t0 = Date.now();
      const r = await new Promise<{ code: number | null; stdout: string; end: number }>((resolve, reject) => {
        const p = spawn(kiln, noLog ? [...args, '--no-log'] : args, {
          env: clientEnvVars,
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        let stdout = '';
        p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        p.on('error', reject);
        p.on('close', (code) => resolve({ code, stdout, end: Date.now() }));
      });
      if (r.code !== 0) throw new Error(`${id}: exit ${r.code}`);
      const build = JSON.parse(r.stdout) as { id: number };
      const lines = readFileSync(stamps, 'utf8').split('\n');
      const at = (what: string) => Number(lines.find((l) => l.endsWith(` ${id}`) && l.startsWith(what))!.split(' ')[1]);
      const dbRow = (await db('builds').where({ id: build.id }).first()) as {
        requested_at: string;
        updated_at: string;
      };
      // The first build warms the process (the first SSH connection, the first ssh-keygen): not counted.
      if (i === 0) continue;
      const verify = await until(() => verifications(serve.output()).get(build.id), 10_000, 50);
      out.push({
        toSdk: at('start') - t0,
        toRequested: Date.parse(dbRow.requested_at) - t0,
        fromSdk: r.end - at('end'),
        toFinal: Date.parse(dbRow.updated_at) - at('end'),
        verify,
      });
    }
    return out;
  } finally {
    await db.destroy();
    await serve.stop();
  }
}

function overheadRow(label: string, s: Sample[]): string {
  const col = (f: (x: Sample) => number) => s.map(f).sort((a, b) => a - b);
  const p = (f: (x: Sample) => number) => `${ms(q(col(f), 0.5))} / ${ms(col(f).at(-1)!)}`;
  return row([
    label,
    s.length,
    p((x) => x.toSdk),
    p((x) => x.toRequested),
    p((x) => x.fromSdk),
    p((x) => x.toFinal),
    p((x) => x.fromSdk - x.toFinal),
    p((x) => x.verify.hashMs + x.verify.signMs + x.verify.commitMs),
  ]);
}

/** Median of each part of the verification over every run. */
function verifyParts(runs: Array<[string, Sample[]]>): string {
  const all = runs.flatMap(([, s]) => s);
  const med = (f: (v: Sample['verify']) => number) =>
    ms(
      q(
        all.map((x) => f(x.verify)).sort((a, b) => a - b),
        0.5,
      ),
    );
  return `streaming and hashing ${med((v) => v.hashMs)}, signing ${med((v) => v.signMs)}, the commit ${med((v) => v.commitMs)}`;
}

// --------------------------------------------------------------------------------------------- (2) the poll load

interface LoadRow {
  mode: string;
  clients: number;
  /** Server CPU seconds in the window with nobody waiting, then with the clients waiting. */
  idleCpu: number;
  cpu: number;
  requests: number;
  lines: number;
}

const sleep = (s: number) => new Promise((r) => setTimeout(r, s * 1000));

/** A fresh `kiln serve` with USERS x PER_USER builds held at a gate; a window without clients, then one with. */
async function pollLoad(mode: 'long poll' | 'log follow'): Promise<LoadRow> {
  const { serve, data } = await startServe(mode === 'long poll' ? 'poll' : 'follow', {});
  let requests = 0;
  const realFetch = globalThis.fetch;
  globalThis.fetch = (...a: Parameters<typeof fetch>) => {
    if (String(a[0]).startsWith(serve.url)) requests++;
    return realFetch(...a);
  };
  // Each run its own gate: the last run's opened gate stays open.
  const gate = `hold-${mode.replace(' ', '-')}`;
  try {
    const builds: Array<{ api: KilnApi; id: number }> = [];
    for (let u = 0; u < USERS; u++) {
      const env = { KILN_URL: serve.url, KILN_TOKEN: await tokenFor(data, `user-${u}`) };
      // Retried for 30 s: once the server is gone, these clients give up before the next run is measured.
      const api = new KilnApi(clientEnv(env, 30_000));
      for (let i = 0; i < PER_USER; i++) {
        const form = new FormData();
        const text = `FROM debian:bookworm\n# fake: gate ${gate}\n# fake-lines: 20\nRUN true ${i}\n`;
        form.set('dockerfile', new Blob([text]), 'Dockerfile');
        await api.json(`/dockerfiles/w${i}`, { method: 'PUT', body: form });
        const b = await api.json<{ build: { id: number } }>('/builds', {
          method: 'POST',
          body: JSON.stringify({ dockerfile: `w${i}` }),
          headers: { 'content-type': 'application/json', 'idempotency-key': `load-${u}-${i}` },
        });
        builds.push({ api, id: b.build.id });
      }
    }
    // Wait until every build is at the backend (one running at the gate, the others in its queue).
    const db = createDb({ client: 'sqlite', filename: path.join(data, 'kiln.sqlite') });
    await until(
      async () => Number((await db('builds').whereNull('backend_build').count({ n: '*' }).first())?.n) === 0,
      600_000,
      500,
    );
    await sleep(5);

    const c0 = cpuSeconds(serve.pid);
    await sleep(SECONDS);
    const idleCpu = cpuSeconds(serve.pid) - c0;

    let lines = 0;
    const out = { log: (t: string) => void (lines += t.split('\n').length - 1), note: () => undefined };
    for (const { api, id } of builds)
      void (mode === 'long poll' ? waitQuietly(api, id, out) : followLog(api, id, out)).catch((e: unknown) =>
        console.error(`client of build ${id}: ${(e as Error).message}`),
      );
    await sleep(3);
    const r0 = requests;
    const c1 = cpuSeconds(serve.pid);
    await sleep(SECONDS);
    const cpu = cpuSeconds(serve.pid) - c1;
    const ended = Number(
      (await db('builds').whereIn('state', ['succeeded', 'failed', 'cancelled']).count({ n: '*' }).first())?.n,
    );
    await db.destroy();
    // What is measured is waiting: a build that ended meanwhile would make it something else.
    if (ended) throw new Error(`${ended} builds ended during the ${mode} run`);
    return { mode, clients: builds.length, idleCpu, cpu, requests: requests - r0, lines };
  } finally {
    globalThis.fetch = realFetch;
    mkdirSync(gates, { recursive: true });
    writeFileSync(path.join(gates, gate), '');
    // The clients in this process keep waiting on it: the process ends when the bench is done.
    await serve.kill();
  }
}

// ------------------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const load0 = os.loadavg();
  console.log(`api bench: ${BUILDS} builds per overhead run, ${SECONDS} s per load window`);
  const runs: Array<[string, Sample[]]> = [];
  for (const [label, env, noLog, fake] of [
    ['log followed (SSE), defaults', {}, false],
    ['long poll (`--no-log`), defaults', {}, true],
    ['log followed (SSE), `KILN_WORKER_BUILD_WAITS=0`', { KILN_WORKER_BUILD_WAITS: '0' }, false],
    ['long poll (`--no-log`), `KILN_WORKER_BUILD_WAITS=0`', { KILN_WORKER_BUILD_WAITS: '0' }, true],
    [`long poll (\`--no-log\`), defaults, a ${BIG_MIB} MiB image`, {}, true, `# fake: big ${BIG_MIB}\n`],
  ] as const) {
    const s = await overhead(`o${runs.length}`, env, noLog, fake);
    runs.push([label, s]);
    console.log(overheadRow(label, s));
  }
  const load: LoadRow[] = [];
  for (const mode of ['long poll', 'log follow'] as const) {
    load.push(await pollLoad(mode));
    console.log(JSON.stringify(load.at(-1)));
  }
  const load1 = os.loadavg();
  const perClientMinuteMs = (r: LoadRow) => (((r.cpu - r.idleCpu) / r.clients) * 60 * 1000) / SECONDS;

  const text = `# REST API and \`kiln client\` benchmarks

Measured by \`bench/api.ts\` (\`make bench-api\`) on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores
(${os.cpus()[0]?.model.trim()}), Node ${process.version}, loopback; the real \`kiln serve\` (web, worker, built-in
SSH glue, local backend; SQLite; default settings unless a row says otherwise) with a scripted SDK (the tests' fake
SDK, wrapped to stamp its start and end). Load average (1, 5, 15 min) at the start
${load0.map((x) => x.toFixed(1)).join(' ')}, at the end ${load1.map((x) => x.toFixed(1)).join(' ')}: the machine is
shared with other helpers' builds and test runs, and the times carry their noise.

## The API's overhead on a build

${BUILDS} builds one after another (after one warm-up build), each by a new \`bin/kiln client build --name N
--dockerfile F --wait --json\` process. Times in ms, median / max:
- **start -> SDK**: from the client's spawn to the SDK's start (node's start, PUT, POST, the worker's dispatch:
  \`job.put\` and \`job.build\` over SSH, the local backend starting the SDK at once); of it, **start ->
  requested** ends when the build row was written (the client's own start, the PUT and the POST).
- **SDK end -> client exit**: from the SDK's last line to the client's exit with the final build; of it, **SDK end
  -> final** ends when the row became final: the glue's answer to the \`build.wait\` the worker holds on the running
  build (the local backend hears build.json change), the \`build.refresh\` that answer runs at once, then
  \`build.attest\` (**verification**: streaming each artifact through the glue into sha256, signing SHA256SUMS with
  \`ssh-keygen\`, the commit); with \`KILN_WORKER_BUILD_WAITS=0\` there is no held wait, and the end waits for the
  worker's next refresh (every \`worker.refreshMs\`, 2 s), as before the waits. **final -> exit** is the API's part
  (the stream's or the long poll's next look, every \`web.livePollMs\` = 250 ms, the last GET, the process's exit).

Target: under 1 s each.

| client | builds | start -> SDK | start -> requested | SDK end -> client exit | SDK end -> final | final -> exit | verification |
|---|---:|---:|---:|---:|---:|---:|---:|
${runs.map(([l, s]) => overheadRow(l, s)).join('\n')}

Medians of the verification's parts, with the scripted SDK's artifacts of a few hundred bytes (the fixed cost):
${verifyParts(runs.slice(0, -1))} ms; with a ${BIG_MIB} MiB image.raw: ${verifyParts(runs.slice(-1))} ms (the image
streamed through the glue's SSH channel and hashed once, by the web).

## Poll load: ${USERS * PER_USER} clients waiting on builds

A fresh \`kiln serve\` per mode; ${USERS} users with a build token each, ${PER_USER} builds each, all held at one gate
by the scripted SDK (one running, the others in the local backend's queue, each with a backend number and a log).
Then ${SECONDS} s with nobody waiting, then ${SECONDS} s with every build waited on by one client (the client's own
code, \`waitQuietly\` or \`followLog\` from src/cmd/client/follow.ts, in the bench's process). CPU is the
\`kiln serve\` process's (utime + stime from /proc/PID/stat: web, worker and glue are that one process). In both
windows the worker refreshes every build every \`worker.refreshMs\` (what "nobody waiting" costs) and holds
\`build.wait\`s on 8 of them (\`worker.buildWaits\`), the running one first.

| clients | server CPU s, nobody waiting | server CPU s, clients waiting | requests | log lines delivered | CPU per client per minute |
|---|---:|---:|---:|---:|---:|
${load.map((r) => row([`${r.clients} x ${r.mode}`, r.idleCpu.toFixed(2), r.cpu.toFixed(2), r.requests, r.lines, `${perClientMinuteMs(r).toFixed(1)} ms`])).join('\n')}

A window's CPU varies by a few seconds from run to run on this shared machine: per-client figures below ~20 ms are
noise. Held waits, A/B on 2026-11-26 (60 s windows, load 1-3.5): six windows with nobody waiting of main before them
took 8.6-10.7 s (median 10.1), six with them 10.4-11.3 s (median 10.8); following the log, 302 and 305 ms per client
per minute before, 297 and 306 with them. What they add: 8 \`build.wait\` requests per 30 s beside ~40
\`build.status\` a second (the glue's audit log, one 30 s window: 1,189 and 8), and a local backend holding 8 waits
for 30 s used 102 ms of CPU, holding none 157 ms (its runner's own poll is most of both).
`;
  writeFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS-api.md'), text);
  console.log(text);
}

main()
  .then(() => {
    tmp.cleanup();
    process.exit(0);
  })
  .catch((e: unknown) => {
    console.error(e);
    tmp.cleanup();
    process.exit(1);
  });
