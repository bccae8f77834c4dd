/**
 * The tasks table (migration 007): a durable queue of background work, claimed atomically by any number of workers
 * in any number of processes on one database. Only src/core/tasks uses it. Every function takes (db | trx) first,
 * so a use case enqueues in the same transaction as the change that needs the task: both commit, or neither.
 *
 * Claiming is ONE conditional UPDATE of the oldest due row: on PostgreSQL its candidate is picked with
 * `FOR UPDATE SKIP LOCKED` (concurrent claimers take different rows, none waits); on SQLite the statement holds the
 * database's write lock from its start (an UPDATE begins with it), so two processes claim one after the other and
 * the second sees the first's claim. The same WHERE clause guards the row in both: a row another worker claimed
 * meanwhile matches no longer. Finishing is fenced by the lease owner: a worker whose lease expired (and was taken
 * over) changes nothing.
 */
import type { Queryable } from './knex.js';
import { isPg, isUniqueViolation } from './knex.js';

export const TASK_STATES = ['pending', 'running', 'done', 'failed'] as const;
export type TaskState = (typeof TASK_STATES)[number];

export interface TaskRow {
  id: number;
  kind: string;
  subject: string;
  state: TaskState;
  lease_owner: string | null;
  lease_expires_at: string | null;
  attempts: number;
  max_attempts: number;
  next_run_at: string;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

const norm = (r: Record<string, unknown>): TaskRow => {
  const { live_key: _live, ...rest } = r;
  return {
    ...(rest as unknown as TaskRow),
    id: Number(r.id),
    attempts: Number(r.attempts),
    max_attempts: Number(r.max_attempts),
  };
};

const liveKey = (kind: string, subject: string): string => `${kind} ${subject}`;

/** Longest error text kept on a task (the last one only). */
const MAX_ERROR = 2000;

/**
 * Adds a task unless one of the same kind and subject is live (pending or running): enqueueing is idempotent, and
 * a burst of requests for the same work makes one task. Returns whether a row was added.
 */
export async function enqueueTask(
  db: Queryable,
  t: { kind: string; subject: string; runAt: string; maxAttempts: number; now: string },
): Promise<boolean> {
  const rows = await db('tasks')
    .insert({
      kind: t.kind,
      subject: t.subject,
      state: 'pending',
      live_key: liveKey(t.kind, t.subject),
      attempts: 0,
      max_attempts: t.maxAttempts,
      next_run_at: t.runAt,
      created_at: t.now,
      updated_at: t.now,
    })
    .onConflict('live_key')
    .ignore()
    .returning('id');
  return rows.length > 0;
}

/**
 * Claims the oldest due task: pending with `next_run_at <= now`, or running under a lease that expired at `now`
 * (its worker died or hung). Counts an attempt and leases it to `owner` until `leaseUntil`. `skipKinds`: kinds this
 * worker is running as many of as it may. Returns the claimed row, or undefined when nothing is due.
 */
export async function claimTask(
  db: Queryable,
  o: { owner: string; now: string; leaseUntil: string; skipKinds?: readonly string[] },
): Promise<TaskRow | undefined> {
  const due = (q: ReturnType<Queryable>) =>
    q
      .where((w) => w.where('state', 'pending').andWhere('next_run_at', '<=', o.now))
      .orWhere((w) => w.where('state', 'running').andWhere('lease_expires_at', '<', o.now));
  const candidate = db('tasks')
    .select('id')
    .where((q) => {
      due(q);
    })
    .orderBy('next_run_at')
    .orderBy('id')
    .limit(1);
  if (o.skipKinds?.length) candidate.whereNotIn('kind', o.skipKinds as string[]);
  if (isPg(db)) candidate.forUpdate().skipLocked();
  // `id = (scalar subquery)`: PostgreSQL runs it once (an InitPlan). With `id IN (subquery)` it may run it again
  // per row it scans, each run locking and returning the next row, and one claim took every due task.
  const rows = await db('tasks')
    .where('id', '=', candidate)
    .andWhere((q) => {
      due(q);
    })
    .update({
      state: 'running',
      lease_owner: o.owner,
      lease_expires_at: o.leaseUntil,
      attempts: db.raw('attempts + 1'),
      updated_at: o.now,
    })
    .returning('*');
  return rows[0] ? norm(rows[0] as Record<string, unknown>) : undefined;
}

/** Extends the lease of a task this owner still holds; false when it lost it (the task was taken over or ended). */
export async function extendLease(
  db: Queryable,
  id: number,
  owner: string,
  leaseUntil: string,
  now: string,
): Promise<boolean> {
  const n = await db('tasks')
    .where({ id, lease_owner: owner, state: 'running' })
    .update({ lease_expires_at: leaseUntil, updated_at: now });
  return Number(n) > 0;
}

export type TaskEnd =
  | { state: 'done' }
  | { state: 'failed'; error: string }
  /** Back to the queue: a retry (attempts kept, error recorded) or a repeat of work that is not finished (`fresh`). */
  | { state: 'pending'; runAt: string; error?: string; fresh?: boolean };

/** Ends this owner's run of a task. False when the lease was lost meanwhile: the row is not this worker's to change. */
export async function finishTask(
  db: Queryable,
  id: number,
  owner: string,
  end: TaskEnd,
  now: string,
): Promise<boolean> {
  const patch: Record<string, unknown> = {
    state: end.state,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
  };
  if (end.state === 'pending') {
    patch.next_run_at = end.runAt;
    patch.last_error = end.error?.slice(0, MAX_ERROR) ?? null;
    if (end.fresh) patch.attempts = 0;
  } else {
    patch.live_key = null;
    patch.finished_at = now;
    if (end.state === 'failed') patch.last_error = end.error.slice(0, MAX_ERROR);
  }
  try {
    const n = await db('tasks').where({ id, lease_owner: owner, state: 'running' }).update(patch);
    return Number(n) > 0;
  } catch (e) {
    // Only a running row keeps its live key, so a pending twin cannot exist; should one (a bug) collide, say so.
    if (isUniqueViolation(e)) throw new Error(`task ${id}: another live task has its kind and subject`, { cause: e });
    throw e;
  }
}

/**
 * Makes the pending task of this kind and subject due at `now` (its work is known to be waiting: a build it follows
 * changed). Returns whether one was pending; a running one is left to its worker, a missing one to nobody.
 */
export async function hurryTask(db: Queryable, kind: string, subject: string, now: string): Promise<boolean> {
  const n = await db('tasks')
    .where({ live_key: liveKey(kind, subject), state: 'pending' })
    .andWhere('next_run_at', '>', now)
    .update({ next_run_at: now, updated_at: now });
  return Number(n) > 0;
}

/** Whether a task of this kind and subject is pending or running. */
export async function isTaskLive(db: Queryable, kind: string, subject: string): Promise<boolean> {
  return (
    (await db('tasks')
      .where({ live_key: liveKey(kind, subject) })
      .first('id')) !== undefined
  );
}

export async function findTask(db: Queryable, id: number): Promise<TaskRow | undefined> {
  const r = await db('tasks').where({ id }).first();
  return r ? norm(r) : undefined;
}

/** Tasks of one subject (a build's), newest first. */
export async function listTasksOf(db: Queryable, subject: string, limit = 50): Promise<TaskRow[]> {
  const rows = await db('tasks').where({ subject }).orderBy('id', 'desc').limit(limit);
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Tasks in a state (e.g. the failed ones, for an admin), newest first. */
export async function listTasks(
  db: Queryable,
  o: { state?: TaskState; kind?: string; limit?: number } = {},
): Promise<TaskRow[]> {
  const q = db('tasks')
    .orderBy('id', 'desc')
    .limit(o.limit ?? 100);
  if (o.state) q.where({ state: o.state });
  if (o.kind) q.where({ kind: o.kind });
  const rows = await q;
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Removes finished tasks older than `before` (done ones only: failed ones stay visible). Returns how many. */
export async function pruneDoneTasks(db: Queryable, before: string): Promise<number> {
  return Number(await db('tasks').where({ state: 'done' }).andWhere('finished_at', '<', before).delete());
}

/**
 * Drops the pending (not yet claimed) tasks of `kind` for these subjects: a newer request supersedes them (an admin
 * who disables a job and then enables it wants it enabled, not both run in any order). Returns how many.
 */
export async function dropPendingTasks(db: Queryable, kind: string, subjects: readonly string[]): Promise<number> {
  if (subjects.length === 0) return 0;
  return Number(
    await db('tasks')
      .where({ kind, state: 'pending' })
      .whereIn('subject', subjects as string[])
      .delete(),
  );
}
