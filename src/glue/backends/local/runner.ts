/**
 * The local backend's runner: the one process (the long-lived glue server) that starts queued builds, at most
 * `concurrency` at once, each as `kiln sdk build` in its own process group under a timeout and a log cap, and
 * records how each ended. A `kiln glue` forced command only records requests (index.ts) and leaves them to it.
 *
 * Lifecycle: `recover()` once at start (a previous process's running builds end `lost`), then `start()` polls the
 * queue; `close()` stops polling and stops the builds still running (they end `lost`: the service stopped).
 */
import { constants as fsc, promises as fsp, openSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import {
  SDK_INTERNAL_ERROR_FILE,
  jobIdFromBackendName,
  parseBuildResult,
  type BuildState,
} from '../../../protocol/index.js';
import type { Logger } from '../../../shared/logger.js';
import { pump } from '../../../shared/pump.js';
import { run } from '../../../shared/subprocess.js';
import { asIdentity, identify, signalGroupIfSame } from './process.js';
import { FINAL, LOST, type BuildRecord, type BuildStore } from './records.js';
import { exists, removeStaleTemps } from './store.js';

export interface RunnerOptions {
  /** argv of the SDK's build command; the runner appends --dockerfile, --out, --format, ... */
  sdk: readonly string[];
  concurrency: number;
  /** The SDK's environment, before KILN_JOB, KILN_BUILD and the per-build TMPDIR are added. */
  env: Readonly<Record<string, string>>;
  logger: Logger;
  /** Wall-clock limit of one build, SDK included. */
  buildTimeoutMs?: number;
  /** Log bytes kept per build; output beyond is dropped with a note. */
  logCapBytes?: number;
  /** How often to look for builds queued by other processes, ms. */
  pollMs?: number;
}

export class Runner {
  private readonly log_: Logger;
  private readonly sdk: readonly string[];
  private readonly concurrency: number;
  private readonly env: Readonly<Record<string, string>>;
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void>; owner: string }>();
  /** Fair order: when each owner last had a build started (a counter), and whose each claimed build is. */
  private readonly servedAt = new Map<string, number>();
  private readonly ownerOfClaim = new Map<string, string>();
  private starts = 0;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private closing = false;
  /** Starts queued builds while executors are free; close() waits for its pass (a build it claims is not in `running` yet). */
  private readonly queue = pump<BuildRecord>({
    claim: () => this.claimNext(),
    launch: (rec) => this.launch(rec),
    room: () => this.running.size < this.concurrency && !this.closing,
    onError: (e) => this.log_.error({ err: e }, 'build queue pump failed'),
  });

  constructor(
    private readonly store: BuildStore,
    private readonly o: RunnerOptions,
  ) {
    this.log_ = o.logger;
    this.sdk = o.sdk;
    this.concurrency = Math.max(1, o.concurrency);
    this.env = o.env;
  }

  start(): void {
    this.started = true;
    this.timer = setInterval(() => this.pump(), this.o.pollMs ?? 1000);
    this.timer.unref();
    this.pump();
  }

  /** Stops polling; builds still running are stopped and end `lost` (the build service stopped). */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    await this.queue.idle;
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
  async recover(): Promise<void> {
    await this.store.lock.run(async () => {
      await removeStaleTemps(this.store.root);
      for (const e of await fsp.readdir(this.store.root)) {
        if (e.startsWith('.deleted-')) await fsp.rm(path.join(this.store.root, e), { recursive: true, force: true });
      }
      for (const name of await this.store.jobNames()) {
        const job = jobIdFromBackendName(name);
        if (job === undefined) continue;
        await removeStaleTemps(this.store.jobDir(job));
        const keys = (await this.store.readMeta(job))?.keys ?? (Object.create(null) as Record<string, number>);
        for (const n of await this.store.buildNumbers(job)) {
          await removeStaleTemps(this.store.buildDir(job, n));
          const rec = await this.store.readBuild(job, n);
          if (!rec) continue;
          if (rec.state === 'queued' && keys[rec.idempotencyKey] !== n) {
            await fsp.rm(this.store.queueEntry(rec), { force: true });
            await this.store.finish(rec, 'cancelled', 'never started: the build service stopped while recording it');
          } else if (rec.state === 'running') {
            const sdk = asIdentity(rec.process);
            const killed = sdk ? await signalGroupIfSame(sdk, 'SIGKILL') : false;
            // An SDK that finished on its own after the runner died (it runs in a process group of its own) said
            // how it ended in result.json: that is the build's end. Running it again would build it twice.
            const done = killed ? undefined : await this.sdkResult(path.join(this.store.buildDir(job, n), 'archive'));
            if (done) {
              const state = done.ok ? 'succeeded' : 'failed';
              const reason = done.ok ? undefined : (done.error ?? 'the SDK failed');
              await this.store.finish(rec, state, reason, {
                appendLog: `[kiln] build ${state}${reason ? `: ${reason}` : ''} (the SDK ended while the build service was down)\n`,
              });
              this.log_.warn({ job, build: n, state }, 'build ended while the build service was down');
            } else {
              await this.store.finish(rec, 'lost', LOST.restart, { appendLog: `[kiln] build ${LOST.restart}\n` });
              this.log_.warn({ job, build: n, sdkKilled: killed }, 'build interrupted by a restart');
            }
          } else if (rec.state === 'queued' && !(await exists(this.store.queueEntry(rec)))) {
            await fsp.writeFile(this.store.queueEntry(rec), '');
          }
          if (FINAL.has(rec.state)) await this.store.removeScratch(job, n);
        }
      }
    });
  }

  /** Starts queued builds while executors are free. */
  pump(): void {
    if (!this.closing && this.started) this.queue.kick();
  }

  /**
   * The next build to start, fairly: queued builds are taken round robin by owner (the job spec's `owner`), so one
   * user's ten queued builds do not hold back another user's one. The owner with the fewest builds running goes
   * first, then the one served longest ago (or never), then queue order.
   */
  private async claimNext(): Promise<BuildRecord | undefined> {
    return this.store.lock.run(async () => {
      const entries = await this.store.queueEntries();
      const ownerOf = new Map<number, string>();
      for (const e of entries) {
        if (!ownerOf.has(e.job))
          ownerOf.set(
            e.job,
            await this.store.readSpec(e.job).then(
              (s) => s.owner,
              () => '',
            ),
          );
      }
      const runningOf = new Map<string, number>();
      for (const r of this.running.values()) runningOf.set(r.owner, (runningOf.get(r.owner) ?? 0) + 1);
      const rank = (e: (typeof entries)[number]): [number, number, number] => {
        const o = ownerOf.get(e.job)!;
        return [runningOf.get(o) ?? 0, this.servedAt.get(o) ?? -1, e.queueId];
      };
      const ordered = entries
        .map((e) => ({ e, r: rank(e) }))
        .sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.r[2] - b.r[2])
        .map((x) => x.e);
      for (const e of ordered) {
        const rec = await this.store.readBuild(e.job, e.build);
        await fsp.rm(path.join(this.store.queueDir, e.file), { force: true });
        if (!rec || rec.state !== 'queued') continue;
        rec.state = 'running';
        rec.startedAt = this.store.iso();
        await this.store.writeBuild(rec);
        const owner = ownerOf.get(e.job)!;
        this.servedAt.set(owner, ++this.starts);
        this.ownerOfClaim.set(`${rec.job}/${rec.build}`, owner);
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
    const owner = this.ownerOfClaim.get(key) ?? '';
    this.ownerOfClaim.delete(key);
    this.running.set(key, { abort, done, owner });
  }

  private async execute(rec: BuildRecord, signal: AbortSignal): Promise<void> {
    const bdir = this.store.buildDir(rec.job, rec.build);
    const ws = path.join(bdir, 'ws');
    const archive = path.join(bdir, 'archive');
    // The SDK's TMPDIR: its staging area lives in the build's own directory, so whatever a killed SDK leaves there
    // goes when the build ends or, after a crash, when the runner recovers (never an orphan in /tmp).
    const tmp = path.join(bdir, 'tmp');
    await fsp.mkdir(tmp, { recursive: true, mode: 0o700 });
    const cap = this.o.logCapBytes ?? 16 * 1024 * 1024;
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
      ...prefix,
      '--dockerfile',
      path.join(ws, 'Dockerfile'),
      '--out',
      archive,
      '--format',
      rec.formats.join(','),
      ...(rec.hasContext ? ['--context', path.join(ws, 'context.tar')] : []),
      ...(rec.source ? ['--source', path.join(ws, 'source.json')] : []),
      ...Object.entries(rec.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
      ...(rec.baseNames ?? []).flatMap((m) => ['--base-name', `${m.name}=${m.base}`]),
      ...(rec.bootFirmware?.length ? ['--boot-firmware', rec.bootFirmware.join(',')] : []),
    ];
    const timeoutMs = this.o.buildTimeoutMs ?? 2 * 3600_000;
    this.log_.info({ job: rec.job, build: rec.build }, 'build started');
    append(`[kiln] build ${rec.build} of job ${rec.job} started\n`);
    // sdkSaid: the SDK ended on its own and its last lines already say how (`[kiln] build succeeded|failed`).
    let outcome: { state: BuildState; reason?: string; exitCode?: number | null; sdkSaid?: boolean };
    try {
      const r = await run(cmd, args, {
        cwd: ws,
        timeoutMs,
        signal,
        processGroup: true,
        maxOutputBytes: 64 * 1024,
        env: { ...this.env, TMPDIR: tmp, KILN_JOB: String(rec.job), KILN_BUILD: String(rec.build) },
        onOutput: append,
        onSpawn: (pid) => {
          void this.recordSdk(rec, pid);
        },
      });
      if (await exists(path.join(bdir, 'cancel')))
        outcome = { state: 'cancelled', reason: 'cancelled by request', exitCode: r.code };
      else if (signal.aborted) outcome = { state: 'lost', reason: LOST.stop, exitCode: r.code };
      else if (r.timedOut)
        outcome = { state: 'failed', reason: `timed out after ${Math.round(timeoutMs / 1000)} s`, exitCode: r.code };
      else if (r.code === 0) outcome = { state: 'succeeded', exitCode: 0, sdkSaid: true };
      // Killed by a signal nobody here sent (the OOM killer, an operator): the machine's doing, not the Dockerfile's.
      else if (r.signal)
        outcome = {
          state: 'lost',
          reason: `interrupted: the build process was killed (${r.signal})`,
          exitCode: r.code,
        };
      else {
        const said = await this.sdkError(archive);
        outcome = {
          state: 'failed',
          reason: said ?? `the SDK exited with status ${r.code}`,
          exitCode: r.code,
          sdkSaid: said !== undefined,
        };
      }
    } catch (e) {
      this.log_.error({ err: e, job: rec.job, build: rec.build }, 'could not start the SDK');
      outcome = { state: 'failed', reason: 'could not start the SDK' };
    }
    // The end is told once: by the SDK when it ended on its own, else here (cancelled, lost, timed out, not started).
    if (!outcome.sdkSaid) append(`[kiln] build ${outcome.state}${outcome.reason ? `: ${outcome.reason}` : ''}\n`);
    closeSync(logFd);
    await this.store.lock.run(async () => {
      const cur = await this.store.readBuild(rec.job, rec.build);
      if (!cur || FINAL.has(cur.state)) return; // deleted meanwhile
      await this.store.finish({ ...cur, exitCode: outcome.exitCode }, outcome.state, outcome.reason);
    });
    await this.reportInternalError(rec, archive);
    await this.store.removeScratch(rec.job, rec.build);
    this.log_.info({ job: rec.job, build: rec.build, state: outcome.state, reason: outcome.reason }, 'build finished');
  }

  /**
   * Records the SDK's identity once it runs. A cancel from another process (an OpenSSH `kiln glue`) writes the
   * marker and signals the recorded group under the same lock: before this runs it finds no process, so the marker
   * is read here; after, it finds the identity and checks it before signalling.
   */
  private async recordSdk(rec: BuildRecord, pid: number): Promise<void> {
    const bdir = this.store.buildDir(rec.job, rec.build);
    const sdk = await identify(pid);
    const cancelled = await this.store.lock
      .run(async () => {
        const cur = await this.store.readBuild(rec.job, rec.build);
        if (sdk && cur?.state === 'running') await this.store.writeBuild({ ...cur, process: sdk });
        return exists(path.join(bdir, 'cancel'));
      })
      .catch(() => exists(path.join(bdir, 'cancel')))
      .catch(() => false);
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
        this.log_.error(
          { job: rec.job, build: rec.build, detail: buf.subarray(0, bytesRead).toString('utf8') },
          'the SDK failed with an internal error',
        );
      } finally {
        await fh.close();
      }
    } catch {
      /* none (or not a plain file) */
    }
    await fsp.rm(file, { force: true });
  }

  /** The SDK's own explanation of a failure, from result.json in its output directory. */
  private async sdkError(archive: string): Promise<string | undefined> {
    return (await this.sdkResult(archive))?.error;
  }

  /** How the SDK says it ended (result.json in its output directory, the protocol's schema), or undefined when it wrote none. */
  private async sdkResult(archive: string): Promise<{ ok: boolean; error?: string } | undefined> {
    try {
      const fh = await fsp.open(path.join(archive, 'result.json'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
      try {
        const st = await fh.stat();
        if (!st.isFile() || st.size > 1024 * 1024) return undefined;
        const r = parseBuildResult(await fh.readFile('utf8'));
        if (!r) return undefined;
        const m = r.error?.message;
        return { ok: r.ok, ...(m ? { error: m.slice(0, 500) } : {}) };
      } finally {
        await fh.close();
      }
    } catch {
      return undefined;
    }
  }

  /** Stops one of this runner's builds through its abort signal; false when it does not run here. */
  stopBuild(rec: Pick<BuildRecord, 'job' | 'build'>): boolean {
    const mine = this.running.get(`${rec.job}/${rec.build}`);
    mine?.abort.abort();
    return mine !== undefined;
  }
}
