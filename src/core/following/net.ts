/**
 * Reaching a user's webhook URL without reaching what the user must not: the URL is http(s) only, without
 * credentials; its host is resolved here and EVERY address it has must be public (src/shared/addresses.ts) unless
 * `webhooks.allowHosts` names the host or the address; then the request connects to exactly the address that was
 * checked (the socket's `lookup` answers with it), so DNS rebinding between the check and the connection cannot
 * move it. One request, no redirects followed, a deadline over the whole attempt, at most MAX_RESPONSE_BYTES of the
 * answer read.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { FrozenConfig } from '../../config/index.js';
import { checkedAddress, type Lookup } from '../../shared/addresses.js';
import { KilnError } from '../../shared/errors.js';

/** What is read of a receiver's answer (a status line is what counts; the body is kept for the deliveries list). */
export const MAX_RESPONSE_BYTES = 4096;
const MAX_URL = 2048;

const refused = (message: string) => new KilnError('invalid_input', message);

/** The webhook URL, parsed: http or https, a host, no user or password, no fragment. */
export function parseWebhookUrl(raw: unknown): URL {
  if (typeof raw !== 'string' || raw.trim() === '') throw refused('Give the webhook URL (http:// or https://).');
  const text = raw.trim();
  if (text.length > MAX_URL) throw refused(`The webhook URL is longer than ${MAX_URL} characters.`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f-\u009f]/.test(text)) throw refused('The webhook URL has spaces or control characters.');
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw refused('The webhook URL is not a URL.');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw refused('The webhook URL must be http:// or https://.');
  if (u.username || u.password)
    throw refused('The webhook URL must not hold a user or password: the signature authenticates Kiln.');
  if (!u.hostname) throw refused('The webhook URL has no host.');
  u.hash = '';
  return u;
}

/** The URL's host as a name or address (brackets of an IPv6 literal removed). */
const hostOf = (u: URL): string => u.hostname.replace(/^\[|\]$/g, '');

/**
 * Every address `u`'s host resolves to must be one Kiln may reach (or be allowed by `webhooks.allowHosts`); returns
 * the one to connect to.
 */
export const checkedWebhookAddress = (
  config: Pick<FrozenConfig, 'webhooks'>,
  u: URL,
  lookup: Lookup | undefined,
): Promise<string> =>
  checkedAddress(hostOf(u), {
    allowHosts: config.webhooks.allowHosts,
    ...(lookup ? { lookup } : {}),
    subject: "The webhook's host",
    refusedAction: 'send to',
    allowVariable: 'KILN_WEBHOOKS_ALLOW_HOSTS',
    unresolvedCode: 'invalid_input',
  });

export interface PostAnswer {
  status: number;
  /** The first bytes of the answer, as text (shown with the delivery). */
  body: string;
}

/**
 * POSTs `body` to `u` at `address` (checked by `checkedAddress`): one attempt, within `timeoutMs`, no redirect
 * followed (a 3xx is an answer like any other). Rejects on a network error or the deadline.
 */
export function postPinned(
  u: URL,
  address: string,
  headers: Record<string, string>,
  body: Buffer,
  timeoutMs: number,
): Promise<PostAnswer> {
  const family = net.isIPv6(address) ? 6 : 4;
  const pinned: net.LookupFunction = (_host, opts, cb) => {
    if ((opts as { all?: boolean }).all) (cb as never as (e: null, a: object[]) => void)(null, [{ address, family }]);
    else cb(null, address, family);
  };
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise<PostAnswer>((resolve, reject) => {
    const req = mod.request(
      {
        protocol: u.protocol,
        hostname: hostOf(u),
        port: u.port || undefined,
        path: `${u.pathname}${u.search}`,
        method: 'POST',
        agent: false,
        lookup: pinned,
        headers: { ...headers, 'content-length': String(body.length), connection: 'close' },
        // TLS is checked against the URL's name, whatever address was pinned.
        ...(u.protocol === 'https:' && net.isIP(hostOf(u)) === 0 ? { servername: hostOf(u) } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        const done = () => {
          clearTimeout(timer);
          res.destroy();
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8').slice(0, 500) });
        };
        res.on('data', (c: Buffer) => {
          if (n < MAX_RESPONSE_BYTES) chunks.push(c.subarray(0, MAX_RESPONSE_BYTES - n));
          n += c.length;
          if (n >= MAX_RESPONSE_BYTES) done();
        });
        res.on('end', done);
        res.on('error', done);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new KilnError('timeout', `No answer within ${Math.round(timeoutMs / 1000)} s.`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(body);
  });
}
