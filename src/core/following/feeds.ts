/**
 * Atom feeds of ended builds: one per user (every Dockerfile of theirs), one per Dockerfile. Feed readers cannot log
 * in, so each user may have ONE feed token, made, rotated and revoked on the account page: `kfeed_<16 hex: public
 * id>_<43 base64url: 256 random bits>`, shown once, only its SHA-256 stored (as API tokens, tokens.ts). It is not an
 * API token: it reads these feeds of its owner and nothing else, so a token that leaks out of a feed reader's
 * settings or a proxy's log (it travels in the URL) shows build ends and package changes, not logs, artifacts or
 * any action. A wrong, revoked or unknown token, a disabled account, and a Dockerfile that is missing or not the
 * token owner's all get the same `not_found`, so the feed says nothing of what exists.
 *
 * Entries: the newest FEED_ENTRIES ended builds that have their notice (notify.ts), newest first, each with its
 * state, trigger, times, reason and the package diff the notice recorded.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  deleteFeedToken,
  feedItems,
  findDockerfile,
  findFeedToken,
  getFeedToken,
  putFeedToken,
  type FeedItem,
} from '../../db/index.js';
import { KilnError } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { authorize, requireUser } from '../policy.js';
import { renderAtom, type AtomEntry } from './atom.js';
import type { NoticeDiff } from './notify.js';

/** Entries in one feed. */
export const FEED_ENTRIES = 30;
const TOKEN_RE = /^kfeed_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

const digest = (t: string) => createHash('sha256').update(t).digest();
const noFeed = () => new KilnError('not_found', 'No such feed.');

/** Makes (or replaces: the old one stops at once) the actor's feed token; returned here only. */
export async function rotateFeedToken(d: Pick<CoreDeps, 'db'>, actor: Actor): Promise<{ token: string }> {
  authorize(actor, 'token.manage');
  const me = requireUser(actor);
  const publicId = randomBytes(8).toString('hex');
  const token = `kfeed_${publicId}_${randomBytes(32).toString('base64url')}`;
  await putFeedToken(d.db, me.id, publicId, digest(token).toString('hex'));
  return { token };
}

export async function revokeFeedToken(d: Pick<CoreDeps, 'db'>, actor: Actor): Promise<{ revoked: boolean }> {
  authorize(actor, 'token.manage');
  return { revoked: await deleteFeedToken(d.db, requireUser(actor).id) };
}

/** Whether the actor has a feed token, and since when (never the token). */
export async function feedTokenStatus(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
): Promise<{ exists: boolean; createdAt: string | null }> {
  authorize(actor, 'token.manage');
  const t = await getFeedToken(d.db, requireUser(actor).id);
  return { exists: !!t, createdAt: t?.created_at ?? null };
}

const DUMMY = digest('kfeed_0000000000000000_none');

/** The public id a feed request's token claims (its rate limit's key), or undefined for no token at all. */
export const feedTokenId = (raw: unknown): string | undefined =>
  typeof raw === 'string' ? TOKEN_RE.exec(raw)?.[1] : undefined;

/** The token's owner, or `not_found` for any failure (the same answer, and the same digest comparison, each time). */
async function feedOwner(d: Pick<CoreDeps, 'db'>, raw: unknown): Promise<{ id: number; username: string }> {
  const m = typeof raw === 'string' ? TOKEN_RE.exec(raw) : null;
  const row = m ? await findFeedToken(d.db, m[1]!) : undefined;
  const stored = row ? Buffer.from(row.secret_sha256, 'hex') : DUMMY;
  const same = timingSafeEqual(stored, m ? digest(raw as string) : digest(''));
  if (!row || !same || !row.active) throw noFeed();
  return { id: row.user_id, username: row.username };
}

function diffLines(diff: NoticeDiff | null): string[] {
  if (!diff) return [];
  const arch = (a?: string) => (a ? `:${a}` : '');
  const lines = [
    `Packages since build #${diff.previousBuild}: ${diff.changed.length} changed, ${diff.added.length} added, ${diff.removed.length} removed, ${diff.unchanged} unchanged.`,
    ...diff.changed.map((c) => `  upgraded ${c.name}${arch(c.architecture)} ${c.from} -> ${c.to}`),
    ...diff.added.map((p) => `  added ${p.name}${arch(p.architecture)} ${p.version}`),
    ...diff.removed.map((p) => `  removed ${p.name}${arch(p.architecture)} ${p.version}`),
  ];
  return lines;
}

/** A short summary of the diff for the entry's title: the first few changed packages. */
function diffTitle(diff: NoticeDiff | null): string {
  if (!diff) return '';
  const parts = diff.changed.slice(0, 3).map((c) => `${c.name} ${c.from} -> ${c.to}`);
  const more = diff.changed.length + diff.added.length + diff.removed.length - parts.length;
  if (parts.length === 0 && more === 0) return ': no package changes';
  return `: ${[...parts, ...(more > 0 ? [`${more} more package changes`] : [])].join(', ')}`;
}

function entryOf(base: string, b: FeedItem): AtomEntry {
  const diff = b.diff as NoticeDiff | null;
  const link = `${base}/builds/${b.id}`;
  const content = [
    `${b.dockerfile_name} build #${b.id}: ${b.state}`,
    `Trigger: ${b.trigger}`,
    `Requested: ${b.requested_at}`,
    ...(b.started_at ? [`Started: ${b.started_at}`] : []),
    ...(b.finished_at ? [`Finished: ${b.finished_at}`] : []),
    ...(b.git_commit ? [`Commit: ${b.git_commit}`] : []),
    ...(b.reason ? [`Reason: ${b.reason}`] : []),
    ...diffLines(diff),
  ].join('\n');
  return {
    id: link,
    title: `${b.dockerfile_name} #${b.id} ${b.state}${diffTitle(diff)}`,
    updated: b.finished_at ?? b.updated_at,
    published: b.requested_at,
    link,
    author: b.owner,
    categories: [
      { scheme: 'https://kiln.dev/ns/state', term: b.state },
      { scheme: 'https://kiln.dev/ns/trigger', term: b.trigger },
    ],
    content,
  };
}

/**
 * The feed of the token's owner (`dockerfile` absent) or of one of their Dockerfiles, as Atom XML. `base`: the
 * site's URL (links and ids are absolute).
 */
export async function feedXml(
  d: Pick<CoreDeps, 'db'>,
  o: { token: unknown; dockerfile?: unknown; base: string },
): Promise<string> {
  const owner = await feedOwner(d, o.token);
  const base = o.base.replace(/\/+$/, '');
  let dockerfileId: number | undefined;
  let title = `Kiln builds of ${owner.username}`;
  let path = '/feeds/user.atom';
  let alternate = `${base}/builds`;
  if (o.dockerfile !== undefined) {
    const id = typeof o.dockerfile === 'string' && /^[1-9][0-9]{0,11}$/.test(o.dockerfile) ? Number(o.dockerfile) : 0;
    const df = id ? await findDockerfile(d.db, id, owner.id) : undefined;
    if (!df) throw noFeed();
    dockerfileId = df.id;
    title = `Kiln builds of ${df.name}`;
    path = `/feeds/dockerfiles/${df.id}.atom`;
    alternate = `${base}/dockerfiles/${df.id}`;
  }
  const items = await feedItems(d.db, {
    ownerId: owner.id,
    ...(dockerfileId !== undefined ? { dockerfileId } : {}),
    limit: FEED_ENTRIES,
  });
  const entries = items.map((b) => entryOf(base, b));
  return renderAtom({
    id: `${base}${path}`,
    title,
    // A feed without entries still needs a stable time: the epoch says "nothing yet".
    updated: entries.reduce((t, e) => (e.updated > t ? e.updated : t), '1970-01-01T00:00:00.000Z'),
    self: `${base}${path}`,
    alternate,
    entries,
  });
}
