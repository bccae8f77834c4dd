import { Router, type Request } from 'express';
import { ANONYMOUS, type Actor } from '../../core/index.js';
import { isKilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { actorOf } from './util.js';

const actorOrAnonymous = (req: Request): Actor => (req.user ? actorOf(req) : ANONYMOUS);

/**
 * For operations: `/healthz` (load balancers: no login, no secrets, 200 while this instance's database answers,
 * else 503) and `/metrics` (Prometheus text format; admins, or an address in web.metricsAllow).
 */
export function opsRoutes(ctx: AppContext): Router {
  const { core } = ctx;
  const r = Router();
  r.get('/healthz', async (_req, res) => {
    const ok = await core.admin.readiness();
    res
      .status(ok ? 200 : 503)
      .type('application/json')
      .send(JSON.stringify({ status: ok ? 'ok' : 'unavailable' }));
  });
  // A scraper follows no login page: a refusal is a plain 401 or 403.
  r.get('/metrics', async (req, res) => {
    try {
      const text = await core.admin.metrics(actorOrAnonymous(req), req.ip);
      res.type('text/plain; version=0.0.4; charset=utf-8').send(text);
    } catch (e) {
      if (!isKilnError(e, 'unauthenticated') && !isKilnError(e, 'forbidden')) throw e;
      res.status(e.httpStatus).type('text/plain; charset=utf-8').send(`${e.message}\n`);
    }
  });
  return r;
}
