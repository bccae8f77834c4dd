import { Router, type NextFunction, type Request, type Response } from 'express';
import { KilnError, isKilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { baseNamesView, removeBaseName, setBaseName } from '../services/base-names.js';
import { actorOf } from './util.js';

/** Every admin route: anonymous is asked to log in (401), anyone but an admin is refused (403). */
function requireAdmin(req: Request, _res: Response, next: NextFunction): void {
  if (!req.user) return next(new KilnError('unauthenticated', 'Please log in.'));
  if (req.user.role !== 'admin') return next(new KilnError('forbidden', 'Only an admin can do this.'));
  next();
}

/**
 * Admin pages and their JSON API (same session and CSRF rules as the rest). Base names: the site's names for the
 * bases in sdk.bases (services/base-names.ts). Handlers parse, call one service, respond.
 */
export function adminRoutes(ctx: AppContext): Router {
  const { s, render } = ctx;
  const r = Router();

  const page = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    render(req, res, 'admin-base-names.njk', { ...(await baseNamesView(s, actorOf(req))), ...extra }, status);
  };

  r.get('/admin/base-names', requireAdmin, async (req, res) => { await page(req, res); });

  r.post('/admin/base-names', requireAdmin, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      await setBaseName(s, actorOf(req), body);
      res.redirect(303, '/admin/base-names');
    } catch (e) {
      if (!isKilnError(e, 'invalid_input') && !isKilnError(e, 'conflict')) throw e;
      const kept = (v: unknown) => (typeof v === 'string' ? v.slice(0, 255) : '');
      await page(req, res, { error: e.message, name: kept(body.name), base: kept(body.base) }, e.httpStatus);
    }
  });

  r.post('/admin/base-names/:id/delete', requireAdmin, async (req, res) => {
    await removeBaseName(s, actorOf(req), req.params.id);
    res.redirect(303, '/admin/base-names');
  });

  r.get('/api/admin/base-names', requireAdmin, async (req, res) => {
    const v = await baseNamesView(s, actorOf(req));
    res.json({ ...v, mappings: v.mappings.map(mappingJson) });
  });

  r.post('/api/admin/base-names', requireAdmin, async (req, res) => {
    const { mapping, created } = await setBaseName(s, actorOf(req), req.body);
    res.status(created ? 201 : 200).json({ mapping: mappingJson(mapping), created });
  });

  r.post('/api/admin/base-names/:id/delete', requireAdmin, async (req, res) => {
    res.json(await removeBaseName(s, actorOf(req), req.params.id));
  });

  return r;
}

const mappingJson = (m: { id: number; name: string; base: string; updated_at: string }) => ({ id: m.id, name: m.name, base: m.base, updatedAt: m.updated_at });
