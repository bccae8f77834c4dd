import { Router, type NextFunction, type Request, type Response } from 'express';
import { KilnError, isKilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { ANONYMOUS, deviceCookieValue } from '../../core/index.js';
import { renderAccount } from './account-page.js';
import { actorOf, readCookie, requireUser, safeNext, type CookieNames } from './util.js';

/**
 * Starts a fresh session for `user` (passport >= 0.6 regenerates it: new id, old one destroyed, no fixation), stamps
 * the login time, gives it its CSRF token, and saves before the caller answers. express-session's own save at the
 * end sends the headers first, and a client that follows the redirect at once races it:
 * - without this save the next request read the session without loginAt and ended it (seen on PostgreSQL);
 * - express-session saves a regenerated session once more after the headers whatever we do (its id is not the one
 *   the request came with). Had the next page added the CSRF token, that late save would overwrite it and the
 *   page's form would get 403 (seen under load). With the token in the session from the start, the late save
 *   writes what the next request also holds.
 */
function logInFresh(
  req: Request,
  user: Express.User,
  now: () => number,
  seedCsrfToken: (req: Request) => void,
): Promise<void> {
  return new Promise((resolve, reject) =>
    req.logIn(user, (e) => {
      if (e) return reject(e);
      req.session.loginAt = now();
      seedCsrfToken(req);
      req.session.save((e2) => (e2 ? reject(e2) : resolve()));
    }),
  );
}

/**
 * Marks this browser as one that has logged in to this account: its later attempts get their own throttle bucket,
 * so a guesser elsewhere cannot lock it out (services/login-throttle.ts). It outlives sessions and logouts.
 */
function rememberDevice(
  req: Request,
  res: Response,
  secret: string | undefined,
  userId: number,
  deviceId: string,
): void {
  const names = req.app.get('kiln.cookie') as CookieNames;
  if (!secret) return;
  res.cookie(names.device, deviceCookieValue(secret, userId, deviceId), {
    httpOnly: true,
    secure: names.secure,
    sameSite: 'strict',
    path: '/',
    maxAge: 180 * 24 * 3600_000,
  });
}

/** Register, log in, log out. Every POST here is rate-limited per IP before any hashing and carries a CSRF token. */
export function authRoutes(ctx: AppContext): Router {
  const { core, config, logger, deviceSecret, render, passport, wantsJson, loginLimiter, now, seedCsrfToken } = ctx;
  const r = Router();

  r.get('/login', (req, res) => {
    if (req.user) return res.redirect(303, safeNext(req.query.next));
    render(req, res, 'login.njk', { next: safeNext(req.query.next), registrationOpen: config.web.registrationOpen });
  });

  const login = (req: Request, res: Response, next: NextFunction): void => {
    const json = wantsJson(req);
    const target = safeNext((req.body as Record<string, unknown>)?.next ?? req.query.next);
    const fail = (e: KilnError): void => {
      if (json) return next(e);
      const detail = e.detail as { retryAfterSeconds?: number } | undefined;
      if (detail?.retryAfterSeconds) res.set('Retry-After', String(detail.retryAfterSeconds));
      render(
        req,
        res,
        'login.njk',
        {
          next: target,
          error: e.message,
          username: typeof req.body?.username === 'string' ? req.body.username.slice(0, 64) : '',
          registrationOpen: config.web.registrationOpen,
        },
        e.httpStatus,
      );
    };
    passport.authenticate(
      'local',
      { session: true },
      (err: unknown, user: Express.User | false, info?: { deviceId?: string }) => {
        // Throttled, or the right password of an account an admin has not approved yet: said on the login page.
        if (err)
          return isKilnError(err) && (err.code === 'rate_limited' || err.code === 'forbidden') ? fail(err) : next(err);
        if (!user) return fail(new KilnError('unauthenticated', 'Wrong username or password.'));
        if (info?.deviceId) rememberDevice(req, res, deviceSecret, user.id, info.deviceId);
        logInFresh(req, user, now, seedCsrfToken).then(() => {
          logger.info({ user: user.id }, 'login');
          if (json) return res.json({ user: { id: user.id, username: user.username, role: user.role } });
          res.redirect(303, target);
        }, next);
      },
    )(req, res, next);
  };
  r.post('/login', loginLimiter, login);
  r.post('/api/login', loginLimiter, login);

  const logout = (req: Request, res: Response, next: NextFunction): void => {
    const json = wantsJson(req);
    const cookie = req.app.get('kiln.cookie') as { name: string; secure: boolean };
    const done = (): void => {
      res.clearCookie(cookie.name, { path: '/', httpOnly: true, secure: cookie.secure, sameSite: 'lax' });
      if (json) res.json({ ok: true });
      else res.redirect(303, '/login');
    };
    if (!req.session) return done();
    req.logout({ keepSessionInfo: false }, (err) => {
      if (err) return next(err);
      // req.logout regenerated the session; destroy the fresh one too so nothing of it is left server-side.
      req.session.destroy((e2) => (e2 ? next(e2) : done()));
    });
  };
  r.post('/logout', logout);
  r.post('/api/logout', logout);

  r.get('/register', (req, res) => {
    if (!config.web.registrationOpen)
      throw new KilnError('forbidden', 'Registration is closed; ask an admin for an account.');
    render(req, res, 'register.njk', {});
  });

  const register = async (req: Request, res: Response): Promise<void> => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const json = wantsJson(req);
    try {
      if (!json && body.password !== body.password2) throw new KilnError('bad_request', 'The two passwords differ.');
      const u = await core.users.register(ANONYMOUS, body);
      logger.info({ user: u.id }, 'registered');
      if (json) {
        res.status(201).json({ user: { id: u.id, username: u.username, role: u.role, approved: u.approved } });
        return;
      }
      const notice = u.approved
        ? 'Account created. Please log in.'
        : 'Account created. An admin has to approve it before you can log in.';
      render(req, res, 'login.njk', { next: '/', notice, username: u.username, registrationOpen: true }, 201);
    } catch (e) {
      if (json || !isKilnError(e) || !['bad_request', 'invalid_input', 'conflict'].includes(e.code)) throw e;
      render(
        req,
        res,
        'register.njk',
        { error: e.message, username: typeof body.username === 'string' ? body.username.slice(0, 64) : '' },
        e.httpStatus,
      );
    }
  };
  r.post('/register', loginLimiter, register);
  r.post('/api/register', loginLimiter, register);

  const accountPage = (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) =>
    renderAccount(ctx, req, res, extra, status);
  r.get('/account', requireUser, async (req, res) => {
    const notice =
      req.query.changed === '1'
        ? 'Password changed. Your other sessions have ended.'
        : req.query.revoked === '1'
          ? 'Token revoked: it no longer works.'
          : undefined;
    await accountPage(req, res, { notice });
  });
  // The token is in this answer and nowhere else: not in the session, not in a redirect (the page is no-store).
  r.post('/account/tokens', requireUser, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      const t = await core.tokens.create(actorOf(req), { name: body.name, scopes: body.scopes, expires: body.expires });
      await accountPage(req, res, { newToken: { name: t.row.name, token: t.token } }, 201);
    } catch (e) {
      if (!isKilnError(e, 'invalid_input') && !isKilnError(e, 'conflict')) throw e;
      const tokenName = typeof body.name === 'string' ? body.name.slice(0, 64) : '';
      await accountPage(req, res, { tokenError: e.message, tokenName }, e.httpStatus);
    }
  });
  r.post('/account/tokens/:id/revoke', requireUser, async (req, res) => {
    await core.tokens.revoke(actorOf(req), req.params.id);
    res.redirect(303, '/account?revoked=1#tokens');
  });

  const passwd = async (req: Request, res: Response): Promise<void> => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const json = wantsJson(req);
    try {
      if (!json && body.password !== body.password2)
        throw new KilnError('bad_request', 'The two new passwords differ.');
      const names = req.app.get('kiln.cookie') as CookieNames;
      const u = await core.users.changePassword(actorOf(req), {
        current: body.current,
        password: body.password,
        ip: req.ip ?? '',
        deviceCookie: readCookie(req, names.device),
      });
      logger.info({ user: u.id }, 'password changed');
      // The epoch moved: log this session in again (new id) so only the other sessions end.
      await logInFresh(req, { ...actorOf(req), epoch: u.session_epoch }, now, seedCsrfToken);
      if (json) res.json({ ok: true });
      else res.redirect(303, '/account?changed=1');
    } catch (e) {
      if (json || !isKilnError(e) || !['bad_request', 'invalid_input'].includes(e.code)) throw e;
      await accountPage(req, res, { error: e.message }, e.httpStatus);
    }
  };
  r.post('/account/password', requireUser, loginLimiter, passwd);
  r.post('/api/account/password', requireUser, loginLimiter, passwd);

  return r;
}
