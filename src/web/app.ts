/**
 * The web application factory. Everything it needs comes in as arguments; nothing starts at import time.
 * Middleware order is part of the security design:
 *   target is a path -> host allow-list -> headers -> same-origin check -> body limits -> session (DB) -> passport
 *   -> session lifetime -> routes -> 404 -> the one error handler (registered last).
 */
import { randomBytes } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import session from 'express-session';
import nunjucks from 'nunjucks';
import passportPkg from 'passport';
import { rateLimit } from 'express-rate-limit';
import { Strategy as LocalStrategy } from 'passport-local';
import { closeReader, createReader, type Db } from '../db/index.js';
import type { FrozenConfig } from '../config/index.js';
import type { Logger } from '../shared/logger.js';
import { KilnError, isKilnError } from '../shared/errors.js';
import {
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  createCore,
  pruneLoginThrottle,
  type Core,
  type GluePort,
  type LoginLimits,
  type SessionUser,
  type UserActor,
  userActor,
} from '../core/index.js';
import { allowedHosts, csrf, hostAllowList, sameOriginOnly, securityHeaders } from './security.js';
import { CachedSessionStore } from './session-store.js';
import { readCookie, type CookieNames } from './routes/util.js';
import { publicDir as defaultPublicDir, viewsDir as defaultViewsDir } from './paths.js';
import { errorHandler, notFoundHandler, toHttpError } from './errors.js';
import { jsonBody, newBigUploadGate, type BigUploadGate } from './upload-limits.js';
import { authRoutes } from './routes/auth.js';
import { sshKeyRoutes } from './routes/ssh-keys.js';
import { pageRoutes } from './routes/pages.js';
import { apiRoutes } from './routes/api.js';
import { adminRoutes } from './routes/admin.js';
import { wellKnownRoutes } from './routes/well-known.js';
import { jobRoutes } from './routes/jobs.js';
import { buildRoutes, buildApiRoutes } from './routes/builds.js';
import { feedRoutes, followingPageRoutes } from './routes/following.js';
import { releaseRoutes } from './routes/releases.js';
import { exactBytes, humanBytes, humanDuration, shortTime } from './format.js';
import { opsRoutes } from './routes/ops.js';
import type { StreamCounts } from './live-stream.js';
import { apiV1 } from './api-v1/index.js';
import { httpRequestSeconds } from '../shared/metrics.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    // passport's req.user: the session's actor, with the epoch its session was issued in
    // eslint-disable-next-line @typescript-eslint/no-empty-object-type
    interface User extends SessionActor {}
  }
}
/** What a session resolves to (core.users.sessionActor): the user as an actor, and the session epoch. */
export type SessionActor = UserActor & { epoch: number };

declare module 'express-session' {
  interface SessionData {
    loginAt?: number;
  }
}

export interface AppOptions {
  config: FrozenConfig;
  db: Db;
  glue: GluePort;
  logger: Logger;
  /** Signs session cookies. Defaults to config.web.sessionSecret; startWeb keeps one in the database. */
  sessionSecret?: string;
  limits?: Partial<LoginLimits>;
  /** The clock of login times, the login throttle and task times (tests inject one); Date.now by default. */
  clock?: () => number;
  /** Hashes and verifies passwords; by default one bounded by config.web.hashConcurrency. */
  hasher?: PasswordHasher;
  /** Told when a request enqueued a task (the composition root wakes its worker). */
  onEnqueue?: () => void;
  /** How host names are resolved for address checks (webhook URLs, git sources); tests give their own. */
  lookup?: (host: string) => Promise<string[]>;
  viewsDir?: string;
  publicDir?: string;
}

/** What route modules share. */
export interface AppContext {
  core: Core;
  config: FrozenConfig;
  logger: Logger;
  /** Signs device cookies (the session secret). */
  deviceSecret: string;
  render: (req: Request, res: Response, view: string, ctx?: Record<string, unknown>, status?: number) => void;
  /** The session's CSRF token, stored before it is handed out (rejects when the session cannot be saved). */
  csrfToken: (req: Request) => Promise<string>;
  /** Puts a CSRF token in the session without saving it (for a login, which saves the fresh session itself). */
  seedCsrfToken: (req: Request) => void;
  protect: express.RequestHandler;
  passport: passportPkg.PassportStatic;
  /** True for /api/* and JSON bodies: errors and answers are JSON there, HTML elsewhere. */
  wantsJson: (req: Request) => boolean;
  loginLimiter: express.RequestHandler;
  /** Concurrency bound for requests carrying a build context (memory: each is held a few times over). */
  bigUploads: BigUploadGate;
  /** The app's clock (login times, the throttle, task times): Date.now unless a test injects one. */
  now: () => number;
  /** Live build streams open per user in this process (the page's and the REST API's, one limit). */
  liveStreams: StreamCounts;
}

export type KilnApp = Express & {
  /** Stops its timers and closes its read connections (call once the server has closed: no request reads then). */
  closeApp: () => Promise<void>;
  /** The port the server really listens on (config.web.port until told; port 0 picks one at listen time). */
  setListenPort: (port: number) => void;
};

/** A user row as the session's actor. */
const sessionActorOf = (u: {
  id: number;
  username: string;
  role: UserActor['role'];
  session_epoch: number;
}): SessionActor => ({ ...userActor(u), epoch: u.session_epoch });

export function createApp(opts: AppOptions): KilnApp {
  const { config, db, glue, logger } = opts;
  const limits: LoginLimits = { ...DEFAULT_LOGIN_LIMITS, ...opts.limits };
  const hasher = opts.hasher ?? new PasswordHasher(config.web.hashConcurrency);
  void hasher.prime().catch(() => undefined);

  const publicUrl = config.web.publicUrl ? new URL(config.web.publicUrl) : undefined;
  const secureCookie = publicUrl?.protocol === 'https:';
  if (!secureCookie)
    logger.warn(
      { publicUrl: config.web.publicUrl ?? null },
      'web.publicUrl is not https: session cookie is not Secure (loopback use only)',
    );
  let secret = opts.sessionSecret ?? config.web.sessionSecret;
  if (!secret) {
    logger.warn('no session secret configured: using a random one, sessions end when this process stops');
    secret = randomBytes(32).toString('hex');
  }
  const now = opts.clock ?? Date.now;
  const reader = createReader(db);
  const core = createCore({
    config,
    db,
    reader,
    glue,
    logger,
    hasher,
    limits,
    now,
    deviceSecret: secret,
    ...(opts.onEnqueue ? { onEnqueue: opts.onEnqueue } : {}),
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
  });

  const app = express() as unknown as KilnApp;
  app.disable('x-powered-by');
  // Every answer but /static is no-store (below): no cache holds one to revalidate, so no body is hashed for an ETag.
  app.set('etag', false);
  // Exact hop count: `true` would let any client choose its rate-limit bucket via X-Forwarded-For.
  app.set('trust proxy', config.web.trustProxyHops === 0 ? false : config.web.trustProxyHops);

  const views = new nunjucks.Environment(new nunjucks.FileSystemLoader(opts.viewsDir ?? defaultViewsDir()), {
    autoescape: true,
    throwOnUndefined: false,
  });
  views.addFilter('json', (v: unknown) => JSON.stringify(v));
  views.addFilter('bytes', humanBytes);
  views.addFilter('exactbytes', exactBytes);
  views.addFilter('duration', humanDuration);
  views.addFilter('time', shortTime);

  // The auth change log is checked once per request, by a check issued after the request arrived (auth-cache.ts).
  const arrived = new WeakMap<Request, number>();
  app.use((req: Request, _res: Response, next: NextFunction) => {
    arrived.set(req, core.auth.ticket());
    next();
  });
  // Every answer's latency, by route pattern (never the raw path: ids would make a series each) and status class.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = performance.now();
    res.on('finish', () => {
      const route = req.route
        ? `${req.baseUrl}${(req.route as { path: string }).path}`
        : req.originalUrl.startsWith('/static/')
          ? '/static'
          : 'unmatched';
      httpRequestSeconds.observe(
        { method: req.method, route, status: `${Math.floor(res.statusCode / 100)}xx` },
        (performance.now() - started) / 1000,
      );
    });
    next();
  });
  // Only a path is a request target here. `OPTIONS *` or a bare word would skip the session middleware (outside its
  // cookie path "/") and reach passport without a session, which throws (a 500); the absolute form, which only
  // proxies are sent, would pass the API's JSON-or-HTML decision by its prefix. Refused first, before anything reads them.
  app.use((req: Request, _res: Response, next: NextFunction) => {
    if (req.url.startsWith('/')) return next();
    next(new KilnError('bad_request', 'Bad request'));
  });
  if (!publicUrl && !['127.0.0.1', 'localhost', '::1'].includes(config.web.host)) {
    logger.warn(
      { host: config.web.host },
      'web.publicUrl is not set: only loopback names (and a specific listen address) are accepted as Host',
    );
  }
  let listenPort = config.web.port;
  app.setListenPort = (port: number) => {
    listenPort = port;
  };
  app.use(hostAllowList(allowedHosts({ publicUrl, listenHost: config.web.host, port: () => listenPort })));
  app.use(securityHeaders());
  // The Host header is one of ours by now (hostAllowList), so it may stand in for a missing public URL.
  const expectedOrigin = (req: Request): string => publicUrl?.origin ?? `${req.protocol}://${req.get('host') ?? ''}`;
  app.use(sameOriginOnly(expectedOrigin));
  app.get('/favicon.ico', (_req, res) => {
    res.redirect(301, '/static/favicon.svg');
  });
  app.use(
    '/static',
    express.static(opts.publicDir ?? defaultPublicDir(), {
      index: false,
      dotfiles: 'ignore',
      fallthrough: false,
      maxAge: '1h',
    }),
  );

  // The REST API takes bearer tokens only: it is mounted before the body parsers, the session and the CSRF check,
  // none of which it uses (a cookie sent to it is never read). Its router exists once the context does (below).
  const v1: { router?: express.Router } = {};
  app.use('/api/v1', (req: Request, res: Response, next: NextFunction) => v1.router!(req, res, next));
  // The Atom feeds: a feed reader's token in the URL is the credential, never a session (routes/following.ts).
  const feeds: { router?: express.Router } = {};
  app.use('/feeds', (req: Request, res: Response, next: NextFunction) => feeds.router!(req, res, next));

  const max = config.web.maxDockerfileBytes;
  app.use(express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 20 }));
  // JSON escapes can grow text up to 6x; validation then enforces the byte limit on the decoded text.
  const bigUploads = newBigUploadGate();
  const smallJson = jsonBody(max * 6 + 16 * 1024, bigUploads);
  // Creating or editing a Dockerfile over the API may carry a build context (base64, megabytes): those two routes
  // parse their own body with a larger limit, after the login and CSRF checks (routes/api.ts).
  const CONTEXT_JSON_PATHS = /^\/api\/dockerfiles(?:\/[1-9][0-9]{0,11})?$/;
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (req.method === 'POST' && CONTEXT_JSON_PATHS.test(req.path)) return next();
    smallJson(req, res, next);
  });

  const store = new CachedSessionStore(db, core.auth, logger, now);
  const cookieName = secureCookie ? '__Host-sid' : 'kiln.sid';
  app.set('kiln.cookie', {
    name: cookieName,
    secure: secureCookie,
    device: secureCookie ? '__Host-kiln-device' : 'kiln.device',
  } satisfies CookieNames);
  app.use(
    session({
      name: cookieName,
      secret,
      store,
      resave: false,
      saveUninitialized: false,
      rolling: true,
      unset: 'destroy',
      proxy: config.web.trustProxyHops > 0,
      cookie: {
        httpOnly: true,
        secure: secureCookie,
        sameSite: 'lax',
        path: '/',
        maxAge: config.web.sessionIdleMinutes * 60_000,
      },
    }),
  );

  const passport = new passportPkg.Passport() as unknown as passportPkg.PassportStatic;
  passport.use(
    new LocalStrategy(
      { usernameField: 'username', passwordField: 'password', passReqToCallback: true },
      (req, username, password, done) => {
        const deviceCookie = readCookie(req, (req.app.get('kiln.cookie') as CookieNames).device);
        core.users.authenticate({ username, password, ip: req.ip ?? '', deviceCookie }).then(
          ({ user: u, deviceId }) => {
            // `info` carries the device id to the login route, which sets the device cookie.
            const info = { message: '', deviceId };
            done(null, sessionActorOf(u), info);
          },
          (e: unknown) => (isKilnError(e, 'unauthenticated') ? done(null, false, { message: e.message }) : done(e)),
        );
      },
    ),
  );
  passport.serializeUser((user, done) => done(null, { id: user.id, epoch: user.epoch } satisfies SessionUser));
  passport.deserializeUser((req: Request, su: SessionUser, done: (err: unknown, u?: SessionActor | false) => void) => {
    core.users.sessionActor(su, arrived.get(req)).then((a) => done(null, a ?? false), done);
  });
  app.use(passport.initialize());
  app.use(passport.session());

  // Absolute session lifetime, on top of the idle timeout the cookie's rolling maxAge gives.
  const absoluteMs = config.web.sessionAbsoluteHours * 3600_000;
  app.use((req: Request, _res: Response, next: NextFunction) => {
    const at = req.session?.loginAt;
    if (req.user && (at === undefined || now() - at > absoluteMs)) {
      req.session.destroy(() => {
        req.user = undefined;
        next();
      });
      return;
    }
    next();
  });

  // Pages carry per-user data and a CSRF token: never stored by shared or browser caches.
  app.use((_req: Request, res: Response, next: NextFunction) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  const { protect, issue: issueToken, seed: seedCsrfToken } = csrf();
  // Multipart bodies are parsed by the one route that takes uploads, which checks the token after parsing.
  const MULTIPART_PATHS = /^\/dockerfiles(?:\/[1-9][0-9]{0,11})?$/;
  app.use((req: Request, _res: Response, next: NextFunction) => {
    if (req.method !== 'POST' || !req.is('multipart/form-data')) return protect(req, _res, next);
    if (!MULTIPART_PATHS.test(req.path)) return next(new KilnError('bad_request', 'Unexpected upload.'));
    next();
  });

  const wantsJson = (req: Request): boolean =>
    req.originalUrl.startsWith('/api/') || req.is('application/json') === 'application/json';
  const send = (
    req: Request,
    res: Response,
    status: number,
    view: string,
    ctx: Record<string, unknown>,
    csrfToken: string,
  ) =>
    res
      .status(status)
      .type('html')
      .send(views.render(view, { registrationOpen: config.web.registrationOpen, ...ctx, me: req.user, csrfToken }));
  const render: AppContext['render'] = (req, res, view, ctx = {}, status = 200) => {
    // Requests refused before the session middleware (origin check, static) have no session and get no token.
    (req.session ? issueToken(req) : Promise.resolve(''))
      .then(
        (t) => send(req, res, status, view, ctx, t),
        (err: unknown) => {
          // No form on this page could be sent, so none carries a token; the error page says why.
          const ke = toHttpError(err);
          logger.warn({ err, path: req.path }, 'session could not be saved');
          if (ke.retryAfterSeconds) res.set('Retry-After', String(ke.retryAfterSeconds));
          send(req, res, ke.status, 'error.njk', { status: ke.status, title: ke.title, message: ke.message }, '');
        },
      )
      .catch((e: unknown) => {
        logger.error({ err: e }, 'page failed to render');
        if (!res.headersSent) res.status(500).type('text/plain').send('Internal error');
      });
  };

  const loginLimiter = rateLimit({
    windowMs: limits.ipWindowMs,
    limit: limits.ipAttempts,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    // trust proxy is set to an exact hop count above; a stray X-Forwarded-For with 0 hops is simply ignored.
    validate: { xForwardedForHeader: false },
    handler: (req, _res, next, options) => {
      const resetMs = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const retryAfterSeconds = Math.max(
        1,
        Math.ceil(((resetMs ?? Date.now() + options.windowMs) - Date.now()) / 1000),
      );
      next(
        new KilnError('rate_limited', 'Too many attempts from your address; try again later.', {
          detail: { retryAfterSeconds },
        }),
      );
    },
  });

  const ctx: AppContext = {
    core,
    config,
    logger,
    deviceSecret: secret,
    render,
    csrfToken: issueToken,
    seedCsrfToken,
    protect,
    passport,
    wantsJson,
    loginLimiter,
    bigUploads,
    now,
    liveStreams: new Map(),
  };
  const mounted: Array<[string, express.Router]> = [
    ['', wellKnownRoutes(ctx)],
    ['', opsRoutes(ctx)],
    ['', authRoutes(ctx)],
    ['', sshKeyRoutes(ctx)],
    ['', adminRoutes(ctx)],
    ['/api', apiRoutes(ctx)],
    ['/api', buildApiRoutes(ctx)],
    ['', pageRoutes(ctx)],
    ['', jobRoutes(ctx)],
    ['', buildRoutes(ctx)],
    ['', releaseRoutes(ctx)],
    ['', followingPageRoutes(ctx)],
  ];
  for (const [prefix, router] of mounted) app.use(prefix || '/', router);
  const api = apiV1(ctx);
  v1.router = api.router;
  feeds.router = feedRoutes(ctx);
  // The route table, for the authorization test that replays every route as anonymous / other user / owner / admin.
  app.locals.routeTable = [...mounted, ['/api/v1', api.router] as const, ['/feeds', feeds.router] as const].flatMap(
    ([prefix, router]) =>
      (router.stack as Array<{ route?: { path: string; methods: Record<string, boolean> } }>)
        .filter((l) => l.route)
        .flatMap((l) =>
          Object.keys(l.route!.methods)
            .filter((m) => m !== '_all')
            .map((m) => ({ method: m.toUpperCase(), path: prefix + l.route!.path })),
        ),
  );
  app.use(notFoundHandler());
  app.use(errorHandler({ logger, render, wantsJson }));

  // Throttle buckets that can no longer refuse anything are dropped now and then (guessed names make rows).
  const prune = setInterval(() => {
    pruneLoginThrottle(db, limits, now()).catch((err: unknown) =>
      logger.warn({ err }, 'login throttle cleanup failed'),
    );
  }, 10 * 60_000);
  prune.unref();

  app.closeApp = async () => {
    store.close();
    clearInterval(prune);
    await closeReader(reader, db).catch((err: unknown) => logger.warn({ err }, 'read connections did not close'));
  };
  return app;
}
