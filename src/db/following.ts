/**
 * Following a Dockerfile (migration 016, src/core/following): feed tokens, outgoing webhooks, the notice written
 * once per ended build (with its package diff), and webhook deliveries. Every state move of a delivery is a guarded
 * update from `pending`, so a late attempt of a worker that lost its lease cannot undo a delivery.
 */
import { toBuildRow, type BuildRow } from './builds.js';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

// ------------------------------------------------------------------------------------------------ feed tokens
export interface FeedTokenRow {
  user_id: number;
  public_id: string;
  secret_sha256: string;
  created_at: string;
}

/** Sets the user's one feed token (a new one replaces the old, which stops working at once). */
export async function putFeedToken(
  db: Queryable,
  userId: number,
  publicId: string,
  secretSha256: string,
): Promise<void> {
  await db('feed_tokens')
    .insert({ user_id: userId, public_id: publicId, secret_sha256: secretSha256, created_at: nowIso() })
    .onConflict('user_id')
    .merge(['public_id', 'secret_sha256', 'created_at']);
}

export async function deleteFeedToken(db: Queryable, userId: number): Promise<boolean> {
  return Number(await db('feed_tokens').where({ user_id: userId }).delete()) > 0;
}

export async function getFeedToken(db: Queryable, userId: number): Promise<FeedTokenRow | undefined> {
  return db('feed_tokens').where({ user_id: userId }).first<FeedTokenRow | undefined>();
}

/** A feed token by its public id, with whether its owner may use Kiln now (enabled and approved). */
export async function findFeedToken(
  db: Queryable,
  publicId: string,
): Promise<(FeedTokenRow & { username: string; active: boolean }) | undefined> {
  const r = await db('feed_tokens as f')
    .join('users as u', 'u.id', 'f.user_id')
    .where('f.public_id', publicId)
    .first<Record<string, unknown> | undefined>('f.*', 'u.username', 'u.disabled', 'u.approved');
  if (!r) return undefined;
  return {
    user_id: Number(r.user_id),
    public_id: String(r.public_id),
    secret_sha256: String(r.secret_sha256),
    created_at: String(r.created_at),
    username: String(r.username),
    active: !r.disabled && r.approved !== false && r.approved !== 0,
  };
}

// ------------------------------------------------------------------------------------------------ webhooks
export interface WebhookRow {
  dockerfile_id: number;
  url: string;
  secret: string;
  created_at: string;
  updated_at: string;
}

export async function getWebhook(db: Queryable, dockerfileId: number): Promise<WebhookRow | undefined> {
  const r = await db('dockerfile_webhooks').where({ dockerfile_id: dockerfileId }).first<WebhookRow | undefined>();
  return r && { ...r, dockerfile_id: Number(r.dockerfile_id) };
}

/** Sets the webhook's URL; a new webhook gets `secret` (an existing one keeps its own). Returns the row. */
export async function putWebhook(
  db: Queryable,
  dockerfileId: number,
  url: string,
  secret: string,
): Promise<WebhookRow> {
  const now = nowIso();
  await db('dockerfile_webhooks')
    .insert({ dockerfile_id: dockerfileId, url, secret, created_at: now, updated_at: now })
    .onConflict('dockerfile_id')
    .merge(['url', 'updated_at']);
  return (await getWebhook(db, dockerfileId))!;
}

export async function setWebhookSecretOf(db: Queryable, dockerfileId: number, secret: string): Promise<boolean> {
  return (
    Number(
      await db('dockerfile_webhooks').where({ dockerfile_id: dockerfileId }).update({ secret, updated_at: nowIso() }),
    ) > 0
  );
}

export async function deleteWebhook(db: Queryable, dockerfileId: number): Promise<boolean> {
  return Number(await db('dockerfile_webhooks').where({ dockerfile_id: dockerfileId }).delete()) > 0;
}

// ------------------------------------------------------------------------------------------------ notices
export async function hasNotice(db: Queryable, buildId: number): Promise<boolean> {
  return !!(await db('build_notices').where({ build_id: buildId }).first('build_id'));
}

/** Records the build's notice once (a second call, a retried task, changes nothing). Returns whether it was new. */
export async function insertNotice(
  db: Queryable,
  n: { build_id: number; dockerfile_id: number; diff: unknown },
): Promise<boolean> {
  const rows = await db('build_notices')
    .insert({ ...n, diff: n.diff == null ? null : JSON.stringify(n.diff), created_at: nowIso() })
    .onConflict('build_id')
    .ignore()
    .returning('build_id');
  return rows.length > 0;
}

/** Ended builds without a notice (a crash between a build's end and its `build.notify`), oldest first. */
export async function buildsWithoutNotice(db: Queryable, states: readonly string[], limit: number): Promise<number[]> {
  const rows = await db('builds as b')
    .leftJoin('build_notices as n', 'n.build_id', 'b.id')
    .whereIn('b.state', states as string[])
    .whereNull('n.build_id')
    .orderBy('b.id')
    .limit(limit)
    .select<{ id: number }[]>('b.id');
  return rows.map((r) => Number(r.id));
}

export interface FeedItem extends BuildRow {
  dockerfile_name: string;
  owner: string;
  /** The stored package diff (JSON), null when there was nothing to compare. */
  diff: unknown;
}

/** The newest ended-and-noticed builds of one owner, or of one of their Dockerfiles: a feed's entries. */
export async function feedItems(
  db: Queryable,
  f: { ownerId: number; dockerfileId?: number; limit: number },
): Promise<FeedItem[]> {
  const q = db('builds as b')
    .join('build_notices as n', 'n.build_id', 'b.id')
    .join('dockerfiles as d', 'd.id', 'b.dockerfile_id')
    .join('users as u', 'u.id', 'b.owner_id')
    .where('b.owner_id', f.ownerId);
  if (f.dockerfileId !== undefined) void q.where('b.dockerfile_id', f.dockerfileId);
  const rows = await q
    .select('b.*', 'd.name as dockerfile_name', 'u.username as owner', 'n.diff as notice_diff')
    .orderBy('b.id', 'desc')
    .limit(f.limit);
  return rows.map((r: Record<string, unknown>) => ({
    ...toBuildRow(r),
    dockerfile_name: String(r.dockerfile_name),
    owner: String(r.owner),
    diff: typeof r.notice_diff === 'string' ? (JSON.parse(r.notice_diff) as unknown) : null,
  }));
}

// ------------------------------------------------------------------------------------------------ deliveries
export const DELIVERY_STATES = ['pending', 'delivered', 'failed'] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

export interface DeliveryRow {
  id: number;
  delivery_id: string;
  build_id: number;
  dockerfile_id: number;
  event: string;
  body: string;
  state: DeliveryState;
  attempts: number;
  response_status: number | null;
  error: string | null;
  created_at: string;
  attempted_at: string | null;
  delivered_at: string | null;
}

const toDelivery = (r: Record<string, unknown>): DeliveryRow => ({
  ...(r as unknown as DeliveryRow),
  id: Number(r.id),
  build_id: Number(r.build_id),
  dockerfile_id: Number(r.dockerfile_id),
  attempts: Number(r.attempts),
  response_status: r.response_status == null ? null : Number(r.response_status),
});

/** One delivery per build end: a second insert for the build returns the first (same delivery id). */
export async function insertDelivery(
  db: Queryable,
  d: Pick<DeliveryRow, 'delivery_id' | 'build_id' | 'dockerfile_id' | 'event' | 'body'>,
): Promise<DeliveryRow> {
  await db('webhook_deliveries')
    .insert({ ...d, state: 'pending', attempts: 0, created_at: nowIso() })
    .onConflict('build_id')
    .ignore();
  return toDelivery(await db('webhook_deliveries').where({ build_id: d.build_id }).first());
}

export async function getDelivery(db: Queryable, id: number): Promise<DeliveryRow | undefined> {
  const r = await db('webhook_deliveries').where({ id }).first();
  return r ? toDelivery(r) : undefined;
}

export async function listDeliveries(db: Queryable, dockerfileId: number, limit: number): Promise<DeliveryRow[]> {
  const rows = await db('webhook_deliveries').where({ dockerfile_id: dockerfileId }).orderBy('id', 'desc').limit(limit);
  return rows.map(toDelivery);
}

/** Records one attempt of a pending delivery, and its outcome when it is final (delivered or failed). */
export async function recordAttempt(
  db: Queryable,
  id: number,
  a: { status: number | null; error: string | null; state: DeliveryState },
): Promise<boolean> {
  const now = nowIso();
  const n = await db('webhook_deliveries')
    .where({ id, state: 'pending' })
    .update({
      attempts: db.raw('attempts + 1'),
      response_status: a.status,
      error: a.error,
      state: a.state,
      attempted_at: now,
      ...(a.state === 'delivered' ? { delivered_at: now } : {}),
    });
  return Number(n) > 0;
}

/** Ends a pending delivery as failed without an attempt (the task gave up, or the webhook went away). */
export async function failDelivery(db: Queryable, id: number, error: string): Promise<boolean> {
  return Number(await db('webhook_deliveries').where({ id, state: 'pending' }).update({ state: 'failed', error })) > 0;
}
