import { Router } from 'express';
import { KilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { cancelBuild, getBuild, openArtifact, readLog, requestBuild } from '../services/builds.js';
import { createDockerfile, getDockerfileView, listDockerfilesFor, updateDockerfile } from '../services/dockerfiles.js';
import { decodeDockerfile } from '../validation.js';
import { sendArtifact } from './pages.js';
import { actorOf, buildJson, requireUser } from './util.js';

/**
 * JSON API: same session, same CSRF rule (header X-CSRF-Token, from GET /api/csrf), same services as the pages.
 * Errors are `{"error":{"code","message"}}`.
 */
export function apiRoutes(ctx: AppContext): Router {
  const { s, csrfToken } = ctx;
  const r = Router();
  r.use((_req, res, next) => { res.set('Cache-Control', 'no-store'); next(); });

  r.get('/csrf', (req, res) => { res.json({ token: csrfToken(req) }); });
  r.get('/me', requireUser, (req, res) => { res.json({ user: actorOf(req) }); });

  r.get('/dockerfiles', requireUser, async (req, res) => {
    const list = await listDockerfilesFor(s.db, actorOf(req));
    res.json({ dockerfiles: list.map((d) => ({ id: d.id, name: d.name, owner: d.owner, size: d.size, builds: d.builds, updatedAt: d.updated_at })) });
  });

  r.post('/dockerfiles', requireUser, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const content = contentOf(body, s.config.web.maxDockerfileBytes);
    const df = await createDockerfile(s, actorOf(req), { name: body.name, content });
    res.status(201).json({ dockerfile: { id: df.id, name: df.name } });
  });

  r.get('/dockerfiles/:id', requireUser, async (req, res) => {
    const v = await getDockerfileView(s.db, actorOf(req), req.params.id);
    res.json({
      dockerfile: { id: v.dockerfile.id, name: v.dockerfile.name, content: v.version.content, sha256: v.version.sha256, size: v.version.size },
      builds: v.builds.map(buildJson),
    });
  });

  r.post('/dockerfiles/:id', requireUser, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const content = contentOf(body, s.config.web.maxDockerfileBytes);
    const v = await updateDockerfile(s, actorOf(req), req.params.id, content);
    res.json({ version: { id: v.id, sha256: v.sha256, size: v.size } });
  });

  r.post('/dockerfiles/:id/builds', requireUser, async (req, res) => {
    const { build, created } = await requestBuild(s, actorOf(req), req.params.id, (req.body as Record<string, unknown>)?.key);
    res.status(created ? 201 : 200).json({ build: buildJson(build), created });
  });

  r.get('/builds/:id', requireUser, async (req, res) => {
    res.json({ build: buildJson(await getBuild(s, actorOf(req), req.params.id)) });
  });

  r.post('/builds/:id/cancel', requireUser, async (req, res) => {
    res.json({ build: buildJson(await cancelBuild(s, actorOf(req), req.params.id)) });
  });

  r.get('/builds/:id/log', requireUser, async (req, res) => {
    res.json(await readLog(s, actorOf(req), req.params.id, req.query.offset));
  });

  r.get('/builds/:id/artifacts/:name', requireUser, async (req, res) => {
    await sendArtifact(req, res, await openArtifact(s, actorOf(req), req.params.id, req.params.name, req.get('range')));
  });

  return r;
}

/** `content` (text) or `contentBase64` (exact bytes, decoded strictly as UTF-8). */
function contentOf(body: Record<string, unknown>, max: number): string {
  if (typeof body.contentBase64 === 'string') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.contentBase64)) throw new KilnError('invalid_input', 'contentBase64 is not base64.');
    return decodeDockerfile(Buffer.from(body.contentBase64, 'base64'), max);
  }
  if (typeof body.content === 'string') return body.content;
  throw new KilnError('invalid_input', 'The Dockerfile is empty.');
}
