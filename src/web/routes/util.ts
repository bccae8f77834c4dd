import { randomBytes } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { KilnError } from '../../shared/errors.js';
import type { BuildRow, DockerfileListItem } from '../../db/index.js';
import { isFinal } from '../../db/index.js';
import { userActor, type GitSourceView, type UserActor } from '../../core/index.js';

export function requireUser(req: Request, _res: Response, next: NextFunction): void {
  if (!req.user) return next(new KilnError('unauthenticated', 'Please log in.'));
  next();
}

/** The request's actor for the core: the session's user (later an API token's). */
export const actorOf = (req: Request): UserActor => {
  if (!req.user) throw new KilnError('unauthenticated', 'Please log in.');
  return userActor(req.user, 'session', req.ip);
};

/** A fresh idempotency key per rendered Build form: a double click or a replayed POST maps to one build. */
export const newFormKey = (): string => `k${randomBytes(18).toString('base64url')}`; // protocol tokens start alphanumeric

/** A Dockerfile in a list (the JSON API and the REST API). */
export const dockerfileSummaryJson = (d: DockerfileListItem) => ({
  id: d.id,
  name: d.name,
  owner: d.owner,
  size: d.size,
  builds: d.builds,
  updatedAt: d.updated_at,
});

/**
 * The artifacts a build's JSON lists: none once retention dropped them (`artifactsExpiredAt` says when); while
 * verifying, not the builder's SHA256SUMS (the web's replaces it once signed).
 */
export const servedArtifacts = (b: BuildRow) =>
  b.artifacts_expired_at ? [] : b.artifacts.filter((a) => b.state !== 'verifying' || !a.name.startsWith('SHA256SUMS'));

/** The JSON shape of a build (API and the build page's script). */
export function buildJson(b: BuildRow): Record<string, unknown> {
  return {
    id: b.id,
    dockerfileId: b.dockerfile_id,
    state: b.state,
    final: isFinal(b.state),
    backendBuild: b.backend_build,
    reason: b.reason,
    progress: b.progress,
    artifacts: servedArtifacts(b).map((a) => ({
      name: a.name,
      size: a.size,
      sha256: a.sha256 ?? null,
      url: `/builds/${b.id}/artifacts/${encodeURIComponent(a.name)}`,
    })),
    pinned: b.pinned,
    artifactsExpiredAt: b.artifacts_expired_at,
    imageSha256: b.image_sha256,
    requeues: b.requeues,
    requeueReason: b.requeue_reason,
    trigger: b.trigger,
    gitCommit: b.git_commit,
    requestedAt: b.requested_at,
    queuedAt: b.queued_at,
    startedAt: b.started_at,
    finishedAt: b.finished_at,
  };
}

/** The cookie names of this app (`app.get('kiln.cookie')`): the session's and the device cookie's. */
export interface CookieNames {
  name: string;
  secure: boolean;
  device: string;
}

/** One cookie's value from the request (express-session parses only its own). */
export function readCookie(req: Request, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The `next=` target after login: only a same-origin relative path. Anything else (scheme, `//host`, `/\host`,
 * encoded variants, control characters) becomes `/`.
 */
export function safeNext(v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 2048) return '/';
  if (!v.startsWith('/') || v.startsWith('//') || v.startsWith('/\\')) return '/';
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(v)) return '/';
  const base = new URL('http://kiln.invalid');
  let u: URL;
  try {
    u = new URL(v, base);
  } catch {
    return '/';
  }
  if (u.origin !== base.origin) return '/';
  return u.pathname + u.search + u.hash;
}

/** A git source in the API: where it points and how the last fetch went (the webhook secret is on the page only). */
export function gitJson(g: GitSourceView): Record<string, unknown> {
  return {
    url: g.url,
    ref: g.ref,
    path: g.path,
    context: g.context,
    follow: g.follow,
    commit: g.commit,
    fetchedAt: g.fetchedAt,
    fetchError: g.fetchError,
    pending: g.pending,
  };
}

/** Where forges send pushes (the Dockerfile page shows it): the public URL's, or the address the page was asked for. */
export const hookUrl = (config: { web: { publicUrl?: string | undefined } }, req: Request): string =>
  `${config.web.publicUrl?.replace(/\/+$/, '') ?? `${req.protocol}://${req.get('host') ?? ''}`}/api/v1/hooks/git`;
