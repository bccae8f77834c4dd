/**
 * The Express side of the REST API: each route of the table registered with, in order, the token check (401, then
 * 403 beyond the route's scope), the token's rate limit (429 + Retry-After), its body parser, the validation of
 * params, query, headers and body against the route's own schemas (422; a malformed id is 404, like an unknown
 * one), then the handler. Anything else under /api/v1 is 404, or 405 with Allow for a known path.
 *
 * Only bearer tokens authenticate here: this router runs before the session middleware, so a cookie is never read
 * and a cross-site request carrying one is as anonymous as any other (401). That is why no CSRF token is needed.
 */
import express, { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import multer from 'multer';
import { rateLimit } from 'express-rate-limit';
import type { z } from 'zod';
import { MAX_CONTEXT_UPLOAD_BYTES, authorizeScope, type UserActor } from '../../core/index.js';
import { KilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { bodyCap, jsonBody, newBigUploadGate } from '../upload-limits.js';
import { ClockStore } from './rate-store.js';
import { expressPath, type V1Route } from './define.js';

/** A request's checked values, or a 422 naming the first problem and listing all (`details.issues`). */
function check<T>(where: string, schema: z.ZodType<T> | undefined, value: unknown): T | undefined {
  if (!schema) return undefined;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  // An id that is not one names nothing: the same answer as an unknown id.
  if (where === 'params' && r.error.issues.some((i) => i.path[0] === 'id'))
    throw new KilnError('not_found', 'Not found');
  throw new KilnError('invalid_input', `${issues[0]!.path}: ${issues[0]!.message}`, { detail: { issues } });
}

/** The headers a route declares, by their documented names (HTTP header names are case-insensitive). */
function headersOf(req: Request, schema: z.ZodObject | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(schema?.shape ?? {})) {
    const v = req.get(name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

const hasBody = (req: Request): boolean =>
  (req.get('content-length') !== undefined && req.get('content-length') !== '0') ||
  req.get('transfer-encoding') !== undefined;

export function v1Router(ctx: AppContext, table: readonly V1Route[]): Router {
  const { core, config } = ctx;
  const r = Router();
  r.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  const authenticate =
    (route: V1Route): RequestHandler =>
    async (req: Request, res: Response, next: NextFunction) => {
      if (route.scope === 'public') return next();
      const actor = await core.tokens.actor(req.get('authorization'), req.ip);
      if (route.scope !== 'any') authorizeScope(actor, route.scope);
      res.locals.actor = actor;
      next();
    };

  const limiter = rateLimit({
    windowMs: config.api.rateWindowSeconds * 1000,
    limit: config.api.rateLimit,
    store: new ClockStore(ctx.now),
    keyGenerator: (_req, res) => `token:${(res.locals.actor as UserActor).tokenId}`,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    validate: { xForwardedForHeader: false, keyGeneratorIpFallback: false },
    handler: (req, _res, next) => {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const retryAfterSeconds = Math.max(1, Math.ceil(((reset ?? 0) - ctx.now()) / 1000));
      next(
        new KilnError(
          'rate_limited',
          `This API token made more than ${config.api.rateLimit} requests in ${config.api.rateWindowSeconds} s; wait ${retryAfterSeconds} s.`,
          { detail: { retryAfterSeconds } },
        ),
      );
    },
  });

  const json = jsonBody(64 * 1024, ctx.bigUploads);
  const maxText = config.web.maxDockerfileBytes;
  const capMultipart = bodyCap(MAX_CONTEXT_UPLOAD_BYTES + 2 * maxText + 1024 * 1024, ctx.bigUploads, {
    requireLength: true,
  });
  // In memory and capped, as the page's upload: a refused upload leaves nothing anywhere.
  const multipart = multer({
    storage: multer.memoryStorage(),
    limits: {
      fileSize: MAX_CONTEXT_UPLOAD_BYTES,
      files: 2,
      fields: 4,
      parts: 6,
      fieldSize: 2 * maxText + 64 * 1024,
      fieldNameSize: 32,
      headerPairs: 20,
    },
  }).fields([
    { name: 'dockerfile', maxCount: 1 },
    { name: 'context', maxCount: 1 },
  ]);
  const parseBody = (route: V1Route): RequestHandler[] => {
    if (!route.body) return [];
    const kind = route.body.kind;
    if (kind === 'raw') {
      // Small by declaration (a webhook): capped before reading, never counted as a big upload.
      const max = route.body.maxBytes ?? 64 * 1024;
      return [
        bodyCap(max, newBigUploadGate(), { requireLength: false }),
        express.raw({ type: () => true, limit: max, inflate: false }),
      ];
    }
    const type = kind === 'json' ? 'application/json' : 'multipart/form-data';
    const wrongType: RequestHandler = (req, _res, next) =>
      hasBody(req) && !req.is(type)
        ? next(new KilnError('bad_request', `Send the body as ${type}.`, { detail: { status: 415 } }))
        : next();
    return kind === 'json'
      ? [wrongType, json]
      : [wrongType, (req, res, next) => (req.is(type) ? capMultipart(req, res, next) : next()), multipart];
  };

  for (const route of table) {
    const handler: RequestHandler = async (req, res) => {
      const ac = new AbortController();
      res.on('close', () => ac.abort());
      const body =
        route.body?.kind === 'multipart'
          ? multipartBody(req)
          : ((req.body as unknown) ?? (route.body ? {} : undefined));
      await route.handle({
        req,
        res,
        get actor(): UserActor {
          const a = res.locals.actor as UserActor | undefined;
          if (!a) throw new KilnError('internal', 'a public route asked for an actor');
          return a;
        },
        params: check('params', route.params, req.params),
        query: check('query', route.query, req.query),
        headers: check('headers', route.headers, headersOf(req, route.headers)),
        body: route.body?.kind === 'raw' ? undefined : check('body', route.body?.schema, body),
        signal: ac.signal,
      });
    };
    const chain = [authenticate(route), ...(route.scope === 'public' ? [] : [limiter]), ...parseBody(route), handler];
    r[route.method](expressPath(route.path), ...chain);
  }

  // Not a route: 405 with the methods a known path takes, else 404; in the API's shape either way.
  const patterns = table.map((t) => ({
    re: new RegExp(`^${t.path.replace(/[.]/g, '\\.').replace(/\{\w+\}/g, '[^/]+')}/?$`),
    method: t.method.toUpperCase(),
  }));
  r.use((req: Request, res: Response, next: NextFunction) => {
    const allow = [...new Set(patterns.filter((p) => p.re.test(req.path)).map((p) => p.method))];
    if (allow.includes('GET')) allow.push('HEAD');
    if (allow.length === 0)
      return next(new KilnError('not_found', `No such API route: ${req.method} /api/v1${req.path}`));
    res.set('Allow', allow.join(', '));
    next(
      new KilnError('method_not_allowed', `${req.method} is not a method of this path; it takes ${allow.join(', ')}.`, {
        detail: { allow },
      }),
    );
  });
  return r;
}

/** A multipart request as one object: each file part's bytes (or a text field of that name), the text fields, and `settings` parsed as JSON. */
function multipartBody(req: Request): Record<string, unknown> {
  const files = (req.files ?? {}) as Record<string, Express.Multer.File[] | undefined>;
  const fields = { ...((req.body ?? {}) as Record<string, unknown>) };
  const out: Record<string, unknown> = { ...fields };
  for (const [name, list] of Object.entries(files)) if (list?.[0]) out[name] = list[0].buffer;
  if (typeof fields.settings === 'string') {
    try {
      out.settings = JSON.parse(fields.settings) as unknown;
    } catch {
      throw new KilnError('invalid_input', 'body.settings: not JSON.', {
        detail: { issues: [{ path: 'body.settings', message: 'not JSON' }] },
      });
    }
  }
  return out;
}
