import { Router, type Request } from 'express';
import type { BuildRow } from '../../db/index.js';
import { describeRetention, progressOf, type BuildListView } from '../../core/index.js';
import type { AppContext } from '../app.js';
import { liveStream } from '../live-stream.js';
import { actorOf, buildJson, requireUser } from './util.js';

/**
 * Following builds: the build page, the build lists, the documents of a build (manifest, SBOM, boot test serial
 * logs, package diff), and the live event stream. Thin: parse, call one use case of core.builds, answer.
 */
export function buildRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();

  r.get('/builds', requireUser, async (req, res) => {
    const actor = actorOf(req);
    const [list, dockerfiles] = await Promise.all([
      core.builds.history(actor, query(req)),
      core.dockerfiles.list(actor),
    ]);
    render(req, res, 'builds.njk', { list, dockerfiles, pager: pager('/builds', list), title: 'Builds' });
  });

  r.get('/dockerfiles/:id/builds', requireUser, async (req, res) => {
    const actor = actorOf(req);
    const view = await core.dockerfiles.get(actor, req.params.id);
    const list = await core.builds.history(actor, { ...query(req), dockerfile: String(view.dockerfile.id) });
    render(req, res, 'builds.njk', {
      list,
      dockerfile: view.dockerfile,
      pager: pager(`/dockerfiles/${view.dockerfile.id}/builds`, list),
      title: `Builds of ${view.dockerfile.name}`,
    });
  });

  r.get('/builds/:id', requireUser, async (req, res) => {
    const actor = actorOf(req);
    const page = await core.builds.page(actor, req.params.id);
    const releases = await core.releases.list(actor, { buildId: page.build.id });
    render(req, res, 'build.njk', {
      ...page,
      releases,
      retentionText: describeRetention(ctx.config.retention),
      buildJson: liveJson(page.build),
    });
  });

  r.get('/builds/:id/manifest', requireUser, async (req, res) => {
    render(req, res, 'packages.njk', {
      kind: 'manifest',
      view: await core.builds.manifest(actorOf(req), req.params.id, req.query.q),
    });
  });

  r.get('/builds/:id/sbom', requireUser, async (req, res) => {
    render(req, res, 'packages.njk', {
      kind: 'sbom',
      view: await core.builds.sbom(actorOf(req), req.params.id, req.query.q),
    });
  });

  r.get('/builds/:id/boot/:n', requireUser, async (req, res) => {
    render(req, res, 'serial.njk', await core.builds.serialLog(actorOf(req), req.params.id, req.params.n));
  });

  r.get('/builds/:id/diff', requireUser, async (req, res) => {
    render(req, res, 'diff.njk', { diff: await core.builds.diff(actorOf(req), req.params.id) });
  });

  return r;
}

/** The same over JSON, and the live event stream. */
export function buildApiRoutes(ctx: AppContext): Router {
  const { core } = ctx;
  const r = Router();

  r.get('/builds', requireUser, async (req, res) => {
    const list = await core.builds.history(actorOf(req), query(req));
    res.json({
      builds: list.items.map((b) => ({
        ...buildJson(b),
        dockerfileName: b.dockerfile_name,
        owner: b.owner,
        durationSeconds: b.durationSeconds ?? null,
      })),
      page: list.page,
      pages: list.pages,
      total: list.total,
      filter: list.filter,
    });
  });

  r.get('/builds/:id/report', requireUser, async (req, res) => {
    res.json(await core.builds.report(actorOf(req), req.params.id));
  });

  r.get('/builds/:id/manifest', requireUser, async (req, res) => {
    const v = await core.builds.manifest(actorOf(req), req.params.id, req.query.q);
    res.json({ available: v.available, total: v.total, query: v.query, facts: v.facts, packages: v.packages });
  });

  r.get('/builds/:id/sbom', requireUser, async (req, res) => {
    const v = await core.builds.sbom(actorOf(req), req.params.id, req.query.q);
    res.json({ available: v.available, total: v.total, query: v.query, facts: v.facts, packages: v.packages });
  });

  r.get('/builds/:id/boot/:n', requireUser, async (req, res) => {
    const v = await core.builds.serialLog(actorOf(req), req.params.id, req.params.n);
    res.json({ test: v.test, serialLog: v.lines.join('\n') });
  });

  r.get('/builds/:id/diff', requireUser, async (req, res) => {
    const v = await core.builds.diff(actorOf(req), req.params.id);
    res.json({
      previous: v.previous?.id ?? null,
      available: v.available,
      added: v.added,
      removed: v.removed,
      changed: v.changed,
      unchanged: v.unchanged,
    });
  });

  /**
   * Server-Sent Events: `log` (id = byte offset after its lines, data {html: [...]}, each line escaped with ANSI
   * colours as classes), `progress` (the SDK's events), `build` (the row when it changes), `end`. A reconnect sends
   * Last-Event-ID and continues after exactly that line; `?from=N` starts elsewhere (the page's tail of a long log).
   */
  r.get('/builds/:id/events', requireUser, async (req, res) => {
    const me = req.user!;
    await liveStream(req, res, {
      counts: ctx.liveStreams,
      limit: ctx.config.web.liveStreamsPerUser,
      userId: me.id,
      recheckMs: Math.max(1000, ctx.config.web.livePollMs * 40),
      // The session ends (user disabled, password changed): the browser's reconnect then gets 401 and stops.
      still: async () => !!(await core.users.sessionActor({ id: me.id, epoch: me.epoch })),
      open: (signal) =>
        core.builds.follow(actorOf(req), req.params.id, req.get('last-event-id') ?? req.query.from, signal),
      as: { sse: { log: (html) => ({ html }), build: liveJson } },
    });
  });

  return r;
}

/** A build's JSON with the progress the page shows. */
export function liveJson(b: BuildRow): Record<string, unknown> {
  return { ...buildJson(b), progressView: progressOf(b) };
}

function query(req: Request): { state?: string; dockerfile?: string; page?: string } {
  const q = req.query as Record<string, unknown>;
  const one = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return {
    ...(one(q.state) ? { state: one(q.state) } : {}),
    ...(one(q.dockerfile) ? { dockerfile: one(q.dockerfile) } : {}),
    ...(one(q.page) ? { page: one(q.page) } : {}),
  };
}

/** Links to the neighbouring pages, keeping the filters. */
function pager(path: string, list: BuildListView): { prev?: string; next?: string } {
  const link = (page: number) => {
    const p = new URLSearchParams();
    if (list.filter.state) p.set('state', list.filter.state);
    if (list.filter.dockerfile && path === '/builds') p.set('dockerfile', String(list.filter.dockerfile));
    if (page > 1) p.set('page', String(page));
    const s = p.toString();
    return s ? `${path}?${s}` : path;
  };
  return {
    ...(list.page > 1 ? { prev: link(list.page - 1) } : {}),
    ...(list.page < list.pages ? { next: link(list.page + 1) } : {}),
  };
}
