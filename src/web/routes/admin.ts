import { Router, type NextFunction, type Request, type Response } from 'express';
import { KilnError, isKilnError } from '../../shared/errors.js';
import { authorize } from '../../core/index.js';
import type { AppContext } from '../app.js';
import { actorOf } from './util.js';

/**
 * Every admin route, before its body is looked at: anonymous is asked to log in (401), anyone the policy does not
 * let manage the site's settings is refused (403). The use cases check again.
 */
function requireAdmin(req: Request, _res: Response, next: NextFunction): void {
  if (!req.user) return next(new KilnError('unauthenticated', 'Please log in.'));
  try {
    authorize(actorOf(req), 'settings.manage');
  } catch (e) {
    return next(e);
  }
  next();
}

/**
 * Admin pages and their JSON API (same session and CSRF rules as the rest). Base names: the site's names for the
 * bases in sdk.bases (src/core/base-names.ts). Handlers parse, call one use case, respond.
 */
export function adminRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();

  const page = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    render(req, res, 'admin-base-names.njk', { ...(await core.baseNames.view(actorOf(req))), ...extra }, status);
  };

  r.get('/admin/base-names', requireAdmin, async (req, res) => { await page(req, res); });

  r.post('/admin/base-names', requireAdmin, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      await core.baseNames.set(actorOf(req), body);
      res.redirect(303, '/admin/base-names');
    } catch (e) {
      if (!isKilnError(e, 'invalid_input') && !isKilnError(e, 'conflict')) throw e;
      const kept = (v: unknown) => (typeof v === 'string' ? v.slice(0, 255) : '');
      await page(req, res, { error: e.message, name: kept(body.name), base: kept(body.base) }, e.httpStatus);
    }
  });

  r.post('/admin/base-names/:id/delete', requireAdmin, async (req, res) => {
    await core.baseNames.remove(actorOf(req), req.params.id);
    res.redirect(303, '/admin/base-names');
  });

  r.get('/api/admin/base-names', requireAdmin, async (req, res) => {
    const v = await core.baseNames.view(actorOf(req));
    res.json({ ...v, mappings: v.mappings.map(mappingJson) });
  });

  r.post('/api/admin/base-names', requireAdmin, async (req, res) => {
    const { mapping, created } = await core.baseNames.set(actorOf(req), req.body);
    res.status(created ? 201 : 200).json({ mapping: mappingJson(mapping), created });
  });

  r.post('/api/admin/base-names/:id/delete', requireAdmin, async (req, res) => {
    res.json(await core.baseNames.remove(actorOf(req), req.params.id));
  });

  return r;
}

const mappingJson = (m: { id: number; name: string; base: string; updated_at: string }) => ({ id: m.id, name: m.name, base: m.base, updatedAt: m.updated_at });
