import type { Knex } from 'knex';
import { isPg, type Queryable } from './knex.js';

/**
 * Login throttle buckets (table `login_throttle`). A bucket is a row: `failures`, `since_ms` (window start or last
 * failure, as the caller uses it) and `blocked_until_ms`. The policy lives in src/web/services/login-throttle.ts;
 * this file only gives it rows that cannot change under it.
 */
export interface ThrottleBucket {
  key: string;
  failures: number;
  sinceMs: number;
  blockedUntilMs: number;
}

const norm = (r: Record<string, unknown>): ThrottleBucket => ({
  key: String(r.key),
  failures: Number(r.failures),
  sinceMs: Number(r.since_ms),
  blockedUntilMs: Number(r.blocked_until_ms),
});

/**
 * Runs `decide` on the buckets `keys` (missing ones as zeroed rows) with those rows locked until the transaction
 * ends, and writes back what it returns. This is what makes check-and-count atomic: two logins for the same bucket
 * cannot both read the old count. SQLite serialises whole transactions (one pooled connection, see knex.ts);
 * PostgreSQL locks the rows, in key order so that two reservations never wait on each other.
 */
export async function withThrottleBuckets<T>(
  db: Knex,
  keys: readonly string[],
  decide: (buckets: ThrottleBucket[]) => { result: T; write: ThrottleBucket[] },
): Promise<T> {
  const sorted = [...new Set(keys)].sort();
  return db.transaction(async (trx) => {
    await trx('login_throttle')
      .insert(sorted.map((key) => ({ key, failures: 0, since_ms: 0, blocked_until_ms: 0 })))
      .onConflict('key')
      .ignore();
    const q = trx('login_throttle').whereIn('key', sorted).orderBy('key');
    if (isPg(trx)) q.forUpdate();
    const rows = (await q).map(norm);
    const byKey = new Map(rows.map((r) => [r.key, r]));
    const { result, write } = decide(keys.map((k) => byKey.get(k)!));
    for (const b of write) {
      await trx('login_throttle')
        .where({ key: b.key })
        .update({ failures: b.failures, since_ms: b.sinceMs, blocked_until_ms: b.blockedUntilMs });
    }
    return result;
  });
}

export async function getThrottleBucket(db: Queryable, key: string): Promise<ThrottleBucket | undefined> {
  const r = await db('login_throttle').where({ key }).first();
  return r ? norm(r) : undefined;
}

export async function deleteThrottleBucket(db: Queryable, key: string): Promise<void> {
  await db('login_throttle').where({ key }).delete();
}

/**
 * Gives back one counted failure of a bucket, if it is still in the window it was counted in (a reservation that
 * turned out to be a correct password). One statement: concurrent give-backs and reservations cannot lose counts.
 */
export async function refundThrottleFailure(db: Queryable, key: string, sinceMs: number): Promise<void> {
  await db('login_throttle')
    .where({ key, since_ms: sinceMs })
    .andWhere('failures', '>', 0)
    .update({ failures: db.raw('failures - 1') });
}

/** Forgets buckets that can no longer refuse anything (older than `beforeMs` and not blocked). Returns how many. */
export async function pruneThrottleBuckets(db: Queryable, beforeMs: number, nowMs: number): Promise<number> {
  return Number(
    await db('login_throttle').where('since_ms', '<', beforeMs).andWhere('blocked_until_ms', '<=', nowMs).delete(),
  );
}
