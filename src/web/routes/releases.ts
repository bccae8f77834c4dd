import { Router } from 'express';
import type { ReleaseListItem } from '../../db/index.js';
import type { AppContext } from '../app.js';
import { sendArtifact } from './pages.js';
import { actorOf, requireUser } from './util.js';

/**
 * Releases and pins from the pages: promote a build (its page's form), pin or unpin it, a release's page and its
 * files. Thin: parse, call one use case of core.releases / core.builds, answer.
 */
export function releaseRoutes(ctx: AppContext): Router {
  const { core, render } = ctx;
  const r = Router();

  r.post('/builds/:id/release', requireUser, async (req, res) => {
    const { release } = await core.releases.promote(actorOf(req), {
      build: req.params.id,
      name: (req.body as Record<string, unknown> | undefined)?.name,
    });
    res.redirect(303, `/releases/${release.id}`);
  });

  r.post('/builds/:id/pin', requireUser, async (req, res) => {
    const b = await core.builds.pin(actorOf(req), req.params.id);
    res.redirect(303, `/builds/${b.id}`);
  });

  r.post('/builds/:id/unpin', requireUser, async (req, res) => {
    const b = await core.builds.unpin(actorOf(req), req.params.id);
    res.redirect(303, `/builds/${b.id}`);
  });

  r.get('/releases/:id', requireUser, async (req, res) => {
    const release = await core.releases.get(actorOf(req), req.params.id);
    render(req, res, 'release.njk', { release, json: releaseJson(release, ''), title: `Release ${release.name}` });
  });

  r.get('/releases/:id/files/:name', requireUser, async (req, res) => {
    await sendArtifact(
      req,
      res,
      await core.releases.file(actorOf(req), req.params.id, req.params.name, req.get('range')),
    );
  });

  return r;
}

/** A release's JSON (the REST API's, and the page's links): its files only once it is made. `base`: the URL prefix. */
export function releaseJson(r: ReleaseListItem, base: string) {
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    reason: r.reason,
    dockerfile: { id: r.dockerfile_id, name: r.dockerfile_name },
    owner: r.owner,
    build: r.build_id,
    createdAt: r.created_at,
    madeAt: r.made_at,
    files:
      r.state === 'ready'
        ? r.files.map((f) => ({
            name: f.name,
            size: f.size,
            sha256: f.sha256,
            url: `${base}/releases/${r.id}/files/${encodeURIComponent(f.name)}`,
          }))
        : [],
    signingKey: '/.well-known/kiln-signing-key',
  };
}
