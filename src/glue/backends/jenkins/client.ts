import { Readable } from 'node:stream';
import type Jenkins from 'jenkins';
import type { JenkinsError } from 'jenkins';
import { KilnError } from '../../../shared/errors.js';

/**
 * A thin, typed wrapper over the unmaintained `jenkins@1.1.0` client that fixes its gaps (JENKINS-REST.md §1, §8)
 * and turns every failure into a KilnError:
 * - queue cancel: Jenkins answers 204 since 2.211 but the client requires 302 and throws; we confirm by reading the item.
 * - build trigger: a 303 (identical item already queued) is an error to the client; we take its Location instead.
 *   A Location without the trailing slash gives the client NaN; we return null and let the caller search.
 * - artifacts: the client has no download call; we GET them ourselves with the same credentials and a Range header.
 * Errors: no connection / timeout / 5xx => backend_unavailable; 404 => not_found; 409 => conflict; other 400 => the
 * X-Error text as conflict (e.g. "already exists") so callers can name it.
 */

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ECONNABORTED',
]);

export interface QueueItemJson {
  _class: string;
  id: number;
  why: string | null;
  inQueueSince: number;
  cancelled?: boolean;
  executable?: { number: number } | null;
  task: { name: string; url?: string };
  actions?: Array<{ _class?: string; parameters?: Array<{ name: string; value: unknown }> }>;
}

export interface BuildJson {
  number: number;
  building: boolean;
  result: string | null;
  timestamp: number;
  duration: number;
  queueId?: number;
  artifacts: Array<{ relativePath: string; fileName: string }>;
  /** "Keep this build forever": the build discarder skips it (a Kiln pin). */
  keepLog?: boolean;
  actions?: Array<{
    _class?: string;
    parameters?: Array<{ name: string; value: unknown }>;
    causes?: Array<{ _class?: string }>;
  }>;
}

export function paramOf(actions: QueueItemJson['actions'], name: string): string | undefined {
  for (const a of actions ?? []) for (const p of a?.parameters ?? []) if (p?.name === name) return String(p.value);
  return undefined;
}

export function statusOf(e: unknown): number | undefined {
  const err = e as JenkinsError & { statusCode?: number };
  return err?.res?.statusCode ?? (typeof err?.statusCode === 'number' ? err.statusCode : undefined);
}

export function isUnreachable(e: unknown): boolean {
  const err = e as {
    code?: string;
    isTimeout?: boolean;
    isAbort?: boolean;
    cause?: { code?: string };
    message?: string;
    res?: unknown;
  };
  if (!err || typeof err !== 'object') return false;
  if (err.isTimeout || err.isAbort) return true;
  if (err.code && NETWORK_CODES.has(err.code)) return true;
  if (err.cause?.code && NETWORK_CODES.has(err.cause.code)) return true;
  return !err.res && /socket hang up|ECONNREFUSED|ECONNRESET|connect|timed out/i.test(err.message ?? '');
}

/** Maps anything the client throws to a KilnError, naming the operation in the log detail only. */
export function mapError(e: unknown, what: string): KilnError {
  if (e instanceof KilnError) return e;
  const status = statusOf(e);
  const err = e as JenkinsError;
  if (isUnreachable(e))
    return new KilnError('backend_unavailable', 'Jenkins cannot be reached; try again later', {
      cause: e,
      detail: { what },
    });
  if (err?.notFound || status === 404) return new KilnError('not_found', `${what}: not found in Jenkins`, { cause: e });
  if (status === 409)
    return new KilnError('conflict', `${what}: Jenkins refused it in the job's current state (is the job disabled?)`, {
      cause: e,
    });
  if (status === 400) {
    const header = err.res?.headers?.['x-error'];
    const msg = typeof header === 'string' ? header.replace(/\?/g, '"') : 'bad request';
    return new KilnError('conflict', `${what}: ${msg}`, { cause: e });
  }
  if (status === 401 || status === 403) {
    return new KilnError(
      'backend_unavailable',
      "Jenkins refused the glue's credentials (check glue.jenkins.user and token)",
      { cause: e, detail: { what, status } },
    );
  }
  if (status !== undefined && status >= 500)
    return new KilnError('backend_unavailable', 'Jenkins failed to answer; try again later', {
      cause: e,
      detail: { what, status },
    });
  return new KilnError('internal', `${what} failed`, { cause: e, detail: { what, status, message: err?.message } });
}

export interface ApiOptions {
  baseUrl: string; // no trailing slash
  authorization: string;
  timeoutMs: number;
}

export class JenkinsApi {
  constructor(
    readonly client: Jenkins,
    private readonly opts: ApiOptions,
  ) {}

  async call<T>(what: string, fn: (c: Jenkins) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client);
    } catch (e) {
      throw mapError(e, what);
    }
  }

  /**
   * POST buildWithParameters. Returns the queue item id and whether Jenkins made a new item (false for a 303: an
   * identical item was already queued). null id when the Location could not be read.
   */
  async trigger(
    name: string,
    parameters: Record<string, string>,
    delay: string,
  ): Promise<{ id: number | null; created: boolean }> {
    try {
      const id = await this.client.job.build(name, { parameters, delay });
      return { id: Number.isSafeInteger(id) && id > 0 ? id : null, created: true };
    } catch (e) {
      if (statusOf(e) === 303) {
        const loc = (e as JenkinsError).res?.headers?.location;
        const m = typeof loc === 'string' ? /\/queue\/item\/([0-9]+)\/?$/.exec(loc) : null;
        return { id: m ? Number(m[1]) : null, created: false };
      }
      throw mapError(e, 'job.build');
    }
  }

  /** Cancels a queued item; true if it ended cancelled, false if it had already left the queue to run. */
  async cancelQueueItem(id: number): Promise<boolean> {
    try {
      await this.client.queue.cancel(id);
    } catch (e) {
      // 204 (Jenkins >= 2.211) reaches us as "failed to cancel"; a real failure shows in the item below.
      const status = statusOf(e);
      if (isUnreachable(e) || (status !== undefined && status !== 204 && status !== 302))
        throw mapError(e, 'queue.cancel');
    }
    const item = (await this.call('queue.item', (c) => c.queue.item(id))) as QueueItemJson;
    return item.cancelled === true;
  }

  /** A plain GET with the glue's credentials, for the few endpoints node-jenkins has no call for (whoAmI, script). */
  async get(path: string): Promise<{ status: number; headers: Headers; text: string }> {
    try {
      const res = await fetch(`${this.opts.baseUrl}${path}`, {
        headers: { authorization: this.opts.authorization },
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      return { status: res.status, headers: res.headers, text: await res.text() };
    } catch (e) {
      throw new KilnError('backend_unavailable', 'Jenkins cannot be reached; try again later', { cause: e });
    }
  }

  /**
   * A plain POST with the glue's credentials (an API token: Jenkins asks no crumb of one), for the few actions
   * node-jenkins has no call for (toggleLogKeep). Redirects are answers here (Jenkins forwards to the previous page),
   * never followed. A failure maps as the client's do.
   */
  async post(path: string, what: string): Promise<number> {
    let res: Response;
    try {
      res = await fetch(`${this.opts.baseUrl}${path}`, {
        method: 'POST',
        headers: { authorization: this.opts.authorization },
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      await res.body?.cancel();
    } catch (e) {
      throw new KilnError('backend_unavailable', 'Jenkins cannot be reached; try again later', { cause: e });
    }
    if (res.status >= 400)
      throw mapError(Object.assign(new Error(`HTTP ${res.status}`), { statusCode: res.status }), what);
    return res.status;
  }

  /** GET an artifact from a byte offset. Uses Range; if Jenkins ignores it (200), skips the bytes itself. */
  async artifact(path: string, offset: number): Promise<Readable> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.opts.timeoutMs);
    let res: Response;
    try {
      res = await fetch(`${this.opts.baseUrl}${path}`, {
        headers: { authorization: this.opts.authorization, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
        redirect: 'manual',
        signal: ac.signal,
      });
    } catch (e) {
      clearTimeout(timer);
      throw new KilnError('backend_unavailable', 'Jenkins cannot be reached; try again later', { cause: e });
    }
    clearTimeout(timer);
    if (res.status === 416) {
      await res.body?.cancel();
      return Readable.from([]);
    }
    if (res.status === 404) {
      await res.body?.cancel();
      throw new KilnError('not_found', 'artifact not found in Jenkins');
    }
    if (res.status !== 200 && res.status !== 206) {
      await res.body?.cancel();
      throw mapError(
        Object.assign(new Error(`artifact: HTTP ${res.status}`), { res: { statusCode: res.status, headers: {} } }),
        'build.artifact',
      );
    }
    const body = res.body ? Readable.fromWeb(res.body as import('node:stream/web').ReadableStream) : Readable.from([]);
    if (res.status === 206 || offset === 0) return body;
    let skip = offset;
    async function* skipper(src: Readable) {
      for await (const chunk of src) {
        const b = chunk as Buffer;
        if (skip >= b.length) {
          skip -= b.length;
          continue;
        }
        yield skip > 0 ? b.subarray(skip) : b;
        skip = 0;
      }
    }
    return Readable.from(skipper(body));
  }

  /**
   * An artifact's size (the build JSON lists artifacts without sizes): HEAD, else a one-byte Range GET read from
   * Content-Range, else the Content-Length of a GET whose body is dropped. undefined if none says.
   */
  async artifactSize(path: string): Promise<number | undefined> {
    const url = `${this.opts.baseUrl}${path}`;
    const headers = { authorization: this.opts.authorization };
    const num = (v: string | null | undefined) => (v && /^[0-9]+$/.test(v) ? Number(v) : undefined);
    try {
      const head = await fetch(url, {
        method: 'HEAD',
        headers,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      if (head.status === 404) return undefined;
      const len = head.ok ? num(head.headers.get('content-length')) : undefined;
      if (len !== undefined) return len;
      const get = await fetch(url, {
        headers: { ...headers, range: 'bytes=0-0' },
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      await get.body?.cancel();
      if (get.status === 206) return num(/\/([0-9]+)$/.exec(get.headers.get('content-range') ?? '')?.[1]);
      return get.status === 200 ? num(get.headers.get('content-length')) : undefined;
    } catch (e) {
      throw new KilnError('backend_unavailable', 'Jenkins cannot be reached; try again later', { cause: e });
    }
  }
}
