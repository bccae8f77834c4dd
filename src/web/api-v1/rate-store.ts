/**
 * express-rate-limit's counter for API tokens: fixed windows per key, in this process, on the app's clock (tests
 * move it instead of waiting for a window to pass). Each web instance counts on its own: with N instances behind a
 * balancer a token gets up to N times the limit, which is what the limit is for (a runaway script, not an attacker
 * who would need a token first).
 */
import type { ClientRateLimitInfo, Options, Store } from 'express-rate-limit';

export class ClockStore implements Store {
  private windowMs = 60_000;
  private readonly hits = new Map<string, { n: number; resetAt: number }>();
  private sweeps = 0;
  /** Counted in this process only. */
  readonly localKeys = true;

  constructor(private readonly now: () => number) {}

  init(options: Options): void {
    this.windowMs = options.windowMs;
  }

  get(key: string): ClientRateLimitInfo | undefined {
    const e = this.current(key);
    return e && { totalHits: e.n, resetTime: new Date(e.resetAt) };
  }

  increment(key: string): ClientRateLimitInfo {
    const t = this.now();
    // Expired windows go now and then, so keys of tokens no longer used do not pile up.
    if (++this.sweeps % 1000 === 0) for (const [k, e] of this.hits) if (e.resetAt <= t) this.hits.delete(k);
    const e = this.current(key) ?? { n: 0, resetAt: t + this.windowMs };
    e.n++;
    this.hits.set(key, e);
    return { totalHits: e.n, resetTime: new Date(e.resetAt) };
  }

  decrement(key: string): void {
    const e = this.current(key);
    if (e && e.n > 0) e.n--;
  }

  resetKey(key: string): void {
    this.hits.delete(key);
  }

  private current(key: string): { n: number; resetAt: number } | undefined {
    const e = this.hits.get(key);
    return e && e.resetAt > this.now() ? e : undefined;
  }
}
