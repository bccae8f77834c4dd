import { Router } from 'express';
import { KilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import {
  MAX_CONTEXT_ENTRIES,
  MAX_CONTEXT_UPLOAD_BYTES,
  decodeDockerfile,
  type ContextUpload,
} from '../../core/index.js';
import { sendArtifact } from './pages.js';
import { jsonBody } from '../upload-limits.js';
import { liveJson } from './builds.js';
import { actorOf, buildJson, dockerfileSummaryJson, gitJson, requireUser } from './util.js';

/**
 * JSON API: same session, same CSRF rule (header X-CSRF-Token, from GET /api/csrf), same services as the pages.
 * Errors are `{"error":{"code","message"}}`.
 */
export function apiRoutes(ctx: AppContext): Router {
  const { core, config, csrfToken } = ctx;
  const r = Router();
  r.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  r.get('/csrf', async (req, res) => {
    res.json({ token: await csrfToken(req) });
  });
  r.get('/me', requireUser, (req, res) => {
    const me = actorOf(req);
    res.json({ user: { id: me.id, username: me.username, role: me.role } });
  });

  r.get('/dockerfiles', requireUser, async (req, res) => {
    const list = await core.dockerfiles.list(actorOf(req));
    res.json({ dockerfiles: list.map(dockerfileSummaryJson) });
  });

  // The only JSON bodies that may carry a build context (base64 grows it by 4/3); parsed after login + CSRF checks.
  const jsonLimit = Math.ceil((MAX_CONTEXT_UPLOAD_BYTES * 4) / 3) + config.web.maxDockerfileBytes * 6 + 256 * 1024;
  const contextJson = jsonBody(jsonLimit, ctx.bigUploads);

  r.post('/dockerfiles', requireUser, contextJson, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const df =
      body.git !== undefined
        ? await core.dockerfiles.create(actorOf(req), { name: body.name, source: body.git })
        : await core.dockerfiles.create(actorOf(req), {
            name: body.name,
            content: contentOf(body, config.web.maxDockerfileBytes),
            context: contextOf(body),
          });
    res.status(201).json({ dockerfile: { id: df.id, name: df.name } });
  });

  r.get('/dockerfiles/:id', requireUser, async (req, res) => {
    const v = await core.dockerfiles.get(actorOf(req), req.params.id);
    res.json({
      dockerfile: {
        id: v.dockerfile.id,
        name: v.dockerfile.name,
        content: v.version?.content ?? null,
        sha256: v.version?.sha256 ?? null,
        size: v.version?.size ?? null,
        deletionPending: v.dockerfile.deleting_at !== null,
      },
      git: v.git && gitJson(v.git),
      context: v.context && { sha256: v.context.sha256, size: v.context.size, entries: v.context.listing },
      builds: v.builds.map(buildJson),
    });
  });

  r.post('/dockerfiles/:id', requireUser, contextJson, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (body.git !== undefined) {
      const git = await core.dockerfiles.setSource(actorOf(req), { id: req.params.id, source: body.git });
      res.status(202).json({ git: gitJson(git) });
      return;
    }
    const content = contentOf(body, config.web.maxDockerfileBytes);
    const v = await core.dockerfiles.update(actorOf(req), { id: req.params.id, content, context: contextOf(body) });
    res.json({ version: { id: v.id, sha256: v.sha256, size: v.size, hasContext: v.context_id != null } });
  });

  r.post('/dockerfiles/:id/builds', requireUser, async (req, res) => {
    const { build, created } = await core.builds.request(actorOf(req), {
      dockerfileId: req.params.id,
      key: (req.body as Record<string, unknown>)?.key,
      trigger: 'api',
    });
    res.status(created ? 201 : 200).json({ build: buildJson(build), created });
  });

  r.get('/builds/:id', requireUser, async (req, res) => {
    const actor = actorOf(req);
    const build = await core.builds.get(actor, req.params.id);
    res.json({ build: { ...liveJson(build), queue: (await core.builds.queuePlace(actor, String(build.id))) ?? null } });
  });

  r.post('/builds/:id/cancel', requireUser, async (req, res) => {
    res.json({ build: buildJson(await core.builds.cancel(actorOf(req), req.params.id)) });
  });

  r.get('/builds/:id/log', requireUser, async (req, res) => {
    res.json(await core.builds.log(actorOf(req), req.params.id, req.query.offset));
  });

  r.get('/builds/:id/artifacts/:name', requireUser, async (req, res) => {
    await sendArtifact(
      req,
      res,
      await core.builds.artifact(actorOf(req), req.params.id, req.params.name, req.get('range')),
    );
  });

  return r;
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** `content` (text) or `contentBase64` (exact bytes, decoded strictly as UTF-8). */
function contentOf(body: Record<string, unknown>, max: number): string {
  if (typeof body.contentBase64 === 'string') {
    if (!B64.test(body.contentBase64)) throw new KilnError('invalid_input', 'contentBase64 is not base64.');
    return decodeDockerfile(Buffer.from(body.contentBase64, 'base64'), max);
  }
  if (typeof body.content === 'string') return body.content;
  throw new KilnError('invalid_input', 'The Dockerfile is empty.');
}

/**
 * The build context of a JSON request: `contextTarBase64` (one uncompressed tar), or `contextFiles`
 * (`[{name, contentBase64}]`, flat names), or `removeContext: true` on update; none of them keeps the current one.
 */
function contextOf(body: Record<string, unknown>): ContextUpload | undefined {
  const given = ['contextTarBase64', 'contextFiles', 'removeContext'].filter(
    (k) => body[k] !== undefined && body[k] !== false,
  );
  if (given.length > 1) throw new KilnError('invalid_input', `Give only one of ${given.join(', ')}.`);
  if (body.removeContext === true) return { kind: 'remove' };
  if (body.removeContext !== undefined && body.removeContext !== false)
    throw new KilnError('invalid_input', 'removeContext must be true or false.');
  if (body.contextTarBase64 !== undefined) {
    if (typeof body.contextTarBase64 !== 'string' || !B64.test(body.contextTarBase64))
      throw new KilnError('invalid_input', 'contextTarBase64 is not base64.');
    return { kind: 'tar', data: Buffer.from(body.contextTarBase64, 'base64') };
  }
  if (body.contextFiles !== undefined) {
    const list = body.contextFiles;
    if (!Array.isArray(list) || list.length > MAX_CONTEXT_ENTRIES)
      throw new KilnError(
        'invalid_input',
        `contextFiles must be a list of at most ${MAX_CONTEXT_ENTRIES} {name, contentBase64}.`,
      );
    return {
      kind: 'files',
      files: list.map((f: unknown) => {
        const o = (f ?? {}) as Record<string, unknown>;
        if (typeof o.name !== 'string' || typeof o.contentBase64 !== 'string' || !B64.test(o.contentBase64)) {
          throw new KilnError('invalid_input', 'Each of contextFiles needs a name and base64 contentBase64.');
        }
        return { name: o.name, data: Buffer.from(o.contentBase64, 'base64') };
      }),
    };
  }
  return undefined;
}
