/**
 * Typed errors with stable codes. Every part of Kiln throws these; each front door (HTTP error handler, glue CLI,
 * SDK CLI) maps the code to its own channel (HTTP status, JSON on stderr + exit code). The `message` is safe to
 * show a user; `detail` is for the log only.
 */
export const ERROR_CODES = {
  invalid_input: 422,
  bad_request: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  /** The REST API: a known path asked with a method it does not take (the answer names those it takes). */
  method_not_allowed: 405,
  conflict: 409,
  /** An idempotency key sent again with a different request (another Dockerfile): it names one request only. */
  idempotency_key_reused: 422,
  /** A per-user storage quota would be exceeded (Dockerfile versions, build contexts, artifacts). */
  quota_exceeded: 409,
  too_large: 413,
  rate_limited: 429,
  backend_unavailable: 503,
  /** The server's disk (or its database's) is full: nothing was saved. */
  insufficient_storage: 507,
  timeout: 504,
  limit_exceeded: 422,
  policy_violation: 422,
  build_failed: 500,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly detail?: unknown;
  constructor(code: ErrorCode, message: string, opts: { detail?: unknown; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KilnError';
    this.code = code;
    this.detail = opts.detail;
  }
  get httpStatus(): number {
    return ERROR_CODES[this.code];
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export const invalidInput = (message: string, detail?: unknown) => new KilnError('invalid_input', message, { detail });
export const notFound = (what = 'Not found') => new KilnError('not_found', what);
export const conflict = (message: string) => new KilnError('conflict', message);

export function isKilnError(e: unknown, code?: ErrorCode): e is KilnError {
  return e instanceof KilnError && (code === undefined || e.code === code);
}

/** Wraps anything thrown into a KilnError without leaking internals into `message`. */
export function toKilnError(e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  return new KilnError('internal', 'Internal error', { cause: e });
}
