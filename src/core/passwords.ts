import { randomBytes } from 'node:crypto';
import { hash, verify, type Options } from '@node-rs/argon2';
import { KilnError } from '../shared/errors.js';

/** argon2id at the ASVS 5 minimum (m=19 MiB, t=2, p=1). `algorithm: 2` is Argon2id (a const enum upstream). */
export const ARGON2_OPTIONS: Options = {
  algorithm: 2 as Options['algorithm'],
  memoryCost: 19456,
  timeCost: 2,
  parallelism: 1,
};

/** Counting semaphore: at most `max` holders, at most `maxWaiting` queued; beyond that callers are refused. */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(
    private readonly max: number,
    private readonly maxWaiting: number,
  ) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) {
      if (this.waiting.length >= this.maxWaiting)
        throw new KilnError('rate_limited', 'The server is busy; try again in a moment.', {
          detail: { retryAfterSeconds: 2 },
        });
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next)
        next(); // hand the slot over without releasing it
      else this.active--;
    }
  }
  get inUse(): number {
    return this.active;
  }
  get queued(): number {
    return this.waiting.length;
  }
}

/**
 * Hashes and verifies passwords with a cap on concurrent argon2 runs: memory-hard hashing on unauthenticated
 * routes is otherwise a cheap way to exhaust memory and CPU.
 */
export class PasswordHasher {
  readonly sem: Semaphore;
  private dummy: Promise<string> | undefined;
  constructor(concurrency: number, maxWaiting = 256) {
    this.sem = new Semaphore(Math.max(1, concurrency), maxWaiting);
  }
  hash(password: string): Promise<string> {
    return this.sem.run(() => hash(password, ARGON2_OPTIONS));
  }
  async verify(stored: string, password: string): Promise<boolean> {
    return this.sem.run(async () => {
      try {
        return await verify(stored, password);
      } catch {
        return false;
      }
    });
  }
  /** Computes the dummy hash ahead of the first login, so that login costs the same as later ones. */
  async prime(): Promise<void> {
    this.dummy ??= hash(randomBytes(16).toString('hex'), ARGON2_OPTIONS);
    await this.dummy;
  }
  /** Spends the same work as a real verification, for unknown or disabled users (no timing oracle). */
  async verifyDummy(password: string): Promise<false> {
    this.dummy ??= hash(randomBytes(16).toString('hex'), ARGON2_OPTIONS);
    await this.verify(await this.dummy, password);
    return false;
  }
}

/** A password for a generated account: 24 characters of base64url (144 bits). */
export const generatePassword = (): string => randomBytes(18).toString('base64url');
