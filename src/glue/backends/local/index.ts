import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { sdkEnvironment } from '../../../config/index.js';
import {
  JOB_BUILDS_DEPTH,
  backendJobName,
  type ArtifactName,
  type BuildState,
  type BuildStatus,
  type JobBuild,
  type JobInfo,
  type JobSpec,
  type JobView,
  type LogChunk,
  type QueueItem,
} from '../../../protocol/index.js';
import { KilnError } from '../../../shared/errors.js';
import { silentLogger, type Logger } from '../../../shared/logger.js';
import type { Backend, BackendHealth } from '../types.js';
import { dockerSocketPath, probeDockerEngine } from '../../../shared/docker-engine.js';
import { KILN_VERSION } from '../../../shared/version.js';
import { asIdentity, signalGroupIfSame } from './process.js';
import { buildStatus, listJobs, listQueue, openArtifact, readLog, waitForChange } from './readers.js';
import { BuildStore, FINAL, type BuildRecord, type StoredSpec } from './records.js';
import { Runner } from './runner.js';
import { fireSchedules } from './schedule.js';
import { exists, readJson, writeAtomic, writeJson } from './store.js';

export { periodOf } from './schedule.js';

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

/** bin/kiln of this checkout (dist/glue/backends/local or src/glue/backends/local -> repo root). */
export const defaultSdkCommand = (): string[] => [
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../bin/kiln'),
  'sdk',
  'build',
];

/**
 * The embedded build engine, in a data directory shaped like Jenkins' own (records.ts). This class is the
 * Backend the glue calls: it records jobs and builds under the directory's lock; the Runner (runner.ts) runs them
 * in the long-lived process, the readers (readers.ts) answer status, log and artifact requests, the schedule
 * (schedule.ts) fires daily and weekly builds.
 */
export class LocalBackend implements Backend {
  readonly kind = 'local' as const;
  private readonly store: BuildStore;
  private readonly runner: Runner | undefined;
  private readonly log_: Logger;
  private schedule: NodeJS.Timeout | undefined;
  private started = false;
  /** The build.waits being held: close() ends them (each answers with the status it has then). */
  private readonly held = new Set<AbortController>();

  constructor(private readonly opts: LocalBackendOptions) {
    this.log_ = opts.logger ?? silentLogger;
    this.store = new BuildStore(opts.dataDir, opts.now ?? (() => new Date()));
    this.runner =
      opts.runner === false
        ? undefined
        : new Runner(this.store, {
            sdk: opts.sdkCommand && opts.sdkCommand.length > 0 ? opts.sdkCommand : defaultSdkCommand(),
            concurrency: opts.concurrency ?? 1,
            env: opts.env ?? sdkEnvironment(process.env),
            logger: this.log_,
            ...(opts.buildTimeoutMs !== undefined ? { buildTimeoutMs: opts.buildTimeoutMs } : {}),
            ...(opts.logCapBytes !== undefined ? { logCapBytes: opts.logCapBytes } : {}),
            ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
          });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Lifecycle

  async start(): Promise<void> {
    await fsp.mkdir(this.store.jobsDir, { recursive: true });
    await fsp.mkdir(this.store.queueDir, { recursive: true });
    this.started = true;
    if (!this.runner) return;
    await this.runner.recover();
    this.schedule = setInterval(() => {
      this.checkSchedules().catch((e: unknown) => this.log_.error({ err: e }, 'schedule check failed'));
    }, this.opts.scheduleCheckMs ?? 60_000);
    this.schedule.unref();
    this.runner.start();
  }

  /** Stops the schedule and the runner; builds still running are stopped and end `lost`. */
  async close(): Promise<void> {
    clearInterval(this.schedule);
    for (const h of this.held) h.abort();
    await this.runner?.close();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Jobs

  async putJob(job: number, spec: JobSpec): Promise<{ created: boolean }> {
    this.assertStarted();
    return this.store.lock.run(async () => {
      const dir = this.store.jobDir(job);
      const created = !(await exists(path.join(dir, 'config.json')));
      await fsp.mkdir(path.join(dir, 'builds'), { recursive: true });
      const { contextTarBase64, ...stored } = spec;
      const old = await readJson<StoredSpec>(path.join(dir, 'config.json'));
      const meta = (await this.store.readMeta(job)) ?? {
        createdAt: this.store.iso(),
        scheduleSince: this.store.iso(),
        keys: Object.create(null) as Record<string, number>,
      };
      // A new time is a new schedule: a period that began before it was set is not fired after the fact.
      if (
        !old ||
        old.schedule !== stored.schedule ||
        old.scheduleHour !== stored.scheduleHour ||
        old.scheduleWeekday !== stored.scheduleWeekday
      ) {
        meta.scheduleSince = this.store.iso();
      }
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
    await this.store.lock.run(async () => {
      const spec = await this.store.readSpec(job);
      if (spec.enabled === enabled) return;
      await writeJson(path.join(this.store.jobDir(job), 'config.json'), { ...spec, enabled });
    });
  }

  async deleteJob(job: number): Promise<{ deleted: boolean }> {
    this.assertStarted();
    const trash = await this.store.lock.run(async () => {
      const dir = this.store.jobDir(job);
      if (!(await exists(path.join(dir, 'config.json')))) {
        await fsp.rm(dir, { recursive: true, force: true });
        return undefined;
      }
      for (const n of await this.store.buildNumbers(job)) {
        const rec = await this.store.readBuild(job, n);
        if (rec?.state === 'queued') await fsp.rm(this.store.queueEntry(rec), { force: true });
        if (rec?.state === 'running') {
          await fsp.writeFile(path.join(this.store.buildDir(job, n), 'cancel'), 'deleted\n');
          await this.stopBuild(rec);
        }
      }
      const t = path.join(this.store.root, `.deleted-${backendJobName(job)}-${Date.now()}`);
      await fsp.rename(dir, t);
      return t;
    });
    if (!trash) return { deleted: false };
    await fsp.rm(trash, { recursive: true, force: true });
    return { deleted: true };
  }

  async getJob(job: number): Promise<JobView> {
    this.assertStarted();
    const spec = await this.store.readSpec(job);
    const view: JobView = {
      job,
      enabled: spec.enabled,
      schedule: spec.schedule,
      formats: spec.formats,
      buildArgs: spec.buildArgs,
      specSha256: await this.store.specDigest(job),
    };
    if (spec.scheduleHour !== undefined) view.scheduleHour = spec.scheduleHour;
    if (spec.scheduleWeekday !== undefined) view.scheduleWeekday = spec.scheduleWeekday;
    if (spec.bootFirmware) view.bootFirmware = spec.bootFirmware;
    return view;
  }

  async jobBuilds(job: number): Promise<JobBuild[]> {
    this.assertStarted();
    await this.store.readSpec(job);
    const out: JobBuild[] = [];
    for (const n of (await this.store.buildNumbers(job)).reverse().slice(0, JOB_BUILDS_DEPTH)) {
      const rec = await this.store.readBuild(job, n);
      if (rec) out.push({ build: n, trigger: rec.trigger ?? 'api', key: rec.idempotencyKey, queuedAt: rec.queuedAt });
    }
    return out;
  }

  async listJobs(): Promise<JobInfo[]> {
    this.assertStarted();
    return listJobs(this.store);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Builds

  async build(
    job: number,
    idempotencyKey: string,
    sha256?: string,
    trigger: 'api' | 'schedule' = 'api',
  ): Promise<{ build: number; created: boolean }> {
    this.assertStarted();
    const res = await this.store.lock.run(async () => {
      const spec = await this.store.readSpec(job);
      const dir = this.store.jobDir(job);
      const meta = (await this.store.readMeta(job))!;
      const seen = meta.keys[idempotencyKey];
      if (seen !== undefined) return { build: seen, created: false };
      if (!spec.enabled) throw new KilnError('conflict', 'The job is disabled; enable it before building');
      // Checked under the lock that also copies the files into the build: what is checked is what is built.
      if (sha256 !== undefined && (await this.store.specDigest(job)) !== sha256) {
        throw new KilnError(
          'conflict',
          'The job holds another version of the Dockerfile than the one asked for (it changed meanwhile); put it again and retry',
        );
      }
      const n = await this.store.nextBuildNumber(job);
      const queueId = await this.store.nextQueueId();
      const bdir = this.store.buildDir(job, n);
      await fsp.mkdir(path.join(bdir, 'ws'), { recursive: true });
      await fsp.mkdir(path.join(bdir, 'archive'), { recursive: true });
      // The build uses the job as it is now, even if job.put changes it while the build waits in the queue.
      await fsp.copyFile(path.join(dir, 'Dockerfile'), path.join(bdir, 'ws', 'Dockerfile'));
      const hasContext = await exists(path.join(dir, 'context.tar'));
      if (hasContext) await fsp.copyFile(path.join(dir, 'context.tar'), path.join(bdir, 'ws', 'context.tar'));
      if (spec.source) await writeJson(path.join(bdir, 'ws', 'source.json'), spec.source);
      const rec: BuildRecord = {
        job,
        build: n,
        state: 'queued',
        queueId,
        idempotencyKey,
        queuedAt: this.store.iso(),
        formats: spec.formats,
        buildArgs: spec.buildArgs,
        ...(spec.baseNames?.length ? { baseNames: spec.baseNames } : {}),
        ...(spec.bootFirmware?.length ? { bootFirmware: spec.bootFirmware } : {}),
        hasContext,
        ...(spec.source ? { source: spec.source } : {}),
        trigger,
      };
      await writeJson(path.join(bdir, 'build.json'), rec);
      // 'w': a number left by an unacknowledged attempt (the process died before meta.json) starts afresh.
      await fsp.writeFile(
        path.join(bdir, 'log'),
        `[kiln] queued (${trigger === 'schedule' ? `timer ${spec.schedule}` : 'api'})\n`,
      );
      await writeAtomic(path.join(dir, 'nextBuildNumber'), `${n + 1}\n`);
      meta.keys[idempotencyKey] = n;
      await writeJson(path.join(dir, 'meta.json'), meta);
      await fsp.writeFile(this.store.queueEntry(rec), '');
      return { build: n, created: true };
    });
    if (res.created) this.runner?.pump();
    return res;
  }

  async withdraw(
    job: number,
    idempotencyKey: string,
  ): Promise<{ withdrawn: boolean; build?: number; state?: BuildState }> {
    this.assertStarted();
    const meta = await this.store.readMeta(job);
    const build = meta?.keys[idempotencyKey];
    if (build === undefined) return { withdrawn: false };
    const { state } = await this.cancel(job, build);
    return { withdrawn: true, build, state };
  }

  async cancel(job: number, build: number): Promise<{ state: BuildState }> {
    this.assertStarted();
    const rec = await this.store.lock.run(async () => {
      const r = await this.store.mustReadBuild(job, build);
      if (r.state === 'queued') {
        await fsp.rm(this.store.queueEntry(r), { force: true });
        await this.store.finish(r, 'cancelled', 'cancelled while queued', {
          appendLog: '[kiln] cancelled while queued\n',
        });
        // It never reaches the runner, whose end of a build is where the scratch goes otherwise: its ws/ (the
        // copied Dockerfile and context, no more) would wait for the next restart's recovery.
        await this.store.removeScratch(job, build);
      } else if (r.state === 'running') {
        await fsp.writeFile(path.join(this.store.buildDir(job, build), 'cancel'), 'requested\n');
        await this.stopBuild(r);
      }
      return r;
    });
    if (rec.state !== 'running') return { state: rec.state };
    // The runner (this process or another) records the final state once the SDK's process group has exited.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const cur = await this.store.readBuild(job, build);
      if (!cur || FINAL.has(cur.state)) return { state: cur?.state ?? 'cancelled' };
      await new Promise((r) => setTimeout(r, 100));
    }
    return { state: 'running' };
  }

  async keep(job: number, build: number, keep: boolean): Promise<{ kept: boolean }> {
    this.assertStarted();
    return this.store.lock.run(async () => {
      const rec = await this.store.mustReadBuild(job, build);
      if (!!rec.keep !== keep) await this.store.writeBuild({ ...rec, keep });
      return { kept: keep };
    });
  }

  /**
   * Drops the archive of a finished build that is not kept: renamed aside under the lock (readers see it whole or
   * not at all), the record says when, then removed outside it. A crash in between leaves an `archive.discarded-*`
   * that the next discard of that build (retried by its task) removes.
   */
  async discard(job: number, build: number): Promise<{ discarded: boolean }> {
    this.assertStarted();
    const bdir = this.store.buildDir(job, build);
    const aside = await this.store.lock.run(async () => {
      const rec = await this.store.mustReadBuild(job, build);
      if (rec.keep) throw new KilnError('conflict', 'This build is kept (pinned): its artifacts are not discarded');
      if (!FINAL.has(rec.state)) throw new KilnError('conflict', 'This build has not finished');
      const to = path.join(bdir, `archive.discarded-${Date.now()}`);
      const moved = await fsp.rename(path.join(bdir, 'archive'), to).then(
        () => true,
        (e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return false;
          throw e;
        },
      );
      if (moved && !rec.discardedAt) await this.store.writeBuild({ ...rec, discardedAt: this.store.iso() });
      return moved;
    });
    for (const n of await fsp.readdir(bdir).catch(() => [] as string[]))
      if (n.startsWith('archive.discarded-')) await fsp.rm(path.join(bdir, n), { recursive: true, force: true });
    return { discarded: aside };
  }

  async status(job: number, build: number): Promise<BuildStatus> {
    this.assertStarted();
    return buildStatus(this.store, job, build);
  }

  async wait(
    job: number,
    build: number,
    known: BuildState,
    seconds: number,
    signal?: AbortSignal,
  ): Promise<BuildStatus> {
    this.assertStarted();
    const h = new AbortController();
    const stop = () => h.abort();
    signal?.addEventListener('abort', stop);
    if (signal?.aborted) h.abort();
    this.held.add(h);
    try {
      return await waitForChange(this.store, job, build, known, Date.now() + seconds * 1000, h.signal);
    } finally {
      this.held.delete(h);
      signal?.removeEventListener('abort', stop);
    }
  }

  async log(job: number, build: number, offset: number): Promise<LogChunk> {
    this.assertStarted();
    return readLog(this.store, job, build, offset);
  }

  async artifact(job: number, build: number, name: ArtifactName, offset: number): Promise<Readable> {
    this.assertStarted();
    return openArtifact(this.store, job, build, name, offset);
  }

  async listQueue(): Promise<QueueItem[]> {
    this.assertStarted();
    return listQueue(this.store);
  }

  /** Kiln's own version; the Docker engine is the one the SDK on this machine builds with. */
  async describe(): Promise<BackendHealth> {
    const env = this.opts.env ?? process.env;
    return { version: KILN_VERSION, backendReachable: true, docker: await probeDockerEngine(dockerSocketPath(env)) };
  }

  /** Stops a running build: this process's runner's own, or another's through its recorded SDK. */
  private async stopBuild(rec: BuildRecord): Promise<void> {
    if (this.runner?.stopBuild(rec)) return;
    const sdk = asIdentity(rec.process);
    if (!sdk) return; // not started yet: the runner reads the cancel marker when it records the SDK
    if (!(await signalGroupIfSame(sdk, 'SIGTERM'))) return;
    setTimeout(() => {
      void signalGroupIfSame(sdk, 'SIGKILL');
    }, 5000).unref();
  }

  /** Starts the daily and weekly builds that are due (schedule.ts); the runner's timer calls it every minute. */
  async checkSchedules(): Promise<void> {
    this.assertStarted();
    await fireSchedules(
      this.store,
      await listJobs(this.store),
      (job, key) => this.build(job, key, undefined, 'schedule'),
      this.log_,
    );
  }

  private assertStarted(): void {
    if (!this.started) throw new KilnError('backend_unavailable', 'The local backend is not started');
  }
}
