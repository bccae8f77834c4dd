import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import multer from 'multer';
import { KilnError, isKilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { isBusy, isDiskFull } from '../db/index.js';

/** Maps what libraries throw onto our codes; anything unknown stays unknown (-> generic 500). */
function classify(err: unknown): KilnError | undefined {
  if (isKilnError(err)) return err;
  if (err instanceof multer.MulterError) {
    if (err.code === 'LIMIT_FILE_SIZE' || err.code === 'LIMIT_FIELD_VALUE')
      return new KilnError('too_large', 'The upload is too large.');
    return new KilnError('bad_request', 'The upload has too many or unexpected parts: send one Dockerfile.');
  }
  const e = err as { type?: string; status?: number; statusCode?: number; code?: string };
  if (e?.type === 'entity.too.large' || e?.status === 413)
    return new KilnError('too_large', 'The request is too large.');
  if (e?.type === 'entity.parse.failed' || e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
    return new KilnError('bad_request', 'The request body is malformed.');
  }
  // busboy: malformed multipart
  if (err instanceof Error && /Multipart|Unexpected end of form|Malformed part header/i.test(err.message)) {
    return new KilnError('bad_request', 'The upload is malformed.');
  }
  if (isDiskFull(err)) {
    return new KilnError(
      'insufficient_storage',
      'The server is out of disk space: nothing was saved. Try again later; an admin has to free some space.',
    );
  }
  if (isBusy(err))
    return new KilnError('backend_unavailable', 'The server is busy; try again in a moment.', {
      detail: { retryAfterSeconds: 1 },
    });
  // Before the generic statuses below: csrf-sync's error is an http-error with status 403 too.
  if (e?.code === 'EBADCSRFTOKEN')
    return new KilnError('forbidden', 'The form expired or is invalid; reload the page and try again.');
  // http-errors from express itself, send (static files) and the router (bad %-encoding): client errors only.
  const st = e?.status ?? e?.statusCode;
  if (typeof st === 'number' && st >= 400 && st < 500) {
    if (st === 404) return new KilnError('not_found', 'Not found');
    if (st === 403) return new KilnError('forbidden', 'Forbidden');
    return new KilnError('bad_request', 'Bad request');
  }
  return undefined;
}

const TITLES: Record<number, string> = {
  400: 'Bad request',
  401: 'Please log in',
  403: 'Forbidden',
  404: 'Not found',
  409: 'Conflict',
  411: 'Length required',
  413: 'Too large',
  415: 'Unsupported encoding',
  416: 'Range not satisfiable',
  421: 'Wrong host name',
  422: 'Cannot accept this input',
  429: 'Slow down',
  500: 'Something went wrong',
  503: 'Temporarily unavailable',
  504: 'Timed out',
  507: 'Out of storage',
};

/** A policy refusal's findings ({line, message}, safe to show: they quote the user's own Dockerfile). */
export function policyFindings(ke: KilnError): { findings?: { line: number; message: string }[] } {
  return ke.code === 'policy_violation' && Array.isArray(ke.detail)
    ? { findings: ke.detail as { line: number; message: string }[] }
    : {};
}

/**
 * The REST API's one error shape: `{"error": {"code", "message", "details"?}}`. `details` carries only what is
 * meant for the client: a policy refusal's findings, the door's validation issues, when to retry, the methods a
 * path takes. Nothing else of an error's detail (which is for the log) ever leaves.
 */
export function apiErrorBody(ke: KilnError): {
  error: { code: string; message: string; details?: Record<string, unknown> };
} {
  const d = (ke.detail ?? {}) as Record<string, unknown>;
  const details = {
    ...policyFindings(ke),
    ...(Array.isArray(d.issues) ? { issues: d.issues } : {}),
    ...(typeof d.retryAfterSeconds === 'number' ? { retryAfterSeconds: d.retryAfterSeconds } : {}),
    ...(Array.isArray(d.allow) ? { allow: d.allow } : {}),
  };
  return { error: { code: ke.code, message: ke.message, ...(Object.keys(details).length ? { details } : {}) } };
}

/** Under /api/v1 every answer is JSON in the API's shape, whatever refused the request and wherever. */
export const isApiV1 = (req: Request): boolean => /^\/api\/v1(?:[/?]|$)/.test(req.originalUrl);

export function notFoundHandler(): RequestHandler {
  return (_req, _res, next) => next(new KilnError('not_found', 'Not found'));
}

/**
 * The one error handler, registered last. Known errors become their status and safe message; unknown ones become
 * a generic 500 whose detail (stack) goes only to the log.
 */
/** What an error answers with: its status, the page title, the user's message (unknown errors: a generic 500). */
export function toHttpError(err: unknown): {
  ke: KilnError;
  known: boolean;
  status: number;
  title: string;
  message: string;
  retryAfterSeconds?: number;
} {
  const known = classify(err);
  const ke = known ?? new KilnError('internal', 'Internal error');
  const detail = (ke.detail ?? {}) as { retryAfterSeconds?: number; status?: number };
  const status = detail.status ?? ke.httpStatus;
  return {
    ke,
    known: known !== undefined,
    status,
    title: TITLES[status] ?? 'Error',
    message: ke.message,
    ...(detail.retryAfterSeconds ? { retryAfterSeconds: detail.retryAfterSeconds } : {}),
  };
}

export function errorHandler(deps: {
  logger: Logger;
  render: (req: Request, res: Response, view: string, ctx?: Record<string, unknown>, status?: number) => void;
  wantsJson: (req: Request) => boolean;
}): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const { ke, known, status, title, retryAfterSeconds } = toHttpError(err);
    const detail = (ke.detail ?? {}) as { size?: number };
    if (!known || status >= 500) {
      deps.logger.error({ err, method: req.method, path: req.path, status }, 'request failed');
    } else {
      deps.logger.info({ code: ke.code, method: req.method, path: req.path, status }, 'request refused');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (retryAfterSeconds) res.set('Retry-After', String(retryAfterSeconds));
    if (status === 416 && detail.size !== undefined) res.set('Content-Range', `bytes */${detail.size}`);
    res.set('Cache-Control', 'no-store');
    if (status === 401 && !deps.wantsJson(req) && req.method === 'GET') {
      res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
      return;
    }
    if (isApiV1(req)) {
      res.status(status).json(apiErrorBody(ke));
      return;
    }
    if (deps.wantsJson(req)) {
      res.status(status).json({ error: { code: ke.code, message: ke.message, ...policyFindings(ke) } });
      return;
    }
    // render never throws: a page that fails to render is logged and answered there.
    deps.render(req, res, 'error.njk', { status, title, message: ke.message }, status);
  };
}
