import { Router, type Request, type Response } from 'express';
import { rateLimit } from 'express-rate-limit';
import { feedTokenId } from '../../core/index.js';
import { isKilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { ClockStore } from '../api-v1/rate-store.js';
import { renderAccount } from './account-page.js';
import { actorOf, requireUser } from './util.js';

/**
 * The Atom feeds (`GET /feeds/user.atom?token=`, `GET /feeds/dockerfiles/:id.atom?token=`): mounted before the
 * session and the body parsers, like the REST API, since a feed reader has no session; its feed token is its only
 * credential. Rate-limited as the API is (`api.rateLimit` per `api.rateWindowSeconds`), per token id (per address
 * for requests without a well-formed token). Any failure but the rate limit is one plain 404.
 */
export function feedRoutes(ctx: AppContext): Router {
  const { core, config } = ctx;
  const r = Router();
  const limiter = rateLimit({
    windowMs: config.api.rateWindowSeconds * 1000,
    limit: config.api.rateLimit,
    store: new ClockStore(ctx.now),
    keyGenerator: (req) => {
      const id = feedTokenId(req.query.token);
      return id ? `feed:${id}` : `feed-ip:${req.ip ?? ''}`;
    },
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    validate: { xForwardedForHeader: false, keyGeneratorIpFallback: false },
    handler: (req, res) => {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const wait = Math.max(1, Math.ceil(((reset ?? 0) - ctx.now()) / 1000));
      res
        .status(429)
        .set('retry-after', String(wait))
        .type('text/plain')
        .send(`Too many feed requests; wait ${wait} s.\n`);
    },
  });
  const base = (req: Request) => config.web.publicUrl ?? `${req.protocol}://${req.get('host') ?? ''}`;

  const serve = async (req: Request, res: Response, dockerfile?: string) => {
    res.set('cache-control', 'private, no-cache').set('referrer-policy', 'no-referrer');
    try {
      const xml = await core.following.feed({
        token: req.query.token,
        ...(dockerfile !== undefined ? { dockerfile } : {}),
        base: base(req),
      });
      res.type('application/atom+xml; charset=utf-8').send(xml);
    } catch (e) {
      if (!isKilnError(e, 'not_found') && !isKilnError(e, 'invalid_input')) throw e;
      res.status(404).type('text/plain').send('No such feed.\n');
    }
  };
  r.get('/user.atom', limiter, (req, res) => serve(req, res));
  r.get('/dockerfiles/:id.atom', limiter, (req, res) => serve(req, res, String(req.params.id)));
  return r;
}

/**
 * The pages' side of following: the account page's feed token (made or rotated: shown once on the answer; revoked),
 * and a Dockerfile's webhook (its URL; a new secret shown once on the answer; removal).
 */
export function followingPageRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();
  const field = (req: Request, name: string) => (req.body as Record<string, unknown> | undefined)?.[name];

  r.post('/account/feed-token', requireUser, async (req, res) => {
    const { token } = await core.following.rotateFeedToken(actorOf(req));
    res.set('cache-control', 'no-store');
    await renderAccount(ctx, req, res, { newFeedToken: token }, 201);
  });
  r.post('/account/feed-token/revoke', requireUser, async (req, res) => {
    await core.following.revokeFeedToken(actorOf(req));
    res.redirect(303, '/account');
  });

  r.post('/dockerfiles/:id/webhook', requireUser, async (req, res) => {
    const ref = { id: req.params.id };
    const saved = await core.following.saveWebhook(actorOf(req), ref, { url: field(req, 'url') });
    if (!saved.secret) return res.redirect(303, `/dockerfiles/${req.params.id}`);
    res.set('cache-control', 'no-store');
    render(
      req,
      res,
      'webhook-secret.njk',
      { title: 'Webhook secret', dockerfileId: req.params.id, secret: saved.secret },
      201,
    );
  });
  r.post('/dockerfiles/:id/webhook/secret', requireUser, async (req, res) => {
    const { secret } = await core.following.rotateWebhookSecret(actorOf(req), { id: req.params.id });
    res.set('cache-control', 'no-store');
    render(req, res, 'webhook-secret.njk', { title: 'Webhook secret', dockerfileId: req.params.id, secret }, 201);
  });
  r.post('/dockerfiles/:id/webhook/delete', requireUser, async (req, res) => {
    await core.following.removeWebhook(actorOf(req), { id: req.params.id });
    res.redirect(303, `/dockerfiles/${req.params.id}`);
  });
  return r;
}
