import { constants as fsc, promises as fsp, openSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { sdkEnvironment } from '../../../config/index.js';
import {
  ARTIFACT_NAMES, MAX_LOG_CHUNK, SDK_INTERNAL_ERROR_FILE, backendJobName, jobIdFromBackendName, lastProgress, specSha256, utf8Boundary,
  type ArtifactInfo, type ArtifactName, type BuildState, type BuildStatus, type JobInfo, type JobSpec, type LogChunk,
  type QueueItem, type Schedule,
} from '../../../protocol/index.js';
import { KilnError } from '../../../shared/errors.js';
import { silentLogger, type Logger } from '../../../shared/logger.js';
import { run } from '../../../shared/subprocess.js';
import type { Backend } from '../types.js';
import { asIdentity, identify, signalGroupIfSame, type ProcessIdentity } from './process.js';
import { DirLock, exists, readJson, removeStaleTemps, writeAtomic, writeJson } from './store.js';

export interface LocalBackendOptions {
  dataDir: string;
  /** argv prefix of the SDK's build command; the backend appends --dockerfile, --out, --format, ... */
  sdkCommand?: readonly string[];
  /** Builds run at once. */
  concurrency?: number;
  /** Wall-clock limit of one build, SDK included. */
  buildTimeoutMs?: number;
  /** Log bytes kept per build; output beyond is dropped with a note. */
  logCapBytes?: number;
  /**
   * Whether this process runs builds (the long-lived glue server) or only records requests (a `kiln glue` forced
   * command, which exits after one request and leaves queued builds to the runner sharing the data directory).
   */
  runner?: boolean;
  /** How often the runner looks for builds queued by other processes, ms. */
  pollMs?: number;
  /** How often the runner checks daily/weekly schedules, ms. */
  scheduleCheckMs?: number;
  /**
   * The SDK's environment, before KILN_JOB, KILN_BUILD and the per-build TMPDIR are added. Default: the
   * allow-listed part of this process's (config.sdkEnvironment), never all of it: under `kiln serve` the web's
   * secrets live in the same process.
   */
  env?: Readonly<Record<string, string>>;
  logger?: Logger;
  now?: () => Date;
}

interface BuildRecord {
  job: number;
  build: number;
  state: BuildState;
  queueId: number;
  idempotencyKey: string;
  queuedAt: string;
  startedAt?: string;
  finishedAt?: string;
  reason?: string;
  /** The running SDK, leader of its process group: signalled only while it is still this very process. */
  process?: ProcessIdentity;
  exitCode?: number | null;
  formats: string[];
  buildArgs: Record<string, string>;
  /** The site's names for bases (`--base-name`); absent in records written before they existed. */
  baseNames?: { name: string; base: string }[];
  hasContext: boolean;
}

interface JobMeta {
  createdAt: string;
  /** When the current schedule was set: a period that began earlier is not fired retroactively. */
  scheduleSince: string;
  /** idempotency key -> build number. Null prototype: a key such as `constructor` is a key like any other. */
  keys: Record<string, number>;
}

/** Stored job config: the JobSpec without its (large) context, which lives in context.tar. */
type StoredSpec = Omit<JobSpec, 'contextTarBase64'>;

const FINAL: ReadonlySet<BuildState> = new Set(['succeeded', 'failed', 'cancelled', 'lost']);
/** Why a build ended `lost`, in words a user can read on the build page. */
const LOST = {
  restart: 'interrupted: the build service restarted while the build ran',
  stop: 'interrupted: the build service stopped while the build ran',
} as const;
const ARTIFACTS: ReadonlySet<string> = new Set(ARTIFACT_NAMES);

/** bin/kiln of this checkout (dist/glue/backends/local or src/glue/backends/local -> repo root). */
export const defaultSdkCommand = (): string[] => [
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../bin/kiln'), 'sdk', 'build',
];

/**
 * The embedded build engine. Keeps a data directory shaped like Jenkins' own:
 *
 *   <dataDir>/glue/jobs/kiln-job-<id>/{config.json, Dockerfile, context.tar?, meta.json, nextBuildNumber,
 *                                     builds/<n>/{build.json, log, cancel?, ws/, archive/}}
 *   <dataDir>/glue/queue/<queueId>-<job>-<build>      one empty file per queued build, ordered by queue id
 *
 * Every state file is replaced atomically under one data-directory lock; the build log is append-only. A build's
 * state moves queued -> running -> succeeded|failed|cancelled (or queued -> cancelled) and never back.
 */
export class LocalBackend implements Backend {
  readonly kind = 'local' as const;
  private readonly root: string;
  private readonly jobsDir: string;
  private readonly queueDir: string;
  private readonly lock: DirLock;
  private readonly log_: Logger;
  private readonly now: () => Date;
  private readonly sdk: readonly string[];
  private readonly concurrency: number;
  private readonly env: Readonly<Record<string, string>>;
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private timers: NodeJS.Timeout[] = [];
  private started = false;
  private closing = false;
  private pumping = false;
  private pumpAgain = false;
  /** The pump's current pass; close() waits for it, since a build it is claiming is not in `running` yet. */
  private pumpDone: Promise<void> = Promise.resolve();

  constructor(private readonly opts: LocalBackendOptions) {
    this.root = path.join(path.resolve(opts.dataDir), 'glue');
    this.jobsDir = path.join(this.root, 'jobs');
    this.queueDir = path.join(this.root, 'queue');
    this.lock = new DirLock(this.root);
    this.log_ = opts.logger ?? silentLogger;
    this.now = opts.now ?? (() => new Date());
    this.sdk = opts.sdkCommand && opts.sdkCommand.length > 0 ? opts.sdkCommand : defaultSdkCommand();
    this.concurrency = Math.max(1, opts.concurrency ?? 1);
    this.env = opts.env ?? sdkEnvironment(process.env);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Lifecycle

  async start(): Promise<void> {
    await fsp.mkdir(this.jobsDir, { recursive: true });
    await fsp.mkdir(this.queueDir, { recursive: true });
    this.started = true;
    if (this.opts.runner === false) return;
    await this.recover();
    const poll = setInterval(() => this.pump(), this.opts.pollMs ?? 1000);
    const sched = setInterval(() => { this.fireSchedules().catch((e) => this.log_.error({ err: e }, 'schedule check failed')); }, this.opts.scheduleCheckMs ?? 60_000);
    poll.unref();
    sched.unref();
    this.timers.push(poll, sched);
    this.pump();
  }

  /** Stops the timers; builds still running are stopped and end as failed ('interrupted'). */
  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.pumpDone;
    const inflight = [...this.running.values()];
    for (const r of inflight) r.abort.abort();
    await Promise.allSettled(inflight.map((r) => r.done));
  }

  /**
   * A previous process's builds: queued ones go back in the queue; running ones were cut off with it and end
   * `lost` (the web requeues them once), their SDK stopped if it is still the process that was recorded. What a
   * build leaves in its directory (workspace, temp dir) is removed. A queued build whose key never reached
   * meta.json was never acknowledged (the process died while recording it; the caller's retry made another): it
   * must not run as well. Half-written files of a killed writer, and a deleted job's trash a kill left, go too.
   */
  private async recover(): Promise<void> {
    await this.lock.run(async () => {
      await removeStaleTemps(this.root);
      for (const e of await fsp.readdir(this.root)) {
        if (e.startsWith('.deleted-')) await fsp.rm(path.join(this.root, e), { recursive: true, force: true });
      }
      for (const name of await this.jobNames()) {
        const job = jobIdFromBackendName(name);
        if (job === undefined) continue;
        await removeStaleTemps(this.jobDir(job));
        const keys = (await this.readMeta(job))?.keys ?? (Object.create(null) as Record<string, number>);
        for (const n of await this.buildNumbers(job)) {
          await removeStaleTemps(this.buildDir(job, n));
          const rec = await this.readBuild(job, n);
          if (!rec) continue;
          if (rec.state === 'queued' && keys[rec.idempotencyKey] !== n) {
            await fsp.rm(this.queueEntry(rec), { force: true });
            await this.finish(rec, 'cancelled', 'never started: the build service stopped while recording it');
          } else if (rec.state === 'running') {
            const sdk = asIdentity(rec.process);
            const killed = sdk ? await signalGroupIfSame(sdk, 'SIGKILL') : false;
            // An SDK that finished on its own after the runner died (it runs in a process group of its own) said
            // how it ended in result.json: that is the build's end. Running it again would build it twice.
            const done = killed ? undefined : await this.sdkResult(path.join(this.buildDir(job, n), 'archive'));
            if (done) {
              const state = done.ok ? 'succeeded' : 'failed';
              const reason = done.ok ? undefined : done.error ?? 'the SDK failed';
              await this.finish(rec, state, reason, { appendLog: `[kiln] build ${state}${reason ? `: ${reason}` : ''} (the SDK ended while the build service was down)\n` });
              this.log_.warn({ job, build: n, state }, 'build ended while the build service was down');
            } else {
              await this.finish(rec, 'lost', LOST.restart, { appendLog: `[kiln] build ${LOST.restart}\n` });
              this.log_.warn({ job, build: n, sdkKilled: killed }, 'build interrupted by a restart');
            }
          } else if (rec.state === 'queued' && !(await exists(this.queueEntry(rec)))) {
            await fsp.writeFile(this.queueEntry(rec), '');
          }
          if (FINAL.has(rec.state)) await this.removeScratch(job, n);
        }
      }
    });
  }

  /** A build's workspace and temp dir (TMPDIR of its SDK): needed only while it runs. */
  private async removeScratch(job: number, build: number): Promise<void> {
    const dir = this.buildDir(job, build);
    await fsp.rm(path.join(dir, 'ws'), { recursive: true, force: true });
    await fsp.rm(path.join(dir, 'tmp'), { recursive: true, force: true });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Jobs

  async putJob(job: number, spec: JobSpec): Promise<{ created: boolean }> {
    this.assertStarted();
    return this.lock.run(async () => {
      const dir = this.jobDir(job);
      const created = !(await exists(path.join(dir, 'config.json')));
      await fsp.mkdir(path.join(dir, 'builds'), { recursive: true });
      const { contextTarBase64, ...stored } = spec;
      const old = await readJson<StoredSpec>(path.join(dir, 'config.json'));
      const meta = (await this.readMeta(job)) ?? { createdAt: this.iso(), scheduleSince: this.iso(), keys: Object.create(null) as Record<string, number> };
      if (!old || old.schedule !== stored.schedule) meta.scheduleSince = this.iso();
      await writeAtomic(path.join(dir, 'Dockerfile'), spec.dockerfile);
      if (contextTarBase64) await writeAtomic(path.join(dir, 'context.tar'), Buffer.from(contextTarBase64, 'base64'));
      else await fsp.rm(path.join(dir, 'context.tar'), { force: true });
      if (created) await writeAtomic(path.join(dir, 'nextBuildNumber'), '1\n');
      await writeJson(path.join(dir, 'meta.json'), meta);
      // config.json last: its presence is what makes the job exist.
      await writeJson(path.join(dir, 'config.json'), stored);
      return { created };
    });
  }

  async setEnabled(job: number, enabled: boolean): Promise<void> {
    this.assertStarted();
    await this.lock.run(async () => {
      const spec = await this.readSpec(job);
      if (spec.enabled === enabled) return;
      await writeJson(path.join(this.jobDir(job), 'config.json'), { ...spec, enabled });
    });
  }

  async deleteJob(job: number): Promise<{ deleted: boolean }> {
    this.assertStarted();
    const trash = await this.lock.run(async () => {
      const dir = this.jobDir(job);
      if (!(await exists(path.join(dir, 'config.json')))) {
        await fsp.rm(dir, { recursive: true, force: true });
        return undefined;
      }
      for (const n of await this.buildNumbers(job)) {
        const rec = await this.readBuild(job, n);
        if (rec?.state === 'queued') await fsp.rm(this.queueEntry(rec), { force: true });
        if (rec?.state === 'running') {
          await fsp.writeFile(path.join(this.buildDir(job, n), 'cancel'), 'deleted\n');
          await this.stopBuild(rec);
        }
      }
      const t = path.join(this.root, `.deleted-${backendJobName(job)}-${Date.now()}`);
      await fsp.rename(dir, t);
      return t;
    });
    if (!trash) return { deleted: false };
    await fsp.rm(trash, { recursive: true, force: true });
    return { deleted: true };
  }

  async listJobs(): Promise<JobInfo[]> {
    this.assertStarted();
    const out: JobInfo[] = [];
    for (const name of await this.jobNames()) {
      const job = jobIdFromBackendName(name);
      if (job === undefined) {
        out.push({ backendName: name, managed: false, enabled: false });
        continue;
      }
      const spec = await readJson<StoredSpec>(path.join(this.jobDir(job), 'config.json'));
      if (!spec) continue;
      const next = await this.nextBuildNumber(job);
      out.push({ job, backendName: name, managed: true, enabled: spec.enabled, schedule: spec.schedule, ...(next > 1 ? { lastBuild: next - 1 } : {}) });
    }
    return out.sort((a, b) => (a.job ?? 0) - (b.job ?? 0));
  }

  // -------------------------------------------------------------------------------------------------------------
  // Builds

  async build(job: number, idempotencyKey: string, sha256?: string, cause = 'api'): Promise<{ build: number; created: boolean }> {
    this.assertStarted();
    const res = await this.lock.run(async () => {
      const spec = await this.readSpec(job);
      const dir = this.jobDir(job);
      const meta = (await this.readMeta(job))!;
      const seen = meta.keys[idempotencyKey];
      if (seen !== undefined) return { build: seen, created: false };
      if (!spec.enabled) throw new KilnError('conflict', 'The job is disabled; enable it before building');
      // Checked under the lock that also copies the files into the build: what is checked is what is built.
      if (sha256 !== undefined && (await this.specDigest(job)) !== sha256) {
        throw new KilnError('conflict', 'The job holds another version of the Dockerfile than the one asked for (it changed meanwhile); put it again and retry');
      }
      const n = await this.nextBuildNumber(job);
      const queueId = await this.nextQueueId();
      const bdir = this.buildDir(job, n);
      await fsp.mkdir(path.join(bdir, 'ws'), { recursive: true });
      await fsp.mkdir(path.join(bdir, 'archive'), { recursive: true });
      // The build uses the job as it is now, even if job.put changes it while the build waits in the queue.
      await fsp.copyFile(path.join(dir, 'Dockerfile'), path.join(bdir, 'ws', 'Dockerfile'));
      const hasContext = await exists(path.join(dir, 'context.tar'));
      if (hasContext) await fsp.copyFile(path.join(dir, 'context.tar'), path.join(bdir, 'ws', 'context.tar'));
      const rec: BuildRecord = {
        job, build: n, state: 'queued', queueId, idempotencyKey, queuedAt: this.iso(),
        formats: spec.formats, buildArgs: spec.buildArgs, ...(spec.baseNames?.length ? { baseNames: spec.baseNames } : {}), hasContext,
      };
      await writeJson(path.join(bdir, 'build.json'), rec);
      // 'w': a number left by an unacknowledged attempt (the process died before meta.json) starts afresh.
      await fsp.writeFile(path.join(bdir, 'log'), `[kiln] queued (${cause})\n`);
      await writeAtomic(path.join(dir, 'nextBuildNumber'), `${n + 1}\n`);
      meta.keys[idempotencyKey] = n;
      await writeJson(path.join(dir, 'meta.json'), meta);
      await fsp.writeFile(this.queueEntry(rec), '');
      return { build: n, created: true };
    });
    if (res.created) this.pump();
    return res;
  }

  async withdraw(job: number, idempotencyKey: string): Promise<{ withdrawn: boolean; build?: number; state?: BuildState }> {
    this.assertStarted();
    const meta = await this.readMeta(job);
    const build = meta?.keys[idempotencyKey];
    if (build === undefined) return { withdrawn: false };
    const { state } = await this.cancel(job, build);
    return { withdrawn: true, build, state };
  }

  async cancel(job: number, build: number): Promise<{ state: BuildState }> {
    this.assertStarted();
    const rec = await this.lock.run(async () => {
      const r = await this.mustReadBuild(job, build);
      if (r.state === 'queued') {
        await fsp.rm(this.queueEntry(r), { force: true });
        await this.finish(r, 'cancelled', 'cancelled while queued', { appendLog: '[kiln] cancelled while queued\n' });
      } else if (r.state === 'running') {
        await fsp.writeFile(path.join(this.buildDir(job, build), 'cancel'), 'requested\n');
        await this.stopBuild(r);
      }
      return r;
    });
    if (rec.state !== 'running') return { state: rec.state };
    // The runner (this process or another) records the final state once the SDK's process group has exited.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const cur = await this.readBuild(job, build);
      if (!cur || FINAL.has(cur.state)) return { state: cur?.state ?? 'cancelled' };
      await new Promise((r) => setTimeout(r, 100));
    }
    return { state: 'running' };
  }

  async status(job: number, build: number): Promise<BuildStatus> {
    this.assertStarted();
    const rec = await this.mustReadBuild(job, build);
    const st: BuildStatus = { job, build, state: rec.state, queuedAt: rec.queuedAt, artifacts: [] };
    if (rec.reason) st.reason = rec.reason;
    if (rec.startedAt) st.startedAt = rec.startedAt;
    if (rec.finishedAt) st.finishedAt = rec.finishedAt;
    if (rec.state === 'running') {
      const p = lastProgress(await this.logTail(job, build, 64 * 1024));
      if (p) st.progress = p;
    }
    if (FINAL.has(rec.state)) st.artifacts = await this.listArtifacts(job, build);
    return st;
  }

  async log(job: number, build: number, offset: number): Promise<LogChunk> {
    this.assertStarted();
    const rec = await this.mustReadBuild(job, build);
    const more = !FINAL.has(rec.state);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path.join(this.buildDir(job, build), 'log'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch {
      return { text: '', offset, nextOffset: offset, more };
    }
    try {
      const size = (await fh.stat()).size;
      if (offset >= size) return { text: '', offset, nextOffset: offset, more };
      const buf = Buffer.alloc(Math.min(MAX_LOG_CHUNK, size - offset));
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      // Never split a UTF-8 sequence: a chunk starts and ends at character boundaries (an offset inside a
      // character moves to the next one, reported in `offset`); the rest comes with the next call.
      let skip = 0;
      while (skip < 3 && skip < bytesRead && (buf[skip]! & 0xc0) === 0x80) skip++;
      const end = utf8Boundary(buf.subarray(0, bytesRead), offset + bytesRead >= size);
      const start = Math.min(skip, end);
      return { text: buf.subarray(start, end).toString('utf8'), offset: offset + start, nextOffset: offset + end, more: more || offset + end < size };
    } finally {
      await fh.close();
    }
  }

  async artifact(job: number, build: number, name: ArtifactName, offset: number): Promise<Readable> {
    this.assertStarted();
    const rec = await this.mustReadBuild(job, build);
    if (!FINAL.has(rec.state) || !ARTIFACTS.has(name)) throw new KilnError('not_found', 'No such artifact (yet)');
    const archive = path.join(this.buildDir(job, build), 'archive');
    const ast = await fsp.lstat(archive).catch(() => undefined);
    if (!ast?.isDirectory()) throw new KilnError('not_found', 'No such artifact');
    let fh: fsp.FileHandle;
    try {
      // O_NOFOLLOW: a symlink placed by a build (to /etc/shadow, to another job) is refused, not followed.
      fh = await fsp.open(path.join(archive, name), fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch {
      throw new KilnError('not_found', 'No such artifact');
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new KilnError('not_found', 'No such artifact');
    }
    if (offset > st.size) {
      await fh.close();
      throw new KilnError('invalid_input', 'offset is beyond the end of the artifact');
    }
    return fh.createReadStream({ start: offset, autoClose: true });
  }

  async listQueue(): Promise<QueueItem[]> {
    this.assertStarted();
    const items: QueueItem[] = [];
    for (const e of await this.queueEntries()) {
      const rec = await this.readBuild(e.job, e.build);
      if (!rec || rec.state !== 'queued') continue;
      items.push({ id: e.queueId, job: e.job, backendName: backendJobName(e.job), why: 'Waiting for a free executor', since: rec.queuedAt });
    }
    return items;
  }

  // -------------------------------------------------------------------------------------------------------------
  // The runner

  /** Starts queued builds while executors are free. Re-entrant calls fold into one more pass. */
  private pump(): void {
    if (this.opts.runner === false || this.closing || !this.started) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.pumpDone = (async () => {
      do {
        this.pumpAgain = false;
        while (this.running.size < this.concurrency && !this.closing) {
          const rec = await this.claimNext();
          if (!rec) break;
          this.launch(rec);
        }
      } while (this.pumpAgain && !this.closing);
    })()
      .catch((e) => this.log_.error({ err: e }, 'build queue pump failed'))
      .finally(() => { this.pumping = false; });
  }

  private async claimNext(): Promise<BuildRecord | undefined> {
    return this.lock.run(async () => {
      for (const e of await this.queueEntries()) {
        const rec = await this.readBuild(e.job, e.build);
        await fsp.rm(path.join(this.queueDir, e.file), { force: true });
        if (!rec || rec.state !== 'queued') continue;
        rec.state = 'running';
        rec.startedAt = this.iso();
        await this.writeBuild(rec);
        return rec;
      }
      return undefined;
    });
  }

  private launch(rec: BuildRecord): void {
    const abort = new AbortController();
    const key = `${rec.job}/${rec.build}`;
    const done = this.execute(rec, abort.signal)
      .catch((e) => this.log_.error({ err: e, job: rec.job, build: rec.build }, 'build runner failed'))
      .finally(() => {
        this.running.delete(key);
        this.pump();
      });
    this.running.set(key, { abort, done });
  }

  private async execute(rec: BuildRecord, signal: AbortSignal): Promise<void> {
    const bdir = this.buildDir(rec.job, rec.build);
    const ws = path.join(bdir, 'ws');
    const archive = path.join(bdir, 'archive');
    // The SDK's TMPDIR: its staging area lives in the build's own directory, so whatever a killed SDK leaves there
    // goes when the build ends or, after a crash, when the runner recovers (never an orphan in /tmp).
    const tmp = path.join(bdir, 'tmp');
    await fsp.mkdir(tmp, { recursive: true, mode: 0o700 });
    const cap = this.opts.logCapBytes ?? 16 * 1024 * 1024;
    const logFd = openSync(path.join(bdir, 'log'), fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o644);
    let written = 0;
    let truncated = false;
    const append = (chunk: Buffer | string) => {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (truncated) return;
      if (written + b.length > cap) {
        writeSync(logFd, b.subarray(0, Math.max(0, cap - written)));
        writeSync(logFd, `\n[kiln] log truncated at ${cap} bytes\n`);
        truncated = true;
        return;
      }
      writeSync(logFd, b);
      written += b.length;
    };
    const [cmd, ...prefix] = this.sdk as [string, ...string[]];
    const args = [
      ...prefix, '--dockerfile', path.join(ws, 'Dockerfile'), '--out', archive, '--format', rec.formats.join(','),
      ...(rec.hasContext ? ['--context', path.join(ws, 'context.tar')] : []),
      ...Object.entries(rec.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
      ...(rec.baseNames ?? []).flatMap((m) => ['--base-name', `${m.name}=${m.base}`]),
    ];
    const timeoutMs = this.opts.buildTimeoutMs ?? 2 * 3600_000;
    this.log_.info({ job: rec.job, build: rec.build }, 'build started');
    append(`[kiln] build ${rec.build} of job ${rec.job} started\n`);
    let outcome: { state: BuildState; reason?: string; exitCode?: number | null };
    try {
      const r = await run(cmd, args, {
        cwd: ws, timeoutMs, signal, processGroup: true, maxOutputBytes: 64 * 1024,
        env: { ...this.env, TMPDIR: tmp, KILN_JOB: String(rec.job), KILN_BUILD: String(rec.build) },
        onOutput: append,
        onSpawn: (pid) => { void this.recordSdk(rec, pid); },
      });
      if (await exists(path.join(bdir, 'cancel'))) outcome = { state: 'cancelled', reason: 'cancelled by request', exitCode: r.code };
      else if (signal.aborted) outcome = { state: 'lost', reason: LOST.stop, exitCode: r.code };
      else if (r.timedOut) outcome = { state: 'failed', reason: `timed out after ${Math.round(timeoutMs / 1000)} s`, exitCode: r.code };
      else if (r.code === 0) outcome = { state: 'succeeded', exitCode: 0 };
      // Killed by a signal nobody here sent (the OOM killer, an operator): the machine's doing, not the Dockerfile's.
      else if (r.signal) outcome = { state: 'lost', reason: `interrupted: the build process was killed (${r.signal})`, exitCode: r.code };
      else outcome = { state: 'failed', reason: (await this.sdkError(archive)) ?? `the SDK exited with status ${r.code}`, exitCode: r.code };
    } catch (e) {
      this.log_.error({ err: e, job: rec.job, build: rec.build }, 'could not start the SDK');
      outcome = { state: 'failed', reason: 'could not start the SDK' };
    }
    append(`[kiln] build ${outcome.state}${outcome.reason ? `: ${outcome.reason}` : ''}\n`);
    closeSync(logFd);
    await this.lock.run(async () => {
      const cur = await this.readBuild(rec.job, rec.build);
      if (!cur || FINAL.has(cur.state)) return; // deleted meanwhile
      await this.finish({ ...cur, exitCode: outcome.exitCode }, outcome.state, outcome.reason);
    });
    await this.reportInternalError(rec, archive);
    await this.removeScratch(rec.job, rec.build);
    this.log_.info({ job: rec.job, build: rec.build, state: outcome.state, reason: outcome.reason }, 'build finished');
  }

  /**
   * Records the SDK's identity once it runs. A cancel from another process (an OpenSSH `kiln glue`) writes the
   * marker and signals the recorded group under the same lock: before this runs it finds no process, so the marker
   * is read here; after, it finds the identity and checks it before signalling.
   */
  private async recordSdk(rec: BuildRecord, pid: number): Promise<void> {
    const bdir = this.buildDir(rec.job, rec.build);
    const sdk = await identify(pid);
    const cancelled = await this.lock.run(async () => {
      const cur = await this.readBuild(rec.job, rec.build);
      if (sdk && cur?.state === 'running') await this.writeBuild({ ...cur, process: sdk });
      return exists(path.join(bdir, 'cancel'));
    }).catch(() => exists(path.join(bdir, 'cancel'))).catch(() => false);
    if (cancelled) this.running.get(`${rec.job}/${rec.build}`)?.abort.abort();
  }

  /**
   * An SDK that failed with an internal error wrote the detail beside its artifacts and told the user only a
   * reference: the detail goes to the operator's log here, and the file goes (it is never an artifact).
   */
  private async reportInternalError(rec: BuildRecord, archive: string): Promise<void> {
    const file = path.join(archive, SDK_INTERNAL_ERROR_FILE);
    try {
      const fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
      try {
        const buf = Buffer.alloc(64 * 1024);
        const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
        this.log_.error({ job: rec.job, build: rec.build, detail: buf.subarray(0, bytesRead).toString('utf8') }, 'the SDK failed with an internal error');
      } finally {
        await fh.close();
      }
    } catch { /* none (or not a plain file) */ }
    await fsp.rm(file, { force: true });
  }

  /** The SDK's own explanation of a failure, from result.json in its output directory. */
  private async sdkError(archive: string): Promise<string | undefined> {
    return (await this.sdkResult(archive))?.error;
  }

  /** How the SDK says it ended (result.json in its output directory), or undefined when it wrote none. */
  private async sdkResult(archive: string): Promise<{ ok: boolean; error?: string } | undefined> {
    try {
      const fh = await fsp.open(path.join(archive, 'result.json'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
      try {
        const st = await fh.stat();
        if (!st.isFile() || st.size > 1024 * 1024) return undefined;
        const r = JSON.parse(await fh.readFile('utf8')) as { ok?: unknown; error?: { message?: unknown } };
        if (typeof r.ok !== 'boolean') return undefined;
        const m = r.error?.message;
        return { ok: r.ok, ...(typeof m === 'string' && m.length > 0 ? { error: m.slice(0, 500) } : {}) };
      } finally {
        await fh.close();
      }
    } catch {
      return undefined;
    }
  }

  /** Stops a running build: this runner's own through its abort signal, another's through its recorded SDK. */
  private async stopBuild(rec: BuildRecord): Promise<void> {
    const mine = this.running.get(`${rec.job}/${rec.build}`);
    if (mine) return mine.abort.abort();
    const sdk = asIdentity(rec.process);
    if (!sdk) return; // not started yet: the runner reads the cancel marker when it records the SDK
    if (!(await signalGroupIfSame(sdk, 'SIGTERM'))) return;
    setTimeout(() => { void signalGroupIfSame(sdk, 'SIGKILL'); }, 5000).unref();
  }

  private async fireSchedules(): Promise<void> {
    if (this.closing) return;
    const now = this.now();
    for (const j of await this.listJobs()) {
      if (!j.managed || j.job === undefined || !j.enabled || !j.schedule || j.schedule === 'off') continue;
      const meta = await this.readMeta(j.job);
      if (!meta) continue;
      const { key, start } = periodOf(j.schedule, now);
      if (new Date(meta.scheduleSince) >= start || meta.keys[key] !== undefined) continue;
      await this.build(j.job, key, undefined, `timer ${j.schedule}`).catch((e) => this.log_.warn({ err: e, job: j.job }, 'scheduled build refused'));
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Files

  private jobDir = (job: number) => path.join(this.jobsDir, backendJobName(job));
  private buildDir = (job: number, build: number) => path.join(this.jobDir(job), 'builds', String(build));
  private queueEntry = (r: Pick<BuildRecord, 'queueId' | 'job' | 'build'>) =>
    path.join(this.queueDir, `${String(r.queueId).padStart(12, '0')}-${r.job}-${r.build}`);
  private iso = () => this.now().toISOString();

  private assertStarted(): void {
    if (!this.started) throw new KilnError('backend_unavailable', 'The local backend is not started');
  }

  private async readMeta(job: number): Promise<JobMeta | undefined> {
    const meta = await readJson<JobMeta>(path.join(this.jobDir(job), 'meta.json'));
    if (meta) meta.keys = Object.assign(Object.create(null) as Record<string, number>, meta.keys);
    return meta;
  }

  /** protocol.specSha256 of the Dockerfile and context the job holds now. */
  private async specDigest(job: number): Promise<string> {
    const dir = this.jobDir(job);
    const context = await fsp.readFile(path.join(dir, 'context.tar')).catch(() => undefined);
    return specSha256(await fsp.readFile(path.join(dir, 'Dockerfile')), context);
  }

  private async readSpec(job: number): Promise<StoredSpec> {
    const spec = await readJson<StoredSpec>(path.join(this.jobDir(job), 'config.json'));
    if (!spec) throw new KilnError('not_found', 'No such job');
    return spec;
  }

  private async nextBuildNumber(job: number): Promise<number> {
    const t = await fsp.readFile(path.join(this.jobDir(job), 'nextBuildNumber'), 'utf8').catch(() => '1');
    const n = Number.parseInt(t.trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : 1;
  }

  private async nextQueueId(): Promise<number> {
    const file = path.join(this.root, 'nextQueueId');
    const t = await fsp.readFile(file, 'utf8').catch(() => '1');
    const n = Number.parseInt(t.trim(), 10) || 1;
    await writeAtomic(file, `${n + 1}\n`);
    return n;
  }

  private readBuild(job: number, build: number): Promise<BuildRecord | undefined> {
    return readJson<BuildRecord>(path.join(this.buildDir(job, build), 'build.json')).catch(() => undefined);
  }

  private async mustReadBuild(job: number, build: number): Promise<BuildRecord> {
    const rec = await this.readBuild(job, build);
    if (!rec) throw new KilnError('not_found', (await exists(path.join(this.jobDir(job), 'config.json'))) ? 'No such build' : 'No such job');
    return rec;
  }

  private writeBuild(rec: BuildRecord): Promise<void> {
    return writeJson(path.join(this.buildDir(rec.job, rec.build), 'build.json'), rec);
  }

  /** Records a final state. Callers hold the lock. */
  private async finish(rec: BuildRecord, state: BuildState, reason?: string, o: { appendLog?: string } = {}): Promise<void> {
    const next: BuildRecord = { ...rec, state, finishedAt: this.iso() };
    delete next.process;
    if (reason) next.reason = reason;
    if (o.appendLog) await fsp.appendFile(path.join(this.buildDir(rec.job, rec.build), 'log'), o.appendLog).catch(() => undefined);
    await this.writeBuild(next);
    Object.assign(rec, next);
  }

  private async jobNames(): Promise<string[]> {
    const ents = await fsp.readdir(this.jobsDir, { withFileTypes: true }).catch(() => []);
    return ents.filter((e) => e.isDirectory()).map((e) => e.name);
  }

  private async buildNumbers(job: number): Promise<number[]> {
    const ents = await fsp.readdir(path.join(this.jobDir(job), 'builds')).catch(() => [] as string[]);
    return ents.filter((n) => /^[1-9][0-9]*$/.test(n)).map(Number).sort((a, b) => a - b);
  }

  private async queueEntries(): Promise<Array<{ file: string; queueId: number; job: number; build: number }>> {
    const names = (await fsp.readdir(this.queueDir).catch(() => [] as string[])).sort();
    const out = [];
    for (const file of names) {
      const m = /^([0-9]{12})-([1-9][0-9]*)-([1-9][0-9]*)$/.exec(file);
      if (m) out.push({ file, queueId: Number(m[1]), job: Number(m[2]), build: Number(m[3]) });
    }
    return out;
  }

  private async logTail(job: number, build: number, bytes: number): Promise<string> {
    try {
      const fh = await fsp.open(path.join(this.buildDir(job, build), 'log'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
      try {
        const size = (await fh.stat()).size;
        const start = Math.max(0, size - bytes);
        const buf = Buffer.alloc(size - start);
        await fh.read(buf, 0, buf.length, start);
        return buf.toString('utf8');
      } finally {
        await fh.close();
      }
    } catch {
      return '';
    }
  }

  /** Regular files with allow-listed names, found with lstat: a symlink or directory is never an artifact. */
  private async listArtifacts(job: number, build: number): Promise<ArtifactInfo[]> {
    const archive = path.join(this.buildDir(job, build), 'archive');
    const ast = await fsp.lstat(archive).catch(() => undefined);
    if (!ast?.isDirectory()) return [];
    const out: ArtifactInfo[] = [];
    for (const name of ARTIFACT_NAMES) {
      const st = await fsp.lstat(path.join(archive, name)).catch(() => undefined);
      if (st?.isFile()) out.push({ name, size: st.size });
    }
    return out;
  }
}


/** The schedule period `now` falls in (UTC) and its idempotency key: one timer build per day or ISO week. */
export function periodOf(schedule: Exclude<Schedule, 'off'>, now: Date): { key: string; start: Date } {
  const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  if (schedule === 'daily') return { key: `daily-${day.toISOString().slice(0, 10).replaceAll('-', '')}`, start: day };
  const dow = (day.getUTCDay() + 6) % 7; // Monday = 0
  const monday = new Date(day.getTime() - dow * 86_400_000);
  return { key: `weekly-${monday.toISOString().slice(0, 10).replaceAll('-', '')}`, start: monday };
}
