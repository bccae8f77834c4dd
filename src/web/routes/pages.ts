import { pipeline } from 'node:stream/promises';
import { Router, type Request, type Response } from 'express';
import multer from 'multer';
import { KilnError, isKilnError } from '../../shared/errors.js';
import {
  MAX_CONTEXT_BYTES,
  MAX_CONTEXT_ENTRIES,
  MAX_CONTEXT_UPLOAD_BYTES,
  decodeDockerfile,
  type ArtifactDownload,
  type ContextUpload,
} from '../../core/index.js';
import type { AppContext } from '../app.js';
import { bodyCap } from '../upload-limits.js';
import { policyFindings } from '../errors.js';
import { actorOf, hookUrl, newFormKey, requireUser } from './util.js';
import { jobPage } from './jobs.js';

/** Sends an artifact as an opaque download under a server-made name. */
export async function sendArtifact(req: Request, res: Response, d: ArtifactDownload): Promise<void> {
  res.set({
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': `attachment; filename="${d.filename}"`,
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'private, no-store',
    'Accept-Ranges': 'bytes',
  });
  if (d.range) {
    res.status(206);
    res.set('Content-Range', `bytes ${d.range.start}-${d.range.end}/${d.size}`);
    res.set('Content-Length', String(d.range.end - d.range.start + 1));
  } else {
    res.set('Content-Length', String(d.size));
  }
  if (req.method === 'HEAD') {
    d.stream.destroy();
    res.end();
    return;
  }
  try {
    await pipeline(d.stream, res);
  } catch (e) {
    // The client went away mid-download: nothing to answer and nothing wrong on our side.
    if (res.destroyed || (e as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
    throw e;
  }
}

/** HTML pages. Handlers parse, call one service, render. */
export function pageRoutes(ctx: AppContext): Router {
  const { core, config, render } = ctx;
  const r = Router();
  const max = config.web.maxDockerfileBytes;
  // In memory and capped: a rejected upload leaves no file anywhere. Client filenames are used only as the names of
  // build context files (checked by build-context.ts), never as paths on this machine.
  const upload = multer({
    storage: multer.memoryStorage(),
    defParamCharset: 'utf8',
    // Keep the name as sent: a "dir/file" name is refused with a message instead of silently becoming "file".
    preservePath: true,
    limits: {
      fileSize: MAX_CONTEXT_UPLOAD_BYTES,
      files: 1 + MAX_CONTEXT_ENTRIES,
      // _csrf, name, content, removeContext, and the git choice: origin, gitUrl, gitRef, gitPath, gitContext, gitFollow.
      fields: 10,
      parts: 12 + MAX_CONTEXT_ENTRIES,
      fieldSize: max * 2 + 1024,
      fieldNameSize: 32,
      headerPairs: 20,
    },
  }).fields([
    { name: 'file', maxCount: 1 },
    { name: 'context', maxCount: MAX_CONTEXT_ENTRIES },
  ]);
  // multer caps each file, not their sum: the whole body is capped here, before anything is buffered.
  const capMultipart = bodyCap(MAX_CONTEXT_UPLOAD_BYTES + 2 * max + 1024 * 1024, ctx.bigUploads, {
    requireLength: true,
  });
  const capBody = (req: Request, res: Response, next: (err?: unknown) => void): void =>
    req.is('multipart/form-data') ? capMultipart(req, res, next) : next();
  const formLimits = {
    maxKiB: Math.floor(max / 1024),
    contextMiB: MAX_CONTEXT_BYTES / (1024 * 1024),
    contextEntries: MAX_CONTEXT_ENTRIES,
  };

  r.get('/', (req, res) => res.redirect(303, req.user ? '/dockerfiles' : '/login'));

  r.get('/dockerfiles', requireUser, async (req, res) => {
    const actor = actorOf(req);
    const [dockerfiles, builds] = await Promise.all([core.dockerfiles.list(actor), core.builds.list(actor, 20)]);
    render(req, res, 'dockerfiles.njk', { dockerfiles, builds, quota: config.web.quotaDockerfiles });
  });

  r.get('/dockerfiles/new', requireUser, (req, res) => {
    render(req, res, 'dockerfile-new.njk', formLimits);
  });

  r.post('/dockerfiles', requireUser, capBody, upload, ctx.protect, async (req: Request, res: Response) => {
    const actor = actorOf(req);
    const body = (req.body ?? {}) as Record<string, unknown>;
    let content: string | undefined;
    try {
      const df = fromGit(body)
        ? await core.dockerfiles.create(actor, { name: body.name, source: sourceFromForm(body) })
        : await core.dockerfiles.create(actor, {
            name: body.name,
            content: (content = dockerfileFromForm(uploaded(req, 'file')[0], body.content, max)),
            context: contextFromForm(req, body),
          });
      res.redirect(303, `/dockerfiles/${df.id}`);
    } catch (e) {
      if (!isKilnError(e) || !FORM_ERRORS.includes(e.code)) throw e;
      render(
        req,
        res,
        'dockerfile-new.njk',
        {
          ...formLimits,
          ...refusalView(e, content ?? keptText(body.content, max)),
          name: typeof body.name === 'string' ? body.name.slice(0, 100) : '',
          content: content ?? keptText(body.content, max),
          git: keptSource(body),
        },
        e.httpStatus,
      );
    }
  });

  r.get('/dockerfiles/:id/edit', requireUser, async (req, res) => {
    const view = await core.dockerfiles.get(actorOf(req), req.params.id);
    render(req, res, 'dockerfile-new.njk', {
      ...formLimits,
      edit: view.dockerfile,
      context: view.context,
      name: view.dockerfile.name,
      content: view.version?.content ?? '',
      git: view.git && { ...view.git, on: true },
    });
  });

  r.post('/dockerfiles/:id', requireUser, capBody, upload, ctx.protect, async (req: Request, res: Response) => {
    const actor = actorOf(req);
    const body = (req.body ?? {}) as Record<string, unknown>;
    const view = await core.dockerfiles.get(actor, req.params.id);
    let content: string | undefined;
    try {
      if (fromGit(body)) await core.dockerfiles.setSource(actor, { id: req.params.id, source: sourceFromForm(body) });
      else {
        content = dockerfileFromForm(uploaded(req, 'file')[0], body.content, max);
        await core.dockerfiles.update(actor, { id: req.params.id, content, context: contextFromForm(req, body) });
      }
      res.redirect(303, `/dockerfiles/${view.dockerfile.id}`);
    } catch (e) {
      if (!isKilnError(e) || !FORM_ERRORS.includes(e.code)) throw e;
      render(
        req,
        res,
        'dockerfile-new.njk',
        {
          ...formLimits,
          ...refusalView(e, content ?? keptText(body.content, max)),
          edit: view.dockerfile,
          context: view.context,
          name: view.dockerfile.name,
          content: content ?? keptText(body.content, max),
          git: keptSource(body),
        },
        e.httpStatus,
      );
    }
  });

  r.get('/dockerfiles/:id', requireUser, async (req, res) => {
    const view = await core.dockerfiles.get(actorOf(req), req.params.id);
    render(req, res, 'dockerfile.njk', {
      ...view,
      releases: await core.releases.list(actorOf(req), { dockerfileId: view.dockerfile.id }),
      ...jobPage(await core.jobs.status(actorOf(req), req.params.id)),
      formKey: newFormKey(),
      hookUrl: hookUrl(config, req),
      webhook: await core.following.webhook(actorOf(req), { id: req.params.id }),
      feedToken: await core.following.feedToken(actorOf(req)),
    });
  });

  // The Dockerfile as a plain-text download: never rendered by the browser as HTML.
  r.get('/dockerfiles/:id/raw', requireUser, async (req, res) => {
    const view = await core.dockerfiles.get(actorOf(req), req.params.id);
    res.set({
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Disposition': `attachment; filename="kiln-dockerfile-${view.dockerfile.id}"`,
      'Cache-Control': 'private, no-store',
    });
    if (!view.version) throw new KilnError('not_found', 'Kiln has not fetched this Dockerfile from git yet.');
    res.send(view.version.content);
  });

  // A new webhook secret for a Dockerfile from git: the old one stops working at once.
  r.post('/dockerfiles/:id/git/secret', requireUser, async (req, res) => {
    await core.git.regenerateSecret(actorOf(req), req.params.id);
    res.redirect(303, `/dockerfiles/${String(req.params.id)}#git`);
  });

  r.post('/dockerfiles/:id/builds', requireUser, async (req, res) => {
    const { build } = await core.builds.request(actorOf(req), {
      dockerfileId: req.params.id,
      key: (req.body as Record<string, unknown>)?.key,
      trigger: 'manual',
    });
    res.redirect(303, `/builds/${build.id}`);
  });

  r.post('/builds/:id/cancel', requireUser, async (req, res) => {
    const b = await core.builds.cancel(actorOf(req), req.params.id);
    res.redirect(303, `/builds/${b.id}`);
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

/** Files multer kept for one form field. */
function uploaded(req: Request, field: 'file' | 'context'): Express.Multer.File[] {
  const files = req.files as Record<string, Express.Multer.File[] | undefined> | undefined;
  return files?.[field] ?? [];
}

/**
 * The form's build context: one `.tar` (read as a tar), or any other file(s) (put at the context's root under their
 * own names), or the "remove context" box. An empty file input sends one nameless empty part: that means "none".
 */
function contextFromForm(req: Request, body: Record<string, unknown>): ContextUpload | undefined {
  const files = uploaded(req, 'context').filter((f) => f.size > 0 || f.originalname !== '');
  const remove = body.removeContext === 'on' || body.removeContext === '1';
  if (remove && files.length)
    throw new KilnError('invalid_input', 'Either upload a new build context or remove the current one, not both.');
  if (remove) return { kind: 'remove' };
  if (files.length === 0) return undefined;
  if (files.length === 1 && /\.tar$/i.test(files[0]!.originalname)) return { kind: 'tar', data: files[0]!.buffer };
  return { kind: 'files', files: files.map((f) => ({ name: f.originalname, data: f.buffer })) };
}

/** The form's "from git" choice. */
const fromGit = (body: Record<string, unknown>): boolean => body.origin === 'git';

/** The form's git fields as the source command takes them (the core parses and checks each). */
function sourceFromForm(body: Record<string, unknown>): Record<string, unknown> {
  return {
    url: body.gitUrl,
    ref: body.gitRef,
    path: body.gitPath,
    context: body.gitContext,
    follow: body.gitFollow,
  };
}

/** The git fields to put back into a refused form (text only, cut short). */
function keptSource(body: Record<string, unknown>): Record<string, unknown> | undefined {
  if (!fromGit(body)) return undefined;
  const text = (v: unknown) => (typeof v === 'string' ? v.slice(0, 2048) : '');
  return {
    on: true,
    // A refused URL may hold a password: it is not shown again, not even to whoever typed it.
    url: text(body.gitUrl)
      .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/]*@/, '$1')
      .replace(/^[^/@:]*:[^/@]*@/, ''),
    ref: text(body.gitRef),
    path: text(body.gitPath),
    context: text(body.gitContext),
    follow: body.gitFollow === 'on',
  };
}

/** Refusals the Dockerfile form shows next to the text it keeps (anything else goes to the error page). */
const FORM_ERRORS: readonly string[] = [
  'invalid_input',
  'too_large',
  'conflict',
  'bad_request',
  'quota_exceeded',
  'insufficient_storage',
  'policy_violation',
];

/** Pasted text to put back into the form, unless it is absurdly large. */
function keptText(pasted: unknown, max: number): string {
  return typeof pasted === 'string' && pasted.length <= max * 2 ? pasted : '';
}

/**
 * What the form shows for a refusal: its message, or for a policy refusal the findings, each also next to the
 * line of the Dockerfile it is about.
 */
function refusalView(e: KilnError, content: string): Record<string, unknown> {
  const { findings } = policyFindings(e);
  if (!findings) return { error: e.message };
  const byLine = new Map<number, string[]>();
  for (const f of findings) byLine.set(f.line, [...(byLine.get(f.line) ?? []), f.message]);
  const lines = content.replace(/\r\n/g, '\n').replace(/\n$/, '').split('\n');
  const listing = lines.map((text, i) => ({ n: i + 1, text, findings: byLine.get(i + 1) ?? [] }));
  return { error: 'The Dockerfile policy refused this Dockerfile, so nothing was saved:', findings, listing };
}

/** Exactly one of: an uploaded file, or pasted text. */
function dockerfileFromForm(file: Express.Multer.File | undefined, pasted: unknown, max: number): string {
  const hasFile = !!file && file.size > 0;
  const hasText = typeof pasted === 'string' && pasted.trim().length > 0;
  if (hasFile && hasText) throw new KilnError('invalid_input', 'Give either a file or pasted text, not both.');
  if (hasFile) return decodeDockerfile(file.buffer, max);
  if (typeof pasted === 'string' && pasted.length > 0) {
    // multipart text fields are decoded leniently: a replacement character means the bytes were not UTF-8.
    if (pasted.includes('\uFFFD')) throw new KilnError('invalid_input', 'The Dockerfile is not valid UTF-8 text.');
    return pasted; // checked by the service
  }
  throw new KilnError('invalid_input', 'The Dockerfile is empty.');
}
