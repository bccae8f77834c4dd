/**
 * A Dockerfile's outgoing webhook: a URL (checked when saved: http(s), public addresses only unless an admin allows
 * the host) and a generated secret, returned once when made or rotated. The worker POSTs each build end to it
 * (`webhook.deliver`): the body fixed when the build ended plus the attempt's `timestamp`, signed as
 * `X-Kiln-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, with `X-Kiln-Delivery` (the same id on every
 * attempt) and `X-Kiln-Timestamp` (equal to the body's, so the signature covers it).
 *
 * Outcomes of an attempt: 2xx delivered; 5xx, 408, 425, 429, a network error or the deadline: retried with the
 * queue's backoff until worker.maxAttempts, then failed; any other answer (3xx: redirects are not followed, 4xx),
 * an address Kiln does not send to, or the webhook removed: failed at once. Every attempt is recorded on the
 * delivery (response code or error), listed on the Dockerfile's settings.
 */
import { createHmac, randomBytes } from 'node:crypto';
import {
  deleteWebhook,
  failDelivery,
  getDelivery,
  getWebhook,
  listDeliveries,
  putWebhook,
  recordAttempt,
  setWebhookSecretOf,
  type DeliveryRow,
  type DockerfileRow,
  type WebhookRow,
} from '../../db/index.js';
import { KilnError, isKilnError } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { dockerfileByName, dockerfileFor } from '../dockerfiles.js';
import type { OwnedAction } from '../policy.js';
import { clockOf } from '../deps.js';
import type { TaskKind } from '../tasks/worker.js';
import { checkedWebhookAddress, parseWebhookUrl, postPinned } from './net.js';
import { deliveryIdOf } from './notify.js';

/** The Dockerfile a call names: by id (pages) or by the actor's own name (the REST API). */
export type DockerfileRef = { id: unknown } | { name: unknown };

/** Deliveries listed with the webhook. */
const LISTED = 20;

export interface DeliveryView {
  id: string;
  build: number;
  event: string;
  state: DeliveryRow['state'];
  attempts: number;
  responseStatus: number | null;
  error: string | null;
  createdAt: string;
  attemptedAt: string | null;
  deliveredAt: string | null;
}
export interface WebhookView {
  url: string;
  createdAt: string;
  updatedAt: string;
  deliveries: DeliveryView[];
}

const target = (d: CoreDeps, actor: Actor, ref: DockerfileRef, action: OwnedAction): Promise<DockerfileRow> =>
  'name' in ref ? dockerfileByName(d.db, actor, ref.name, action) : dockerfileFor(d.db, actor, ref.id, action);

const newSecret = (): string => randomBytes(32).toString('base64url');

const deliveryView = (r: DeliveryRow): DeliveryView => ({
  id: r.delivery_id,
  build: r.build_id,
  event: r.event,
  state: r.state,
  attempts: r.attempts,
  responseStatus: r.response_status,
  error: r.error,
  createdAt: r.created_at,
  attemptedAt: r.attempted_at,
  deliveredAt: r.delivered_at,
});

async function viewOf(d: CoreDeps, w: WebhookRow): Promise<WebhookView> {
  return {
    url: w.url,
    createdAt: w.created_at,
    updatedAt: w.updated_at,
    deliveries: (await listDeliveries(d.db, w.dockerfile_id, LISTED)).map(deliveryView),
  };
}

/** The webhook (never its secret) and its recent deliveries, or null. */
export async function getWebhookView(d: CoreDeps, actor: Actor, ref: DockerfileRef): Promise<WebhookView | null> {
  const df = await target(d, actor, ref, 'dockerfile.read');
  const w = await getWebhook(d.db, df.id);
  return w ? viewOf(d, w) : null;
}

/**
 * Sets the webhook's URL (checked, and its addresses too, now). A new webhook gets a secret, returned here once;
 * changing the URL keeps the secret.
 */
export async function saveWebhook(
  d: CoreDeps,
  actor: Actor,
  ref: DockerfileRef,
  raw: { url?: unknown },
): Promise<{ webhook: WebhookView; secret?: string; created: boolean }> {
  const df = await target(d, actor, ref, 'dockerfile.update');
  const url = parseWebhookUrl(raw.url);
  await checkedWebhookAddress(d.config, url, d.lookup);
  const secret = newSecret();
  const before = await getWebhook(d.db, df.id);
  const w = await putWebhook(d.db, df.id, url.href, secret);
  const created = !before;
  return { webhook: await viewOf(d, w), created, ...(created ? { secret } : {}) };
}

/** A new secret (the old one stops signing at once), returned here once. */
export async function rotateWebhookSecret(
  d: CoreDeps,
  actor: Actor,
  ref: DockerfileRef,
): Promise<{ webhook: WebhookView; secret: string }> {
  const df = await target(d, actor, ref, 'dockerfile.update');
  const secret = newSecret();
  if (!(await setWebhookSecretOf(d.db, df.id, secret)))
    throw new KilnError('conflict', 'This Dockerfile has no webhook; set its URL first.');
  return { webhook: await viewOf(d, (await getWebhook(d.db, df.id))!), secret };
}

/** Removes the webhook; deliveries still pending end as failed at their next attempt. */
export async function removeWebhook(d: CoreDeps, actor: Actor, ref: DockerfileRef): Promise<{ removed: boolean }> {
  const df = await target(d, actor, ref, 'dockerfile.update');
  return { removed: await deleteWebhook(d.db, df.id) };
}

/** `sha256=<hex>` of the body with the secret: what a receiver recomputes over the raw bytes it got. */
export const signatureOf = (secret: string, body: Buffer): string =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

const RETRIED = new Set([408, 425, 429]);
const oneLine = (s: string) =>
  s
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ')
    .trim()
    .slice(0, 300);

/** A failed attempt the queue retries (recorded first). */
class RetryLater extends Error {}

export const deliverTask: TaskKind = {
  async run(d, { task, log }) {
    const id = deliveryIdOf(task.subject);
    const del = id === undefined ? undefined : await getDelivery(d.db, id);
    if (!del || del.state !== 'pending') return;
    const hook = await getWebhook(d.db, del.dockerfile_id);
    if (!hook) {
      await failDelivery(d.db, del.id, 'The webhook was removed before this delivery was made.');
      return;
    }
    const end = (status: number | null, error: string | null, state: DeliveryRow['state']) =>
      recordAttempt(d.db, del.id, { status, error, state });
    let address: string;
    const url = new URL(hook.url);
    try {
      // Checked again at every attempt: the name may resolve elsewhere now (DNS rebinding), and the socket
      // connects to this very address.
      address = await checkedWebhookAddress(d.config, url, d.lookup);
    } catch (e) {
      if (isKilnError(e, 'backend_unavailable')) {
        await end(null, e.message, 'pending');
        throw e;
      }
      await end(null, isKilnError(e) ? e.message : String(e), 'failed');
      log.warn({ delivery: del.delivery_id, err: String(e) }, 'webhook refused');
      return;
    }
    const timestamp = Math.floor(clockOf(d) / 1000);
    const body = Buffer.from(JSON.stringify({ ...(JSON.parse(del.body) as object), timestamp }));
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'Kiln-Webhook/1',
      'x-kiln-event': del.event,
      'x-kiln-delivery': del.delivery_id,
      'x-kiln-timestamp': String(timestamp),
      'x-kiln-signature': signatureOf(hook.secret, body),
    };
    let answer;
    try {
      answer = await postPinned(url, address, headers, body, d.config.webhooks.timeoutSeconds * 1000);
    } catch (e) {
      const why = oneLine(isKilnError(e) ? e.message : (e as Error).message || String(e));
      await end(null, why, 'pending');
      throw new RetryLater(`The webhook could not be reached: ${why}`);
    }
    const { status } = answer;
    if (status >= 200 && status < 300) {
      await end(status, null, 'delivered');
      log.info({ delivery: del.delivery_id, status }, 'webhook delivered');
      return;
    }
    const said = oneLine(answer.body);
    const why = `The webhook answered ${status}${status >= 300 && status < 400 ? ' (redirects are not followed)' : ''}${said ? `: ${said}` : ''}`;
    if (status >= 500 || RETRIED.has(status)) {
      await end(status, why, 'pending');
      throw new RetryLater(why);
    }
    await end(status, why, 'failed');
  },
  async gaveUp(d, task, error) {
    const id = deliveryIdOf(task.subject);
    if (id !== undefined) await failDelivery(d.db, id, `Kiln gave up: ${error}`);
  },
};
