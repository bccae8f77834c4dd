/**
 * Login throttling (checklist 1.2): slows guessing down without letting a guesser lock the owner out.
 *
 * Two kinds of bucket, both in the database (they survive restarts and are shared by every web instance):
 * - one per account and client. A client is the device cookie this account got on an earlier successful login in
 *   this browser, else the client's address. After `clientFreeFailures` failures each further attempt from that
 *   client waits `clientBaseDelayMs`, doubling per failure up to `clientMaxDelayMs` (429 + Retry-After, no hashing).
 *   A success clears it. So one address hammering an account slows itself down, and nobody else.
 * - one per account for clients without a device cookie of that account: at most `accountFailures` failures per
 *   `accountWindowMs` (ASVS: <= 100 an hour), whatever the number of addresses. Once it is spent, new browsers wait
 *   for the window, but the owner's browser (device cookie) still gets in: a soft limit, never a hard lock.
 *
 * An attempt is counted as a failure BEFORE the password is checked (reserved in one transaction with its rows
 * locked) and given back when the password was right. A burst of concurrent guesses therefore gets exactly as many
 * verifications as the buckets allow; reading the count first and writing it after the slow argon2 verification let
 * hundreds through.
 *
 * Buckets are keyed by the submitted name (existing or not), so the throttle answers the same for unknown users.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  deleteThrottleBucket,
  getThrottleBucket,
  pruneThrottleBuckets,
  refundThrottleFailure,
  withThrottleBuckets,
  type Db,
  type ThrottleBucket,
} from '../db/index.js';
import { KilnError } from '../shared/errors.js';
import type { LoginLimits } from './deps.js';

/** Who is trying: the device id of a valid device cookie for this account, else the address. */
export type LoginClient = { kind: 'device'; id: string } | { kind: 'ip'; ip: string };

/** What a successful reservation holds, for `settleLoginAttempt`. */
export interface LoginReservation {
  clientKey: string;
  account?: { key: string; sinceMs: number };
}

// The submitted name is arbitrary text: hashed into the key, so keys are bounded and unambiguous.
const nameId = (name: string): string => createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 32);
const accountKey = (name: string): string => `a:${nameId(name)}`;
const clientKey = (name: string, c: LoginClient): string =>
  `c:${nameId(name)}:${c.kind === 'device' ? `d:${c.id}` : `ip:${c.ip}`}`;

/** Wait before the next attempt after `failures` failures of one client. */
export function backoffMs(limits: LoginLimits, failures: number): number {
  if (failures < limits.clientFreeFailures) return 0;
  return Math.min(
    limits.clientMaxDelayMs,
    limits.clientBaseDelayMs * 2 ** Math.min(30, failures - limits.clientFreeFailures),
  );
}

const refuse = (waitMs: number, why: string): KilnError =>
  new KilnError('rate_limited', why, { detail: { retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) } });

/**
 * Counts one attempt of `client` on account `name` as a failure, or refuses it (rate_limited with retryAfterSeconds)
 * when a bucket says wait. Atomic: concurrent attempts see each other's counts.
 */
export async function reserveLoginAttempt(
  db: Db,
  limits: LoginLimits,
  nowMs: number,
  name: string,
  client: LoginClient,
): Promise<LoginReservation> {
  const cKey = clientKey(name, client);
  const aKey = client.kind === 'ip' ? accountKey(name) : undefined;
  type Outcome = { reservation: LoginReservation } | { waitMs: number; why: 'client' | 'account' };
  const outcome = await withThrottleBuckets<Outcome>(db, aKey ? [cKey, aKey] : [cKey], ([c, a]) => {
    if (c!.blockedUntilMs > nowMs)
      return { result: { waitMs: c!.blockedUntilMs - nowMs, why: 'client' as const }, write: [] };
    const write: ThrottleBucket[] = [];
    let account: LoginReservation['account'];
    if (a) {
      const fresh = nowMs - a.sinceMs >= limits.accountWindowMs;
      const failures = fresh ? 0 : a.failures;
      const sinceMs = fresh ? nowMs : a.sinceMs;
      if (failures >= limits.accountFailures)
        return { result: { waitMs: sinceMs + limits.accountWindowMs - nowMs, why: 'account' as const }, write: [] };
      write.push({ ...a, failures: failures + 1, sinceMs });
      account = { key: a.key, sinceMs };
    }
    const failures = (nowMs - c!.sinceMs >= limits.clientForgetMs ? 0 : c!.failures) + 1;
    const wait = backoffMs(limits, failures);
    write.push({ ...c!, failures, sinceMs: nowMs, blockedUntilMs: wait > 0 ? nowMs + wait : 0 });
    return { result: { reservation: { clientKey: cKey, account } }, write };
  });
  if ('reservation' in outcome) return outcome.reservation;
  throw outcome.why === 'client'
    ? refuse(outcome.waitMs, 'Too many failed logins from this browser or address; wait a little before trying again.')
    : refuse(
        outcome.waitMs,
        'Too many failed logins for this account from new browsers; try again later, or from a browser you have logged in with before.',
      );
}

/** A right password: the attempt was no failure. Clears the client's bucket and gives back the account's count. */
export async function settleLoginSuccess(db: Db, r: LoginReservation): Promise<void> {
  await deleteThrottleBucket(db, r.clientKey);
  if (r.account) await refundThrottleFailure(db, r.account.key, r.account.sinceMs);
}

/** For tests and the admin's eye: a bucket's current row. */
export const accountBucket = (db: Db, name: string): Promise<ThrottleBucket | undefined> =>
  getThrottleBucket(db, accountKey(name));

/** Drops buckets that can no longer refuse anything (run now and then; each costs a row). */
export function pruneLoginThrottle(db: Db, limits: LoginLimits, nowMs: number): Promise<number> {
  return pruneThrottleBuckets(db, nowMs - Math.max(limits.accountWindowMs, limits.clientForgetMs), nowMs);
}

/**
 * Device cookies: `<userId>.<deviceId>.<mac>`, the mac an HMAC-SHA256 with the server's session secret. Issued on a
 * successful login; it proves only "this browser has logged in to this account before" and grants nothing but its
 * own throttle bucket.
 */
const mac = (secret: string, userId: number, deviceId: string): string =>
  createHmac('sha256', secret).update(`kiln-device:${userId}:${deviceId}`).digest('base64url');

export function deviceCookieValue(secret: string, userId: number, deviceId: string): string {
  return `${userId}.${deviceId}.${mac(secret, userId, deviceId)}`;
}

export const newDeviceId = (): string => randomBytes(16).toString('base64url');

/** The device id of `value` if it is a genuine cookie for `userId`, else undefined. */
export function deviceIdFor(secret: string, value: unknown, userId: number): string | undefined {
  if (typeof value !== 'string' || value.length > 200) return undefined;
  const m = /^([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/.exec(value);
  if (!m || Number(m[1]) !== userId) return undefined;
  const want = Buffer.from(mac(secret, userId, m[2]!));
  const got = Buffer.from(m[3]!);
  return want.length === got.length && timingSafeEqual(want, got) ? m[2] : undefined;
}
