import { Router, type Request } from 'express';
import { isKilnError } from '../../shared/errors.js';
import { FIRMWARES, FORMATS } from '../../protocol/index.js';
import { WEEKDAYS, describeSchedule, type JobSettings, type JobStatus } from '../../core/index.js';
import type { AppContext } from '../app.js';
import { actorOf, hookUrl, requireUser } from './util.js';

/**
 * Jobs and deletion (pages and JSON API), thin over core.jobs and core.dockerfiles.remove: each handler parses the
 * request into a raw command, calls one use case, answers. The Dockerfile page itself (routes/pages.ts) shows the
 * job through core.jobs.status.
 */
export function jobRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();
  const body = (req: Request) => (req.body ?? {}) as Record<string, unknown>;
  const list = (v: unknown) => (v === undefined ? [] : v);

  r.post('/dockerfiles/:id/job', requireUser, async (req, res) => {
    const b = body(req);
    try {
      // A form sends every field; unticked boxes send nothing, which here means "none of them".
      await core.jobs.save(actorOf(req), req.params.id, {
        formats: list(b.formats),
        bootFirmware: list(b.bootFirmware),
        buildArgs: b.buildArgs ?? '',
        schedule: b.schedule,
        hour: b.hour,
        weekday: b.weekday,
      });
      res.redirect(303, `/dockerfiles/${req.params.id}#job`);
    } catch (e) {
      if (!isKilnError(e, 'invalid_input')) throw e;
      const view = await core.dockerfiles.get(actorOf(req), req.params.id);
      const job = await core.jobs.status(actorOf(req), req.params.id);
      render(
        req,
        res,
        'dockerfile.njk',
        {
          ...view,
          ...jobPage(job),
          jobError: e.message,
          hookUrl: hookUrl(ctx.config, req),
          buildArgsText: typeof b.buildArgs === 'string' ? b.buildArgs.slice(0, 64 * 1024) : undefined,
        },
        e.httpStatus,
      );
    }
  });

  for (const [verb, enabled] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    r.post(`/dockerfiles/:id/job/${verb}`, requireUser, async (req, res) => {
      await core.jobs.setEnabled(actorOf(req), req.params.id, { enabled });
      res.redirect(303, `/dockerfiles/${req.params.id}#job`);
    });
    r.post(`/api/dockerfiles/:id/job/${verb}`, requireUser, async (req, res) => {
      await core.jobs.setEnabled(actorOf(req), req.params.id, { enabled });
      res.json({ job: statusJson(await core.jobs.status(actorOf(req), req.params.id)) });
    });
  }

  r.get('/dockerfiles/:id/delete', requireUser, async (req, res) => {
    const view = await core.dockerfiles.get(actorOf(req), req.params.id);
    render(req, res, 'dockerfile-delete.njk', { ...view });
  });

  r.post('/dockerfiles/:id/delete', requireUser, async (req, res) => {
    try {
      await core.dockerfiles.remove(actorOf(req), { id: req.params.id, confirm: body(req).confirm });
      res.redirect(303, `/dockerfiles/${req.params.id}`);
    } catch (e) {
      if (!isKilnError(e, 'invalid_input')) throw e;
      const view = await core.dockerfiles.get(actorOf(req), req.params.id);
      render(req, res, 'dockerfile-delete.njk', { ...view, error: e.message }, e.httpStatus);
    }
  });

  r.get('/api/dockerfiles/:id/job', requireUser, async (req, res) => {
    res.set('Cache-Control', 'no-store');
    res.json({ job: statusJson(await core.jobs.status(actorOf(req), req.params.id)) });
  });

  r.post('/api/dockerfiles/:id/job', requireUser, async (req, res) => {
    const settings = await core.jobs.save(actorOf(req), req.params.id, body(req));
    res.json({
      job: statusJson(await core.jobs.status(actorOf(req), req.params.id)),
      settings: settingsJson(settings),
    });
  });

  r.post('/api/dockerfiles/:id/delete', requireUser, async (req, res) => {
    const { dockerfile } = await core.dockerfiles.remove(actorOf(req), {
      id: req.params.id,
      confirm: body(req).confirm,
    });
    res.status(202).json({ dockerfile: { id: dockerfile.id, name: dockerfile.name, deletionPending: true } });
  });

  return r;
}

const HOURS = Array.from({ length: 24 }, (_x, h) => `${String(h).padStart(2, '0')}:00`);

/** What dockerfile.njk needs to show a job. */
export function jobPage(job: JobStatus): Record<string, unknown> {
  const b = job.backend;
  return {
    job,
    weekdays: WEEKDAYS,
    formats: FORMATS,
    firmwares: FIRMWARES,
    hours: HOURS,
    backendSchedule: b
      ? describeSchedule({
          schedule: b.schedule,
          hour: b.scheduleHour,
          weekday: b.scheduleWeekday,
          timerSpec: b.timerSpec,
        })
      : '',
  };
}

export function settingsJson(s: JobSettings): Record<string, unknown> {
  return {
    formats: s.formats,
    buildArgs: s.buildArgs,
    bootFirmware: s.bootFirmware,
    schedule: s.schedule,
    hour: s.hour,
    weekday: s.weekday,
    enabled: s.enabled,
  };
}

/** The JSON shape of a job's status (GET /api/dockerfiles/:id/job). */
export function statusJson(j: JobStatus): Record<string, unknown> {
  return {
    settings: settingsJson(j.settings),
    pending: j.pending,
    syncError: j.syncError,
    backend: j.backend,
    backendState: j.backendState,
    drift: j.drift,
  };
}
