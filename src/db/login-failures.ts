import type { Queryable } from './knex.js';

/** Fixed-window failure counter per submitted username. */
export interface FailureWindow { failures: number; windowStartMs: number }

export async function getFailures(db: Queryable, username: string): Promise<FailureWindow | undefined> {
  const r = await db('login_failures').where({ username }).first();
  return r ? { failures: Number(r.failures), windowStartMs: Number(r.window_start_ms) } : undefined;
}

/** Adds one failure, starting a new window when the old one has ended. */
export async function recordFailure(db: Queryable, username: string, nowMs: number, windowMs: number): Promise<FailureWindow> {
  return db.transaction(async (trx) => {
    const cur = await getFailures(trx, username);
    const next = !cur || nowMs - cur.windowStartMs >= windowMs
      ? { failures: 1, windowStartMs: nowMs }
      : { failures: cur.failures + 1, windowStartMs: cur.windowStartMs };
    await trx('login_failures')
      .insert({ username, failures: next.failures, window_start_ms: next.windowStartMs })
      .onConflict('username').merge();
    return next;
  });
}

export async function clearFailures(db: Queryable, username: string): Promise<void> {
  await db('login_failures').where({ username }).delete();
}
