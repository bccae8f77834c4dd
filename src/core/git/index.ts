/**
 * Dockerfiles from git: a Dockerfile may take its text and build context from a repository (URL, ref, the
 * Dockerfile's path, the context directory) instead of an upload. A request only records the source (parsed by
 * `sourceCommand`) and enqueues `git.fetch`; the worker fetches (fetch.ts) and stores what it found as a version
 * that names its commit. See README.md "Dockerfiles from git".
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { FrozenConfig } from '../../config/index.js';
import { getGitSource, putGitSource, setWebhookSecret, type GitSourceRow, type Queryable } from '../../db/index.js';
import { KilnError } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import { parse, rule } from '../commands.js';
import type { CoreDeps } from '../deps.js';
import { dockerfileFor } from '../dockerfiles.js';
import { dockerfileSubject, enqueue } from '../tasks/queue.js';
import { branchOf, matchKey, parseGitUrl, parseRef, parseRepoPath, type GitUrl } from './url.js';

export { branchOf, isCommitId, matchKey, parseGitUrl, parseRef, parseRepoPath, type GitUrl } from './url.js';

/** What a source is once parsed: every field checked, the URL never holding a credential. */
export interface SourceInput {
  url: GitUrl;
  ref: string;
  path: string;
  context: string;
  follow: boolean;
}

const truthy = (v: unknown): boolean => v === true || v === 'on' || v === '1' || v === 'true';

/** The source command (form fields or JSON): `url`, `ref` (default HEAD), `path` (default Dockerfile), `context`, `follow`. */
export const sourceCommand = (config: Pick<FrozenConfig, 'git'>) =>
  z
    .object({
      url: rule((v) => parseGitUrl(v, config.git.mirrors)),
      ref: rule(parseRef),
      path: rule((v) =>
        parseRepoPath(v === undefined || v === '' ? 'Dockerfile' : v, { dir: false, what: "The Dockerfile's path" }),
      ),
      context: rule((v) => parseRepoPath(v, { dir: true, what: 'The context directory' })),
      follow: rule(truthy),
    })
    .transform((s, ctx): SourceInput => {
      if (s.follow && !branchOf(s.ref)) {
        ctx.addIssue({
          code: 'custom',
          message: 'Following needs a branch: name the branch (not HEAD, a tag path or a commit) as the ref.',
          params: {
            kiln: new KilnError(
              'invalid_input',
              'Following needs a branch: name the branch (not HEAD, a tag path or a commit) as the ref.',
            ),
          },
        });
        return z.NEVER;
      }
      return s;
    });

export const parseSource = (config: Pick<FrozenConfig, 'git'>, raw: unknown): SourceInput =>
  parse(sourceCommand(config), raw);

/** A secret for signing pushes to this Dockerfile's webhook: 32 random bytes, base64url. */
export const newWebhookSecret = (): string => randomBytes(32).toString('base64url');

/**
 * Records `src` as the Dockerfile's source (a new revision) and enqueues its fetch, inside the caller's transaction.
 */
export async function saveSource(
  trx: Queryable,
  d: Pick<CoreDeps, 'config' | 'now'>,
  dockerfileId: number,
  src: SourceInput,
): Promise<GitSourceRow> {
  const row = await putGitSource(
    trx,
    dockerfileId,
    {
      url: src.url.url,
      match_key: matchKey(src.url.url) ?? src.url.url.toLowerCase(),
      ref: src.ref,
      dockerfile_path: src.path,
      context_dir: src.context,
      follow: src.follow,
    },
    newWebhookSecret,
  );
  await enqueue(trx, d, 'git.fetch', dockerfileSubject(dockerfileId));
  return row;
}

/** What the Dockerfile page and the API show of a source. The secret is its owner's (and admins'), like the page. */
export interface GitSourceView {
  url: string;
  ref: string;
  path: string;
  context: string;
  follow: boolean;
  /** The branch following watches (the ref, as a branch), if any. */
  branch: string | null;
  /** The commit the current version came from, and when it was fetched. */
  commit: string | null;
  fetchedAt: string | null;
  /** Why the last fetch failed (shown until one succeeds). */
  fetchError: string | null;
  /** An edit not fetched yet. */
  pending: boolean;
  webhookSecret: string;
}

export function sourceView(g: GitSourceRow): GitSourceView {
  return {
    url: g.url,
    ref: g.ref,
    path: g.dockerfile_path,
    context: g.context_dir,
    follow: g.follow,
    branch: branchOf(g.ref) ?? null,
    commit: g.fetched_commit,
    fetchedAt: g.fetched_at,
    fetchError: g.fetch_error,
    pending: g.fetched_revision < g.revision,
    webhookSecret: g.webhook_secret,
  };
}

/** A new webhook secret for a git Dockerfile (the old one stops working at once). */
export async function regenerateSecret(d: CoreDeps, actor: Actor, rawId: unknown): Promise<void> {
  const df = await dockerfileFor(d.db, actor, rawId, 'dockerfile.update');
  if (!(await getGitSource(d.db, df.id))) throw new KilnError('conflict', 'This Dockerfile does not come from git.');
  await setWebhookSecret(d.db, df.id, newWebhookSecret());
}
