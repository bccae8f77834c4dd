import type { NextFunction, Request, RequestHandler, Response } from 'express';
import helmet from 'helmet';
import { csrfSync } from 'csrf-sync';
import { isDiskFull } from '../db/knex.js';
import { KilnError } from '../shared/errors.js';

/** helmet with Kiln's policy: scripts only from our origin, no framing, one-year HSTS, no referrer. */
export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        objectSrc: ["'none'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'self'"],
      },
    },
    strictTransportSecurity: { maxAge: 31536000, includeSubDomains: true },
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginEmbedderPolicy: false,
  });
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

const WILDCARD = new Set(['0.0.0.0', '::', '[::]', '']);
const withPort = (host: string, port: number): string[] => {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return port === 80 ? [h, `${h}:80`] : [`${h}:${port}`];
};

/**
 * The Host names this site answers to: the public URL's host when one is set, the loopback names with the port it
 * listens on, and the listen address itself when it is a specific one. `port` is read per request because a test
 * server learns its port only after listening.
 */
export function allowedHosts(opts: { publicUrl?: URL; listenHost: string; port: () => number }): () => Set<string> {
  let made: { port: number; hosts: Set<string> } | undefined;
  return () => {
    const port = opts.port();
    if (made?.port === port) return made.hosts;
    const hosts = ['localhost', '127.0.0.1', '::1'].flatMap((h) => withPort(h, port));
    if (!WILDCARD.has(opts.listenHost)) hosts.push(...withPort(opts.listenHost.toLowerCase(), port));
    if (opts.publicUrl) hosts.push(opts.publicUrl.host.toLowerCase());
    made = { port, hosts: new Set(hosts) };
    return made.hosts;
  };
}

/**
 * DNS rebinding guard: a page on an attacker's domain whose name later resolves to this server sends its own name
 * as Host, and the browser treats our answers as same-origin with it. Every request whose Host is not one of ours
 * is refused (421) before anything else runs, so neither the answer nor the Origin check (which trusts Host when no
 * public URL is set) ever sees a foreign name.
 */
export function hostAllowList(allowed: () => Set<string>): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction) => {
    const host = req.headers.host?.toLowerCase();
    if (host !== undefined && allowed().has(host)) return next();
    next(
      new KilnError(
        'bad_request',
        'This server does not answer to that host name. Use its public address (set KILN_WEB_PUBLIC_URL if this is it) or localhost.',
        { detail: { status: 421 } },
      ),
    );
  };
}

/**
 * Second CSRF line behind the token: a state-changing request that says it comes from another site is refused
 * before any body is read. Sec-Fetch-Site decides when present (every current browser sends it). Otherwise the
 * Origin must match; note that with `Referrer-Policy: no-referrer` Chromium sends `Origin: null` even for
 * same-origin form posts, which is why Sec-Fetch-Site is checked first. Clients that send neither header (curl,
 * scripts) still need the session's token.
 */
export function sameOriginOnly(expectedOrigin: (req: Request) => string): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (SAFE.has(req.method)) return next();
    const site = req.get('sec-fetch-site');
    if (site !== undefined) {
      return site === 'same-origin' || site === 'none'
        ? next()
        : next(new KilnError('forbidden', 'Cross-site request refused.'));
    }
    const origin = req.get('origin');
    if (origin !== undefined && origin !== expectedOrigin(req)) {
      return next(new KilnError('forbidden', 'Cross-site request refused.'));
    }
    next();
  };
}

/** Synchronizer-token CSRF (token in the session; forms send `_csrf`, scripts send `X-CSRF-Token`). */
export function csrf() {
  const cs = csrfSync({
    getTokenFromRequest: (req) => {
      const h = req.headers['x-csrf-token'];
      if (typeof h === 'string') return h;
      const b = (req.body as Record<string, unknown> | undefined)?._csrf;
      return typeof b === 'string' ? b : undefined;
    },
  });
  const protect: RequestHandler = (req, _res, next) => {
    if (SAFE.has(req.method)) return next();
    if (!cs.isRequestValid(req))
      return next(new KilnError('forbidden', 'The form expired or is invalid; reload the page and try again.'));
    next();
  };
  /**
   * The session's token; a new one is stored before it is handed out. express-session saves a session only once the
   * response is written, and a failed save then cannot change the answer: the page (or /api/csrf) would carry a token
   * the next POST does not find, a 403 for no reason the user can see. Rejects when the store cannot keep it.
   */
  const issue = async (req: Request): Promise<string> => {
    const had: unknown = cs.getTokenFromState(req);
    if (typeof had === 'string') return had;
    const t = cs.generateToken(req);
    try {
      await new Promise<void>((resolve, reject) => req.session.save((err: unknown) => (err ? reject(err) : resolve())));
    } catch (err) {
      cs.revokeToken(req);
      throw isDiskFull(err)
        ? err
        : new KilnError('backend_unavailable', 'Your session could not be saved; try again in a moment.', {
            cause: err,
            detail: { retryAfterSeconds: 1 },
          });
    }
    return t;
  };
  /** Puts a token in the session without saving it, for a caller that saves the session itself (a login). */
  const seed = (req: Request): void => {
    cs.generateToken(req);
  };
  return { protect, issue, seed };
}
