import { Router, type NextFunction, type Request, type Response } from 'express';
import { KilnError, isKilnError } from '../../shared/errors.js';
import { authorize, JOB_OPS, type Actor, type Core, type JobOp } from '../../core/index.js';
import type { BuildListItem, UserRow } from '../../db/index.js';
import type { AppContext } from '../app.js';
import { humanBytes } from '../format.js';
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

/** What an admin may do to an account from the console (and the REST API), and the use case input each means. */
export const USER_ACTIONS = {
  approve: {},
  disable: { disabled: true },
  enable: { disabled: false },
  promote: { role: 'admin' },
  demote: { role: 'user' },
} as const;
type UserAction = keyof typeof USER_ACTIONS;

/** One of the USER_ACTIONS on account `id`, through its use case. */
export function userAction(core: Core, actor: Actor, id: unknown, action: UserAction): Promise<UserRow> {
  if (action === 'approve') return core.users.approve(actor, { id });
  if (action === 'disable' || action === 'enable')
    return core.users.setDisabled(actor, { id, disabled: USER_ACTIONS[action].disabled });
  return core.users.setRole(actor, { id, role: USER_ACTIONS[action].role });
}

/**
 * Admin pages and their JSON API (same session and CSRF rules as the rest): users, jobs, the queue, health, the
 * audit log, base names. Handlers parse, call one use case, respond; errors a form can fix come back on its page.
 */
export function adminRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();

  // ---------------------------------------------------------------------------------------------- users
  const act = (req: Request, action: UserAction): Promise<UserRow> =>
    userAction(core, actorOf(req), req.params.id, action);
  const usersPage = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    const users = await core.users.list(actorOf(req));
    render(
      req,
      res,
      'admin-users.njk',
      { section: 'users', users: users.map(userJson), approval: ctx.config.web.registrationApproval, ...extra },
      status,
    );
  };
  r.get('/admin', requireAdmin, (_req, res) => {
    res.redirect(303, '/admin/users');
  });
  r.get('/admin/users', requireAdmin, async (req, res) => {
    await usersPage(req, res, { notice: noticeOf(req) });
  });
  r.get('/api/admin/users', requireAdmin, async (req, res) => {
    res.json({ users: (await core.users.list(actorOf(req))).map(userJson) });
  });
  for (const action of Object.keys(USER_ACTIONS) as UserAction[]) {
    r.post(`/admin/users/:id/${action}`, requireAdmin, async (req, res) => {
      try {
        const u = await act(req, action);
        res.redirect(303, `/admin/users?done=${action}&who=${encodeURIComponent(u.username)}`);
      } catch (e) {
        if (!isKilnError(e, 'conflict')) throw e;
        await usersPage(req, res, { error: e.message }, e.httpStatus);
      }
    });
    r.post(`/api/admin/users/:id/${action}`, requireAdmin, async (req, res) => {
      res.json({ user: userJson(await act(req, action)) });
    });
  }

  // ----------------------------------------------------------------------------------------------- jobs
  const jobsPage = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    try {
      render(
        req,
        res,
        'admin-jobs.njk',
        { section: 'jobs', ...(await core.admin.jobs(actorOf(req))), ...extra },
        status,
      );
    } catch (e) {
      if (!isKilnError(e, 'backend_unavailable') && !isKilnError(e, 'timeout')) throw e;
      render(req, res, 'admin-jobs.njk', { section: 'jobs', jobs: [], unavailable: e.message, ...extra }, status);
    }
  };
  r.get('/admin/jobs', requireAdmin, async (req, res) => {
    await jobsPage(req, res, { notice: noticeOf(req) });
  });
  r.get('/api/admin/jobs', requireAdmin, async (req, res) => {
    res.json(await core.admin.jobs(actorOf(req)));
  });
  for (const op of JOB_OPS) {
    r.post(`/admin/jobs/:id/${op}`, requireAdmin, async (req, res) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      try {
        const j = await core.admin.controlJob(actorOf(req), { id: req.params.id, op, confirm: body.confirm });
        res.redirect(303, `/admin/jobs?done=${op}&who=kiln-job-${j.job}`);
      } catch (e) {
        if (op !== 'delete' || (!isKilnError(e, 'invalid_input') && !isKilnError(e, 'conflict'))) throw e;
        render(
          req,
          res,
          'admin-job-delete.njk',
          { section: 'jobs', job: req.params.id, error: e.message },
          e.httpStatus,
        );
      }
    });
    r.post(`/api/admin/jobs/:id/${op}`, requireAdmin, async (req, res) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      res
        .status(202)
        .json(await core.admin.controlJob(actorOf(req), { id: req.params.id, op: op as JobOp, confirm: body.confirm }));
    });
  }
  // The confirmation step of a delete: a page naming the job, whose form sends its name back as `confirm`.
  r.get('/admin/jobs/:id/delete', requireAdmin, (req, res) => {
    const id = String(req.params.id);
    if (!/^[1-9][0-9]{0,11}$/.test(id)) throw new KilnError('not_found', 'Not found');
    render(req, res, 'admin-job-delete.njk', { section: 'jobs', job: id });
  });

  // ---------------------------------------------------------------------------------------------- queue
  r.get('/admin/queue', requireAdmin, async (req, res) => {
    const q = await core.admin.queue(actorOf(req));
    render(req, res, 'admin-queue.njk', {
      section: 'queue',
      ...q,
      builds: q.builds.map(queuedJson),
      notice: noticeOf(req),
    });
  });
  r.get('/api/admin/queue', requireAdmin, async (req, res) => {
    const q = await core.admin.queue(actorOf(req));
    res.json({ ...q, builds: q.builds.map(queuedJson) });
  });
  r.post('/admin/queue/:id/cancel', requireAdmin, async (req, res) => {
    const b = await core.builds.cancel(actorOf(req), req.params.id);
    res.redirect(303, `/admin/queue?done=cancel&who=build-${b.id}`);
  });
  r.post('/api/admin/queue/:id/cancel', requireAdmin, async (req, res) => {
    const b = await core.builds.cancel(actorOf(req), req.params.id);
    res.status(202).json({ build: { id: b.id, state: b.state } });
  });

  // ------------------------------------------------------------------------------------- health, audit
  r.get('/admin/health', requireAdmin, async (req, res) => {
    const h = await core.admin.health(actorOf(req));
    render(req, res, 'admin-health.njk', {
      section: 'health',
      h,
      free: h.disk.freeBytes === undefined ? undefined : humanBytes(h.disk.freeBytes),
      total: h.disk.totalBytes === undefined ? undefined : humanBytes(h.disk.totalBytes),
    });
  });
  r.get('/api/admin/health', requireAdmin, async (req, res) => {
    res.json(await core.admin.health(actorOf(req)));
  });
  r.get('/admin/audit', requireAdmin, async (req, res) => {
    const entries = await core.admin.audit(actorOf(req), req.query);
    render(req, res, 'admin-audit.njk', {
      section: 'audit',
      entries,
      older: entries.length === 100 ? entries[entries.length - 1]!.id : undefined,
    });
  });
  r.get('/api/admin/audit', requireAdmin, async (req, res) => {
    res.json({ entries: await core.admin.audit(actorOf(req), req.query) });
  });

  // ----------------------------------------------------------------------------------------- base names
  const page = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    render(
      req,
      res,
      'admin-base-names.njk',
      { section: 'base-names', ...(await core.baseNames.view(actorOf(req))), ...extra },
      status,
    );
  };

  r.get('/admin/base-names', requireAdmin, async (req, res) => {
    await page(req, res);
  });

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

const mappingJson = (m: { id: number; name: string; base: string; updated_at: string }) => ({
  id: m.id,
  name: m.name,
  base: m.base,
  updatedAt: m.updated_at,
});

/** An account as the console shows it: never its password hash or session epoch. */
export const userJson = (u: UserRow) => ({
  id: u.id,
  username: u.username,
  role: u.role,
  disabled: u.disabled,
  approved: u.approved,
  createdAt: u.created_at,
});

const queuedJson = (b: BuildListItem) => ({
  id: b.id,
  state: b.state,
  owner: b.owner,
  ownerId: b.owner_id,
  dockerfileId: b.dockerfile_id,
  dockerfile: b.dockerfile_name,
  backendBuild: b.backend_build,
  requestedAt: b.requested_at,
  startedAt: b.started_at,
});

/** The confirmation line after a redirect (`?done=disable&who=bob`): fixed words around an escaped name. */
function noticeOf(req: Request): string | undefined {
  const done = typeof req.query.done === 'string' ? req.query.done : '';
  const who = typeof req.query.who === 'string' ? req.query.who.slice(0, 80) : '';
  const words: Record<string, string> = {
    approve: 'approved',
    disable: 'disabled: their sessions have ended and their API tokens are revoked',
    enable: 'enabled',
    promote: 'is now an admin',
    demote: 'is no longer an admin',
    delete: 'deleted',
    cancel: 'is being cancelled',
  };
  if (!words[done] || !who) return undefined;
  if (req.path.startsWith('/admin/jobs'))
    return `Asked the worker to ${done} ${who}; the table shows the build service's state.`;
  return `${who} ${words[done]}.`;
}
