/**
 * The worker: claims due tasks from the tasks table and runs them, several at once, each under a lease it renews
 * while the task runs. Any number of workers (in `kiln serve`, `kiln web`, `kiln worker`) share one database.
 *
 * A task's run ends one of four ways:
 *   - its handler returns: done;
 *   - it returns `{again: ms}`: the work is not finished (a build still running): back to pending, due in `ms`,
 *     its attempts counted afresh;
 *   - it throws: retried with exponential backoff (worker.backoffMs doubling per attempt, up to
 *     worker.backoffMaxSeconds, +-20% jitter), the error kept as last_error;
 *   - it throws on its last attempt (worker.maxAttempts), or its worker died during that many runs (expired leases):
 *     failed, with its error kept, and the kind's `gaveUp` ends what it concerns (a build fails with the reason).
 * Handlers are idempotent: a run cut off anywhere (a crash, a lost lease) is simply run again.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { claimTask, extendLease, finishTask, hurryTask, type TaskRow } from '../../db/index.js';
import { isKilnError } from '../../shared/errors.js';
import { pump } from '../../shared/pump.js';
import type { Logger } from '../../shared/logger.js';
import { WORKER, actorLabel } from '../actor.js';
import { BuildWaits } from '../builds/waits.js';
import { clockOf, type CoreDeps } from '../deps.js';
import { enqueue, isoAt } from './queue.js';

export interface TaskRun {
  task: TaskRow;
  /** Aborted when this worker lost the task's lease or stops: stop soon, nothing half-done may be left as done. */
  signal: AbortSignal;
  log: Logger;
  /** The builds this worker holds glue waits on (builds/waits.ts): a started worker's; a drained one has none. */
  waits?: BuildWaits;
}

export type TaskResult = void | { again: number };

export interface TaskKind {
  run(d: CoreDeps, r: TaskRun): Promise<TaskResult>;
  /** At most this many of the kind run at once in one worker (attestation streams whole images). */
  concurrency?: number;
  /** The task failed for good: end what it concerns, visibly (a build fails with `error` as the reason). */
  gaveUp?(d: CoreDeps, task: TaskRow, error: string): Promise<void>;
}

/** The handlers a worker runs, by kind name (kinds.ts has Kiln's; a kind without a handler fails visibly). */
export type TaskKinds = Readonly<Record<string, TaskKind>>;

/** The delay before retry number `attempt` (1 = the first retry): base * 2^(attempt-1), capped, +-20%. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(raw * (0.8 + 0.4 * random()));
}

/** What is kept of an error on the task: its message (KilnError messages are safe to show), never a stack. */
export function errorText(e: unknown): string {
  if (isKilnError(e)) return `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

export interface WorkerOptions {
  /** How this worker signs its leases; unique per worker. Default: host, pid and a random suffix. */
  id?: string;
  concurrency?: number;
  pollMs?: number;
  leaseMs?: number;
  /** How often this worker asks for a reconciliation pass (0: never). */
  reconcileMs?: number;
}

export class Worker {
  readonly id: string;
  private readonly concurrency: number;
  private readonly leaseMs: number;
  private readonly running = new Map<
    number,
    {
      kind: string;
      subject: string;
      abort: AbortController;
      done: Promise<void>;
      /** Asked to run again as soon as this run ends (hurry), and whether its end is written (`settled`). */
      hurried: boolean;
      settled: boolean;
    }
  >();
  private waits: BuildWaits | undefined;
  private timers: NodeJS.Timeout[] = [];
  private started = false;
  private stopping = false;
  private readonly filler = pump<TaskRow>({
    claim: () => this.claim(),
    launch: (task) => this.launch(task),
    room: () => this.running.size < this.concurrency && !this.stopping,
    onError: (e) => this.log.error({ err: e }, 'claiming tasks failed'),
  });
  private readonly log: Logger;

  constructor(
    private readonly d: CoreDeps,
    private readonly kinds: TaskKinds,
    private readonly o: WorkerOptions = {},
  ) {
    this.id = o.id ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.concurrency = Math.max(1, o.concurrency ?? d.config.worker.concurrency);
    this.leaseMs = o.leaseMs ?? d.config.worker.leaseSeconds * 1000;
    this.log = d.logger.child({ worker: this.id, ...actorLabel(WORKER) });
  }

  /** Starts polling (and asking for reconciliation passes). `stop()` ends it. */
  start(): this {
    this.started = true;
    this.waits = new BuildWaits(this.d, (subject) => {
      this.hurry('build.refresh', subject).catch((e: unknown) =>
        this.log.warn({ err: e, subject }, 'could not move a refresh forward'),
      );
    });
    const poll = setInterval(() => this.wake(), this.o.pollMs ?? this.d.config.worker.pollMs);
    poll.unref();
    this.timers.push(poll);
    const reconcileMs = this.o.reconcileMs ?? this.d.config.worker.reconcileSeconds * 1000;
    if (reconcileMs > 0) {
      const ask = () => {
        enqueue(this.d.db, this.d, 'reconcile', '').then(
          () => this.wake(),
          (e: unknown) => this.log.warn({ err: e }, 'could not enqueue a reconciliation pass'),
        );
      };
      const t = setInterval(ask, reconcileMs);
      t.unref();
      this.timers.push(t);
      ask();
    }
    this.wake();
    return this;
  }

  /** Claims due tasks now (a use case in this process just enqueued one). */
  wake(): void {
    if (this.started && !this.stopping) this.filler.kick();
  }

  /**
   * Runs the task of this kind and subject now rather than when it is due (what it looks at changed). One that runs
   * in this worker now runs again as soon as it ends, if it asks to (`again`): the change may have come after its
   * look. One pending is made due; another worker's running one is left to it.
   */
  async hurry(kind: string, subject: string): Promise<void> {
    for (const r of this.running.values()) {
      if (r.kind === kind && r.subject === subject && !r.settled) {
        r.hurried = true;
        return;
      }
    }
    if (await hurryTask(this.d.db, kind, subject, isoAt(clockOf(this.d)))) this.wake();
  }

  /**
   * Runs due tasks until none is left, then resolves with how many ran (tests and `kiln worker --once` use it
   * instead of waiting for the poll). Tasks that became due because others ran are run too.
   */
  async drain(): Promise<number> {
    let ran = 0;
    for (;;) {
      const task = await this.claim();
      if (!task) {
        if (!this.running.size) return ran;
        await Promise.race([...this.running.values()].map((r) => r.done));
        continue;
      }
      ran++;
      this.launch(task);
      if (this.running.size >= this.concurrency) await Promise.race([...this.running.values()].map((r) => r.done));
    }
  }

  /** Stops claiming and waits for the tasks running now to end (their leases are released as they finish). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.waits?.close();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.filler.idle;
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  private async claim(): Promise<TaskRow | undefined> {
    const now = clockOf(this.d);
    const counts = new Map<string, number>();
    for (const r of this.running.values()) counts.set(r.kind, (counts.get(r.kind) ?? 0) + 1);
    const skipKinds = Object.entries(this.kinds)
      .filter(([k, v]) => v.concurrency !== undefined && (counts.get(k) ?? 0) >= v.concurrency)
      .map(([k]) => k);
    return claimTask(this.d.db, { owner: this.id, now: isoAt(now), leaseUntil: isoAt(now + this.leaseMs), skipKinds });
  }

  private launch(task: TaskRow): void {
    const abort = new AbortController();
    const done = this.execute(task, abort).finally(() => {
      this.running.delete(task.id);
      this.wake();
    });
    this.running.set(task.id, { kind: task.kind, subject: task.subject, abort, done, hurried: false, settled: false });
  }

  private async execute(task: TaskRow, abort: AbortController): Promise<void> {
    const log = this.log.child({ task: task.id, kind: task.kind, subject: task.subject, attempt: task.attempts });
    const kind = Object.hasOwn(this.kinds, task.kind) ? this.kinds[task.kind] : undefined;
    const heartbeat = setInterval(
      () => {
        const now = clockOf(this.d);
        extendLease(this.d.db, task.id, this.id, isoAt(now + this.leaseMs), isoAt(now)).then(
          (held) => {
            if (!held) {
              log.warn('lost the lease of a running task: stopping it');
              abort.abort();
            }
          },
          (e: unknown) => log.warn({ err: e }, 'could not renew a task lease'),
        );
      },
      Math.max(50, Math.floor(this.leaseMs / 3)),
    );
    heartbeat.unref();
    try {
      if (!kind) {
        await this.end(task, { state: 'failed', error: `no such task kind: ${task.kind}` }, log);
        return;
      }
      if (task.attempts > task.max_attempts) {
        // Each earlier run ended without a word: its worker died or hung until the lease expired.
        await this.giveUp(
          task,
          kind,
          task.last_error ?? `its worker stopped while running it, ${task.attempts - 1} times`,
          log,
        );
        return;
      }
      let result: TaskResult;
      try {
        result = await kind.run(this.d, {
          task,
          signal: abort.signal,
          log,
          ...(this.waits ? { waits: this.waits } : {}),
        });
      } catch (e) {
        const error = errorText(e);
        if (task.attempts >= task.max_attempts) {
          await this.giveUp(task, kind, error, log);
          return;
        }
        const delay = backoffMs(
          task.attempts,
          this.d.config.worker.backoffMs,
          this.d.config.worker.backoffMaxSeconds * 1000,
        );
        log.warn({ err: error, retryInMs: delay }, 'task failed; retrying');
        await this.end(task, { state: 'pending', runAt: isoAt(clockOf(this.d) + delay), error }, log);
        return;
      }
      if (result && typeof result.again === 'number') {
        const me = this.running.get(task.id)!;
        const again = me.hurried ? 0 : result.again;
        await this.end(task, { state: 'pending', runAt: isoAt(clockOf(this.d) + again), fresh: true }, log);
        // From now on a hurry finds the row pending; one that came while it was written is carried out here.
        me.settled = true;
        if (again && me.hurried) await hurryTask(this.d.db, task.kind, task.subject, isoAt(clockOf(this.d)));
        return;
      }
      await this.end(task, { state: 'done' }, log);
    } catch (e) {
      // The database itself failed us: the lease runs out and another run takes the task over.
      log.error({ err: e }, 'could not record the end of a task');
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async giveUp(task: TaskRow, kind: TaskKind, error: string, log: Logger): Promise<void> {
    if (!(await this.end(task, { state: 'failed', error }, log))) return;
    log.error({ err: error, attempts: task.attempts }, 'task failed for good');
    await kind.gaveUp?.(this.d, task, error);
  }

  private async end(task: TaskRow, end: Parameters<typeof finishTask>[3], log: Logger): Promise<boolean> {
    const ok = await finishTask(this.d.db, task.id, this.id, end, isoAt(clockOf(this.d)));
    if (!ok) log.warn({ end: end.state }, 'the task was taken over meanwhile; its end is not recorded by this worker');
    return ok;
  }
}
