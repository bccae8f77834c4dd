import type { Queryable } from './knex.js';

/** Fixed-window failure counter per submitted username. */
export interface FailureWindow { failures: number; windowStartMs: number }

export async function getFailures(db: Queryable, username: string): Promise<FailureWindow | undefined> {
  const r = await db('login_failures').where({ username }).first();
  return r ? { failures: Number(r.failures), windowStartMs: Number(r.window_start_ms) } : undefined;
}

/**
 * Adds one failure, starting a new window when the old one has ended. One atomic upsert statement (no explicit
 * transaction): a login storm costs one write per failure.
 */
export async function recordFailure(db: Queryable, username: string, nowMs: number, windowMs: number): Promise<FailureWindow> {
  const expired = nowMs - windowMs;
  const rows = await db('login_failures')
    .insert({ username, failures: 1, window_start_ms: nowMs })
    .onConflict('username')
    .merge({
      failures: db.raw('CASE WHEN login_failures.window_start_ms <= ? THEN 1 ELSE login_failures.failures + 1 END', [expired]),
      window_start_ms: db.raw('CASE WHEN login_failures.window_start_ms <= ? THEN ? ELSE login_failures.window_start_ms END', [expired, nowMs]),
    })
    .returning(['failures', 'window_start_ms']);
  const r = rows[0] as { failures: number | string; window_start_ms: number | string };
  return { failures: Number(r.failures), windowStartMs: Number(r.window_start_ms) };
}

export async function clearFailures(db: Queryable, username: string): Promise<void> {
  await db('login_failures').where({ username }).delete();
}
