/**
 * The push webhook (`POST /api/v1/hooks/git`): Gitea, GitHub and GitLab tell Kiln that a branch moved. A delivery is
 * authenticated by the secret of a Dockerfile that tracks the repository, not by a session or token: GitHub's
 * `X-Hub-Signature-256` (`sha256=` + HMAC-SHA256 of the body, hex), Gitea's `X-Gitea-Signature` (the same HMAC,
 * hex), GitLab's `X-Gitlab-Token` (the secret itself, compared in constant time). Each Dockerfile that tracks the
 * pushed repository and branch, follows it, and whose secret signed the delivery gets one build of the pushed
 * commit (followCommit: once per commit, so a redelivery changes nothing).
 *
 * Answers: a body that is not a push payload is `bad_request` (400); a repository no Dockerfile tracks is accepted
 * with nothing done (202); a delivery no tracking Dockerfile's secret signed is `unauthenticated` (401); other events
 * (ping, tag pushes, a deleted branch) are accepted and ignored.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { findDockerfile, findSourcesByMatchKey, type GitSourceRow } from '../../db/index.js';
import { KilnError } from '../../shared/errors.js';
import type { CoreDeps } from '../deps.js';
import { followCommit, logFollow, type FollowOutcome } from './tasks.js';
import { branchOf, matchKey } from './url.js';

/** Largest delivery read (push payloads list at most 20 commits; GitHub caps its own at 25 MB, Kiln needs far less). */
export const MAX_PUSH_BYTES = 1024 * 1024;

export interface PushDelivery {
  body: Buffer;
  contentType?: string | undefined;
  /** The headers that matter, as received (lower-case names in the web's adapter). */
  headers: Readonly<Record<string, string | undefined>>;
}

export interface PushResult {
  /** `unknown`: no Dockerfile tracks the repository; `ignored`: not a push of a branch; `accepted`: acted on. */
  status: 'unknown' | 'ignored' | 'accepted';
  reason?: string;
  repository?: string;
  branch?: string;
  commit?: string;
  dockerfiles: Array<{ dockerfile: number } & FollowOutcome>;
}

const url = z.string().max(2048).optional().catch(undefined);
const payloadSchema = z.looseObject({
  ref: z.string().max(1024).optional().catch(undefined),
  after: z.string().max(128).optional().catch(undefined),
  deleted: z.boolean().optional().catch(undefined),
  repository: z
    .looseObject({
      clone_url: url,
      ssh_url: url,
      git_url: url,
      html_url: url,
      url,
      git_http_url: url,
      git_ssh_url: url,
      homepage: url,
    })
    .optional()
    .catch(undefined),
  project: z
    .looseObject({ git_http_url: url, git_ssh_url: url, web_url: url, http_url: url, ssh_url: url })
    .optional()
    .catch(undefined),
});
type Payload = z.output<typeof payloadSchema>;

const bad = (message: string) => new KilnError('bad_request', message);

/** The payload: JSON, or GitHub's form encoding (`payload=<JSON>`). */
function parsePayload(body: Buffer, contentType: string | undefined): Payload {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw bad('The push payload is not UTF-8.');
  }
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') text = new URLSearchParams(text).get('payload') ?? '';
  else if (type !== 'application/json' && type !== '') throw bad('The push payload must be JSON.');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw bad('The push payload is not valid JSON.');
  }
  const r = payloadSchema.safeParse(raw);
  if (!r.success) throw bad('The push payload is not a JSON object.');
  return r.data;
}

/** Every way the payload names the repository, as match keys. */
function repositoryKeys(p: Payload): string[] {
  const urls = [...Object.values(p.repository ?? {}), ...Object.values(p.project ?? {})];
  const keys = new Set<string>();
  for (const u of urls) {
    const k = matchKey(u);
    if (k) keys.add(k);
  }
  return [...keys];
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest();

/** Whether the delivery carries a valid signature (or GitLab token) made with `secret`. */
export function signedWith(d: PushDelivery, secret: string): boolean {
  const h = d.headers;
  const hmac = createHmac('sha256', secret).update(d.body).digest();
  const hexMatches = (v: string | undefined, prefix: string) => {
    if (v === undefined || !v.startsWith(prefix)) return false;
    const hex = v.slice(prefix.length).trim().toLowerCase();
    return /^[0-9a-f]{64}$/.test(hex) && timingSafeEqual(Buffer.from(hex, 'hex'), hmac);
  };
  if (hexMatches(h['x-hub-signature-256'], 'sha256=')) return true;
  if (hexMatches(h['x-gitea-signature'], '') || hexMatches(h['x-gogs-signature'], '')) return true;
  const token = h['x-gitlab-token'];
  // Digests first: equal lengths for timingSafeEqual, and no early exit on the first differing byte.
  return token !== undefined && timingSafeEqual(sha256(token), sha256(secret));
}

const PUSH_EVENTS = new Set(['push', 'push hook']);

/** The event the delivery says it is (undefined: none said, read as a push). */
function eventOf(h: PushDelivery['headers']): string | undefined {
  return (h['x-github-event'] ?? h['x-gitea-event'] ?? h['x-gogs-event'] ?? h['x-gitlab-event'])?.toLowerCase();
}

export async function receivePush(d: CoreDeps, delivery: PushDelivery): Promise<PushResult> {
  if (delivery.body.length > MAX_PUSH_BYTES) throw new KilnError('too_large', 'The push payload is too large.');
  const p = parsePayload(delivery.body, delivery.contentType);
  const keys = repositoryKeys(p);
  if (keys.length === 0) throw bad('The push payload names no repository.');
  const tracking = new Map<number, GitSourceRow & { owner_id: number }>();
  for (const k of keys) for (const s of await findSourcesByMatchKey(d.db, k)) tracking.set(s.dockerfile_id, s);
  if (tracking.size === 0)
    return { status: 'unknown', reason: 'No Dockerfile here tracks this repository.', dockerfiles: [] };
  const signed = [...tracking.values()].filter((s) => signedWith(delivery, s.webhook_secret));
  if (signed.length === 0)
    throw new KilnError('unauthenticated', 'The push is not signed with the secret of a Dockerfile tracking it.');
  const repository = keys[0]!;
  const event = eventOf(delivery.headers);
  if (event !== undefined && !PUSH_EVENTS.has(event))
    return { status: 'ignored', reason: `Not a push (${event.slice(0, 40)}).`, repository, dockerfiles: [] };
  const branch = p.ref?.startsWith('refs/heads/') ? p.ref.slice('refs/heads/'.length) : undefined;
  const commit = p.after?.toLowerCase();
  if (!branch) return { status: 'ignored', reason: 'Not a push to a branch.', repository, dockerfiles: [] };
  if (!commit || !/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(commit))
    throw bad('The push payload has no commit ("after").');
  if (/^0+$/.test(commit) || p.deleted === true)
    return { status: 'ignored', reason: 'The branch was deleted.', repository, branch, dockerfiles: [] };
  const out: PushResult = { status: 'accepted', repository, branch, commit, dockerfiles: [] };
  for (const s of signed) {
    if (!s.follow || branchOf(s.ref) !== branch) continue;
    const df = await findDockerfile(d.db, s.dockerfile_id, null);
    if (!df || df.deleting_at) continue;
    const r = await followCommit(d, df, s, commit, 'push');
    logFollow(d.logger, df.id, commit, r);
    out.dockerfiles.push({ dockerfile: df.id, ...r });
  }
  if (out.dockerfiles.length === 0) out.reason = 'No Dockerfile signed by this secret follows this branch.';
  return out;
}
