/**
 * `kiln client`'s side of the REST API v1: where Kiln is and the token (KILN_URL, KILN_TOKEN or KILN_TOKEN_FILE),
 * requests with retries, and every failure turned into a `ClientError` carrying the exit status the command ends
 * with. Node's fetch only. The server is trusted with the token and nothing else: the client builds every URL
 * itself from KILN_URL (never from a `url` in an answer) and follows no redirect, so the token goes nowhere else.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '../../shared/errors.js';
import { EXIT, exitStatusFor } from '../../shared/exit-status.js';
import type * as S from '../../web/api-v1/schemas.js';

export type Build = z.infer<typeof S.Build> & { queue?: z.infer<typeof S.BuildAnswer>['build']['queue'] };
export type Report = z.infer<typeof S.Report>;
export type Artifact = z.infer<typeof S.Artifact>;
export type LogChunk = z.infer<typeof S.LogChunk>;
export type Finding = { line: number; message: string };

/** What ended a command: its exit status and one line for people (the API's error, when there is one, for --json). */
export class ClientError extends Error {
  constructor(
    readonly exit: number,
    message: string,
    readonly api?: { code: string; message: string; details?: { findings?: Finding[] } & Record<string, unknown> },
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface ClientEnv {
  /** KILN_URL without a trailing slash; may carry a path prefix (a Kiln behind a proxy at /kiln). */
  base: string;
  token: string;
  /** How long failures that may pass (no connection, 429, 502-504) are retried before giving up. */
  retryForMs: number;
}

/** KILN_URL and KILN_TOKEN (or KILN_TOKEN_FILE, as every secret of Kiln's may come from a file). */
export function clientEnv(env: NodeJS.ProcessEnv, retryForMs: number): ClientEnv {
  const raw = env.KILN_URL;
  if (!raw) throw new ClientError(EXIT.usage, 'KILN_URL is not set (the Kiln site, e.g. https://kiln.example.org)');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ClientError(EXIT.usage, `KILN_URL is not a URL: ${raw.slice(0, 200)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new ClientError(EXIT.usage, 'KILN_URL must be an http or https URL');
  if (url.username || url.password || url.search || url.hash)
    throw new ClientError(EXIT.usage, 'KILN_URL must hold no user, password, query or fragment');
  let token = env.KILN_TOKEN;
  if (!token && env.KILN_TOKEN_FILE) {
    try {
      token = readFileSync(env.KILN_TOKEN_FILE, 'utf8').trim();
    } catch {
      throw new ClientError(EXIT.usage, `Cannot read KILN_TOKEN_FILE (${env.KILN_TOKEN_FILE})`);
    }
  }
  if (!token)
    throw new ClientError(EXIT.usage, 'KILN_TOKEN (or KILN_TOKEN_FILE) is not set: make one with `kiln user token`');
  // Printable ASCII only: anything else cannot be a Kiln token and would not survive an HTTP header.
  if (!/^[\x21-\x7e]{1,512}$/.test(token)) throw new ClientError(EXIT.usage, 'KILN_TOKEN is not a Kiln API token');
  return { base: url.href.replace(/\/+$/, ''), token, retryForMs };
}

const TRANSIENT = new Set([429, 502, 503, 504]);
const MAX_DELAY_MS = 10_000;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A live stream or a download this long without a byte is a dead connection (the server comments every 15 s). */
const STALL_MS = 60_000;

/** An abort signal that fires once STALL_MS pass without `touch()`; `stop()` ends it (and aborts, freeing the socket). */
export function stallGuard(): { signal: AbortSignal; touch(): void; stop(): void } {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const touch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ac.abort(), STALL_MS);
  };
  touch();
  return {
    signal: ac.signal,
    touch,
    stop: () => {
      clearTimeout(timer);
      ac.abort();
    },
  };
}

/** `connect ECONNREFUSED 127.0.0.1:1` out of undici's "fetch failed". */
export function networkReason(e: unknown): string {
  const cause = (e as { cause?: { message?: string; code?: string } }).cause;
  return cause?.message || cause?.code || (e as Error).message || String(e);
}

export interface RequestOptions {
  method?: string;
  body?: RequestInit['body'];
  headers?: Record<string, string>;
  /** Per attempt, the answer's body included; default 60 s; 0: none (streams, which watch for stalls instead). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Retry transient failures (the default; every request the client makes is safe to repeat). */
  retry?: boolean;
  /** The request carries the Dockerfile (its PUT): bad input is then the Dockerfile's refusal (EXIT.dockerfileRefused). */
  sendsDockerfile?: boolean;
}

/** A failure another attempt may cure: no connection, a cut answer, a timeout, 429, 502-504. */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly o: { retryAfterMs?: number; status?: number } = {},
  ) {
    super(message);
  }
}

export interface RetryOptions {
  /** One attempt only. */
  once?: boolean;
  /**
   * How far the work has got (bytes downloaded, the log's offset): while it moves between failures, the retry time
   * and the backoff start over, so a long download or a log cut now and then is resumed, not given up.
   */
  progress?: () => number | string;
}

export class KilnApi {
  constructor(readonly env: ClientEnv) {}

  get origin(): string {
    return new URL(this.env.base).origin;
  }

  /** One attempt: the answer if 2xx; a TransientError, or a ClientError for an answer that will not change. */
  async attempt(path: string, o: RequestOptions = {}): Promise<Response> {
    const headers = { ...o.headers, authorization: `Bearer ${this.env.token}` };
    const timeoutMs = o.timeoutMs ?? 60_000;
    const signals = [...(timeoutMs > 0 ? [AbortSignal.timeout(timeoutMs)] : []), ...(o.signal ? [o.signal] : [])];
    let res: Response;
    try {
      res = await fetch(`${this.env.base}/api/v1${path}`, {
        method: o.method ?? 'GET',
        headers,
        body: o.body,
        redirect: 'manual',
        signal: signals.length ? AbortSignal.any(signals) : undefined,
      });
    } catch (e) {
      throw new TransientError(`cannot reach Kiln at ${this.origin}: ${networkReason(e)}`);
    }
    if (res.ok) return res;
    throw await errorOf(res, this.origin, o.sendsDockerfile === true);
  }

  /** Runs `fn` again on TransientError until it succeeds or the retry time is spent (then: `unavailable`). */
  async retrying<T>(fn: () => Promise<T>, o: RetryOptions = {}): Promise<T> {
    let start = Date.now();
    let delay = 250;
    let seen = o.progress?.();
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        const now = o.progress?.();
        if (now !== seen) {
          seen = now;
          start = Date.now();
          delay = 250;
        }
        const wait = Math.min(e.o.retryAfterMs ?? delay, 60_000);
        if (o.once || Date.now() - start + wait > this.env.retryForMs)
          throw new ClientError(EXIT.unavailable, e.message);
        await sleep(wait);
        delay = Math.min(delay * 2, MAX_DELAY_MS);
      }
    }
  }

  /** A request's JSON answer, the request retried (with backoff and Retry-After) while failures may pass. */
  async json<T>(path: string, o: RequestOptions = {}): Promise<T> {
    return this.retrying(
      async () => {
        const res = await this.attempt(path, o);
        try {
          return (await res.json()) as T;
        } catch (e) {
          // A body cut off on its way is worth another try; a 2xx that is not JSON is not Kiln.
          if ((e as Error).name === 'SyntaxError')
            throw new ClientError(EXIT.unavailable, `Kiln at ${this.origin} did not answer JSON for ${path}`);
          throw new TransientError(`reading Kiln's answer failed: ${networkReason(e)}`);
        }
      },
      { once: o.retry === false },
    );
  }

  /** A build; with `wait`, the long poll: answered once its state is not `seen` (default: as it is now) or final. */
  async build(id: number, wait?: { seconds: number; seen?: string }): Promise<Build> {
    const q = wait ? `?wait=${wait.seconds}s${wait.seen ? `&seen=${wait.seen}` : ''}` : '';
    const r = await this.json<{ build: Build }>(`/builds/${id}${q}`, {
      timeoutMs: (wait?.seconds ?? 0) * 1000 + 60_000,
    });
    return r.build;
  }

  report(id: number): Promise<Report> {
    return this.json<Report>(`/builds/${id}/report`);
  }
}

/** A non-2xx answer as the error it means (src/shared/exit-status.ts); the API's `{"error": {...}}` when it sent one. */
async function errorOf(res: Response, origin: string, dockerfileSent: boolean): Promise<Error> {
  let api: ClientError['api'];
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) {
    const body = (await res.json().catch(() => undefined)) as { error?: ClientError['api'] } | undefined;
    if (body?.error && typeof body.error.code === 'string' && typeof body.error.message === 'string') api = body.error;
  } else await res.body?.cancel().catch(() => undefined);
  const said = api ? `${api.message} (HTTP ${res.status} ${api.code})` : `HTTP ${res.status} ${res.statusText}`;
  if (res.status >= 300 && res.status < 400)
    return new ClientError(
      EXIT.usage,
      `Kiln answered with a redirect to ${res.headers.get('location') ?? '?'}: set KILN_URL to the site's address`,
    );
  if (TRANSIENT.has(res.status)) {
    const after = Number(res.headers.get('retry-after'));
    return new TransientError(`Kiln at ${origin} is busy or unavailable: ${said}`, {
      status: res.status,
      ...(Number.isFinite(after) && after > 0 ? { retryAfterMs: after * 1000 } : {}),
    });
  }
  // By the status first: a proxy in front of Kiln answers these too, without Kiln's error body.
  if (res.status === 401) return new ClientError(EXIT.auth, `Kiln refused the token: ${said}`, api);
  if (res.status === 403) return new ClientError(EXIT.auth, `The token may not do this: ${said}`, api);
  if (res.status >= 500) return new ClientError(EXIT.unavailable, `Kiln failed: ${said}`, api);
  // A code this client does not know (a newer Kiln's) is still a refusal.
  const exit =
    api && Object.hasOwn(ERROR_CODES, api.code)
      ? exitStatusFor(api.code as ErrorCode, { dockerfileSent })
      : EXIT.refused;
  return new ClientError(exit, api?.code === 'policy_violation' ? api.message : `Kiln refused: ${said}`, api);
}
