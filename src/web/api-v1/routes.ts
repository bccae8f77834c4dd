/**
 * The REST API's route table: every route of /api/v1, with the schemas that check its requests and describe its
 * answers, and its handler: turn the checked input into one use case call of the core, answer in the API's shapes.
 * The router (router.ts) and the OpenAPI document (openapi.ts) are both made from this table.
 */
import { randomUUID } from 'node:crypto';
import { isFinal, type BuildRow } from '../../db/index.js';
import {
  decodeDockerfile,
  progressOf,
  type ContextUpload,
  type Core,
  type DockerfileView,
  type JobSettings,
  type UserActor,
} from '../../core/index.js';
import { KilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { liveStream } from '../live-stream.js';
import { sendArtifact } from '../routes/pages.js';
import { releaseJson } from '../routes/releases.js';
import { USER_ACTIONS, userAction, userJson } from '../routes/admin.js';
import { settingsJson } from '../routes/jobs.js';
import { dockerfileSummaryJson, gitJson, servedArtifacts } from '../routes/util.js';
import { route, type V1Route } from './define.js';
import { hookRoute } from '../routes/hooks.js';
import * as S from './schemas.js';

const NOT_FOUND = { description: 'No such object, or not yours (the same answer).', json: S.ErrorBody };
/** The answers of a file download (an artifact, a release's file). */
const DOWNLOAD = {
  200: { description: 'The bytes (attachment).', media: 'application/octet-stream' },
  206: { description: 'The range asked for.', media: 'application/octet-stream' },
  404: NOT_FOUND,
  416: { description: 'The range is outside the file.', json: S.ErrorBody },
};

const artifactsOf = (b: BuildRow) =>
  servedArtifacts(b).map((a) => ({
    name: a.name,
    size: a.size,
    sha256: a.sha256 ?? null,
    url: `/api/v1/builds/${b.id}/artifacts/${encodeURIComponent(a.name)}`,
  }));

export function buildOut(b: BuildRow, dockerfileName: string) {
  return {
    id: b.id,
    dockerfile: { id: b.dockerfile_id, name: dockerfileName },
    state: b.state,
    final: isFinal(b.state),
    trigger: b.trigger,
    reason: b.reason,
    progress: progressOf(b),
    artifacts: artifactsOf(b),
    pinned: b.pinned,
    artifactsExpiredAt: b.artifacts_expired_at,
    imageSha256: b.image_sha256,
    requeues: b.requeues,
    requeueReason: b.requeue_reason,
    requestedAt: b.requested_at,
    queuedAt: b.queued_at,
    startedAt: b.started_at,
    finishedAt: b.finished_at,
  };
}

const dockerfileOut = (v: DockerfileView, settings: JobSettings) => ({
  id: v.dockerfile.id,
  name: v.dockerfile.name,
  // null while a Dockerfile from git waits for its first fetch.
  content: v.version?.content ?? null,
  sha256: v.version?.sha256 ?? null,
  size: v.version?.size ?? null,
  context: v.context && { sha256: v.context.sha256, size: v.context.size, entries: v.context.listing },
  git: v.git && gitJson(v.git),
  deletionPending: v.dockerfile.deleting_at !== null,
  settings: settingsJson(settings),
});

/** A build with its Dockerfile's name and, while it waits, its place in the queue. */
async function buildDetail(core: Core, actor: UserActor, id: number) {
  const v = await core.builds.version(actor, String(id));
  const queue = isFinal(v.build.state) ? undefined : await core.builds.queuePlace(actor, String(id));
  return { build: { ...buildOut(v.build, v.dockerfile.name), queue: queue ?? null } };
}

/** `60`, `60s`, `2m` -> ms, cut to api.maxWaitSeconds. */
const waitMs = (raw: string | undefined, maxSeconds: number): number => {
  if (raw === undefined) return 0;
  const n = Number.parseInt(raw, 10) * (raw.endsWith('m') ? 60 : 1);
  return Math.min(n, maxSeconds) * 1000;
};

/** The Dockerfile part: a file's bytes (decoded strictly as UTF-8), or a text field (its lenient decoding marks bad bytes). */
function dockerfileText(v: Buffer | string, max: number): string {
  if (Buffer.isBuffer(v)) return decodeDockerfile(v, max);
  if (v.includes('\uFFFD')) throw new KilnError('invalid_input', 'The Dockerfile is not valid UTF-8 text.');
  return v;
}

function contextUpload(body: {
  context?: Buffer | string;
  removeContext?: 'true' | 'false';
}): ContextUpload | undefined {
  const remove = body.removeContext === 'true';
  if (remove && body.context !== undefined)
    throw new KilnError('invalid_input', 'Either send a new build context or removeContext=true, not both.');
  if (remove) return { kind: 'remove' };
  if (body.context === undefined) return undefined;
  if (!Buffer.isBuffer(body.context))
    throw new KilnError('invalid_input', 'Send the build context as a file part (a .tar or .tar.gz).');
  const gz = body.context[0] === 0x1f && body.context[1] === 0x8b;
  return { kind: gz ? 'targz' : 'tar', data: body.context };
}

/** The table. `openapi` is the document's route (it is made from the table itself, so it is passed in). */
export function v1Routes(ctx: AppContext, openapi: () => Record<string, unknown>): V1Route[] {
  const { core, config } = ctx;
  const follow = (c: { actor: UserActor; req: { get(h: string): string | undefined; ip?: string } }) => ({
    userId: c.actor.id,
    counts: ctx.liveStreams,
    limit: config.web.liveStreamsPerUser,
    recheckMs: Math.max(1000, config.web.livePollMs * 40),
    // Revoked, expired, or its user disabled since the stream opened: the stream ends.
    still: () =>
      core.tokens.actor(c.req.get('authorization'), c.req.ip).then(
        () => true,
        () => false,
      ),
  });

  const table: V1Route[] = [
    route({
      method: 'get',
      path: '/openapi.json',
      tag: 'meta',
      summary: 'This API, as an OpenAPI 3.1 document (no token needed)',
      scope: 'public',
      responses: { 200: { description: 'The document.', media: 'application/json' } },
      handle: async ({ res }) => {
        res.json(openapi());
      },
    }),
    route({
      method: 'get',
      path: '/me',
      tag: 'meta',
      summary: "The token's user and scopes",
      scope: 'any',
      responses: { 200: { description: 'Who the token acts as.', json: S.Me } },
      handle: async ({ res, actor }) => {
        res.json({
          user: { id: actor.id, username: actor.username, role: actor.role },
          token: { id: actor.tokenId, scopes: actor.scopes },
        });
      },
    }),

    // ------------------------------------------------------------------------------------------- Dockerfiles
    route({
      method: 'get',
      path: '/dockerfiles',
      tag: 'dockerfiles',
      summary: 'Your Dockerfiles (an admin token: everyone’s), by name, a page at a time',
      scope: 'read',
      query: S.PageQuery,
      responses: {
        200: { description: 'A page; `nextCursor` fetches the next (null: the last).', json: S.DockerfilePage },
      },
      handle: async ({ res, actor, query }) => {
        const page = await core.dockerfiles.page(actor, query);
        res.json({ dockerfiles: page.items.map(dockerfileSummaryJson), nextCursor: page.nextCursor });
      },
    }),
    route({
      method: 'get',
      path: '/dockerfiles/{name}',
      tag: 'dockerfiles',
      summary: 'One of your Dockerfiles: text, build context listing and job settings',
      scope: 'read',
      params: S.NameParams,
      responses: { 200: { description: 'The Dockerfile.', json: S.DockerfileAnswer }, 404: NOT_FOUND },
      handle: async ({ res, actor, params }) => {
        const { view, settings } = await core.dockerfiles.getByName(actor, params.name);
        res.json({ dockerfile: dockerfileOut(view, settings) });
      },
    }),
    route({
      method: 'put',
      path: '/dockerfiles/{name}',
      tag: 'dockerfiles',
      summary: 'Create or update a Dockerfile by name, with its build context and job settings',
      description:
        'multipart/form-data: `dockerfile` (required), `context` (a .tar or .tar.gz; left out keeps the current one), `settings` (JSON), `removeContext`. The Dockerfile policy runs before anything is stored (422 `policy_violation` with the findings by line). Unchanged text and context keep the current version; only settings that differ from the saved ones are saved.',
      scope: 'build',
      params: S.NameParams,
      body: { kind: 'multipart', schema: S.PutDockerfileBody },
      responses: {
        200: { description: 'Updated (or unchanged).', json: S.DockerfileAnswer },
        201: { description: 'Created.', json: S.DockerfileAnswer },
      },
      handle: async ({ res, actor, params, body }) => {
        const put = await core.dockerfiles.put(actor, {
          name: params.name,
          content: dockerfileText(body.dockerfile, config.web.maxDockerfileBytes),
          context: contextUpload(body),
          ...(body.settings ? { settings: body.settings } : {}),
        });
        res
          .status(put.created ? 201 : 200)
          .json({ dockerfile: dockerfileOut(put.view, put.settings), created: put.created });
      },
    }),

    // ------------------------------------------------------------------------------------------------ webhook
    route({
      method: 'get',
      path: '/dockerfiles/{name}/webhook',
      tag: 'dockerfiles',
      summary: 'The Dockerfile’s outgoing webhook (never its secret) and its latest deliveries',
      scope: 'read',
      params: S.NameParams,
      responses: { 200: { description: 'The webhook, or null.', json: S.WebhookAnswer }, 404: NOT_FOUND },
      handle: async ({ res, actor, params }) => {
        res.json({ webhook: await core.following.webhook(actor, { name: params.name }) });
      },
    }),
    route({
      method: 'post',
      path: '/dockerfiles/{name}/webhook',
      tag: 'dockerfiles',
      summary: 'Set the URL Kiln POSTs each build end to (a new webhook answers its secret, once)',
      description:
        'The URL is checked now: http(s), no credentials, and every address its host resolves to must be public (422/403 otherwise); the worker checks again at each delivery. Deliveries: `X-Kiln-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, `X-Kiln-Delivery` (the same on retries), `X-Kiln-Timestamp` (equal to the body’s `timestamp`).',
      scope: 'build',
      params: S.NameParams,
      body: { kind: 'json', schema: S.WebhookBody },
      responses: {
        200: { description: 'The URL changed (the secret is kept).', json: S.WebhookSaved },
        201: { description: 'Made, with its secret (shown only here).', json: S.WebhookSaved },
        403: { description: 'The host resolves to an address Kiln does not send to.', json: S.ErrorBody },
        404: NOT_FOUND,
      },
      handle: async ({ res, actor, params, body }) => {
        const saved = await core.following.saveWebhook(actor, { name: params.name }, { url: body.url });
        res
          .set('cache-control', 'no-store')
          .status(saved.created ? 201 : 200)
          .json(saved);
      },
    }),
    route({
      method: 'post',
      path: '/dockerfiles/{name}/webhook/secret',
      tag: 'dockerfiles',
      summary: 'A new webhook secret (the old one stops signing at once); answered once',
      scope: 'build',
      params: S.NameParams,
      responses: {
        200: { description: 'The new secret.', json: S.WebhookSaved },
        404: NOT_FOUND,
        409: { description: 'The Dockerfile has no webhook.', json: S.ErrorBody },
      },
      handle: async ({ res, actor, params }) => {
        const r = await core.following.rotateWebhookSecret(actor, { name: params.name });
        res.set('cache-control', 'no-store').json({ ...r, created: false });
      },
    }),
    route({
      method: 'post',
      path: '/dockerfiles/{name}/webhook/delete',
      tag: 'dockerfiles',
      summary: 'Remove the webhook (pending deliveries end as failed)',
      scope: 'build',
      params: S.NameParams,
      responses: { 200: { description: 'Whether there was one.', json: S.WebhookRemoved }, 404: NOT_FOUND },
      handle: async ({ res, actor, params }) => {
        res.json(await core.following.removeWebhook(actor, { name: params.name }));
      },
    }),

    // ------------------------------------------------------------------------------------------------ builds
    route({
      method: 'post',
      path: '/builds',
      tag: 'builds',
      summary: 'Build a Dockerfile (trigger `api`); an Idempotency-Key makes a retry the same build',
      scope: 'build',
      headers: S.IdempotencyHeader,
      body: { kind: 'json', schema: S.TriggerBody },
      responses: {
        200: { description: 'The build this key already made.', json: S.TriggerAnswer },
        201: { description: 'A new build (waiting to be handed to the build service).', json: S.TriggerAnswer },
        409: { description: "The Dockerfile's job is switched off, or a storage quota is full.", json: S.ErrorBody },
        422: { description: 'The key was used for another Dockerfile (`idempotency_key_reused`).', json: S.ErrorBody },
        429: { description: 'Too many of your builds are waiting or running (Retry-After).', json: S.ErrorBody },
      },
      handle: async ({ res, actor, headers, body }) => {
        const { build, created } = await core.builds.request(actor, {
          dockerfileName: body.dockerfile,
          clientKey: headers['Idempotency-Key'] ?? randomUUID(),
          trigger: 'api',
        });
        res.status(created ? 201 : 200).json({ build: buildOut(build, body.dockerfile), created });
      },
    }),
    route({
      method: 'get',
      path: '/builds',
      tag: 'builds',
      summary: 'Your builds (an admin token: everyone’s), newest first, a page at a time',
      scope: 'read',
      query: S.BuildListQuery,
      responses: { 200: { description: 'A page; `nextCursor` fetches the next (null: the last).', json: S.BuildPage } },
      handle: async ({ res, actor, query }) => {
        const page = await core.builds.feed(actor, query);
        res.json({
          builds: page.items.map((b) => ({
            ...buildOut(b, b.dockerfile_name),
            owner: b.owner,
            durationSeconds: b.durationSeconds ?? null,
          })),
          nextCursor: page.nextCursor,
        });
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}',
      tag: 'builds',
      summary: 'A build; with `wait`, once its state changes (long poll)',
      scope: 'read',
      params: S.IdParams,
      query: S.WaitQuery,
      responses: { 200: { description: 'The build.', json: S.BuildAnswer }, 404: NOT_FOUND },
      handle: async ({ res, actor, params, query, signal }) => {
        const ms = waitMs(query.wait, config.api.maxWaitSeconds);
        const b = await core.builds.wait(actor, params.id, { seen: query.seen, waitMs: ms }, signal);
        if (!signal.aborted) res.json(await buildDetail(core, actor, b.id));
      },
    }),
    route({
      method: 'post',
      path: '/builds/{id}/cancel',
      tag: 'builds',
      summary: 'Cancel a build (a finished one stays as it is)',
      scope: 'build',
      params: S.IdParams,
      responses: {
        200: { description: 'The build, cancelled or on its way to it.', json: S.BuildAnswer },
        404: NOT_FOUND,
      },
      handle: async ({ res, actor, params }) => {
        const b = await core.builds.cancel(actor, params.id);
        res.json(await buildDetail(core, actor, b.id));
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/log',
      tag: 'logs',
      summary: "The build's log from a position (complete lines, without escapes and machine lines)",
      scope: 'read',
      params: S.IdParams,
      query: S.LogQuery,
      responses: { 200: { description: 'A piece of the log.', json: S.LogChunk }, 404: NOT_FOUND },
      handle: async ({ res, actor, params, query }) => {
        res.json(await core.builds.log(actor, params.id, query.offset));
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/log/stream',
      tag: 'logs',
      summary: 'Follow the log as plain text until the build ends (`curl -N`)',
      scope: 'read',
      params: S.IdParams,
      query: S.LogQuery,
      responses: {
        200: { description: 'The log lines as they come; the body ends with the build.', media: 'text/plain' },
      },
      handle: async (c) => {
        await liveStream(c.req, c.res, {
          ...follow(c),
          open: (signal) => core.builds.follow(c.actor, c.params.id, c.query.offset, signal, 'text'),
          as: 'text',
        });
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/events',
      tag: 'logs',
      summary: 'Follow the build as Server-Sent Events: log, progress, build, end',
      description:
        '`log` events carry `{"lines": [...]}` (plain text) with `id:` the log position after them (a reconnect sends Last-Event-ID and resumes after exactly that line); `progress` the SDK’s `{stage, percent, message}`; `build` the build (as GET /builds/{id}) when its state changes; `end` once it is finished; `problem` `{message}` for an error inside the stream.',
      scope: 'read',
      params: S.IdParams,
      query: S.EventsQuery,
      headers: S.LastEventHeader,
      responses: { 200: { description: 'The event stream.', media: 'text/event-stream' } },
      handle: async (c) => {
        const { dockerfile } = await core.builds.version(c.actor, c.params.id);
        await liveStream(c.req, c.res, {
          ...follow(c),
          open: (signal) =>
            core.builds.follow(c.actor, c.params.id, c.headers['Last-Event-ID'] ?? c.query.from, signal, 'text'),
          as: { sse: { log: (lines) => ({ lines }), build: (b) => buildOut(b, dockerfile.name) } },
        });
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/report',
      tag: 'builds',
      summary: 'Boot tests, stage times and, for a failed build, what failed (stage, Dockerfile line)',
      scope: 'read',
      params: S.IdParams,
      responses: {
        200: { description: 'The report (empty until the build is finished).', json: S.Report },
        404: NOT_FOUND,
      },
      handle: async ({ res, actor, params }) => {
        res.json(await core.builds.report(actor, params.id));
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/artifacts',
      tag: 'artifacts',
      summary: "The build's artifacts with their sizes and Kiln's sha256",
      description:
        'Images, manifest.json, sbom.spdx.json, provenance.json, SHA256SUMS and SHA256SUMS.sig (Kiln’s own, signed with the key at `signingKey`), build.log, result.json. Download them all into one directory and `kiln verify DIR --key-url <site>/.well-known/kiln-signing-key` checks them.',
      scope: 'read',
      params: S.IdParams,
      responses: { 200: { description: 'The artifacts.', json: S.ArtifactList }, 404: NOT_FOUND },
      handle: async ({ res, actor, params }) => {
        const b = await core.builds.get(actor, params.id);
        res.json({ artifacts: artifactsOf(b), signingKey: '/.well-known/kiln-signing-key' });
      },
    }),
    route({
      method: 'get',
      path: '/builds/{id}/artifacts/{name}',
      tag: 'artifacts',
      summary: 'Download an artifact (Range supported; HEAD for its size)',
      scope: 'read',
      params: S.ArtifactParams,
      headers: S.RangeHeader,
      responses: DOWNLOAD,
      handle: async ({ req, res, actor, params, headers }) => {
        await sendArtifact(req, res, await core.builds.artifact(actor, params.id, params.name, headers.Range));
      },
    }),

    // --------------------------------------------------------------------------------------- pins and releases
    ...(['pin', 'unpin'] as const).map((op) =>
      route({
        method: 'post',
        path: `/builds/{id}/${op}`,
        tag: 'releases',
        summary:
          op === 'pin'
            ? 'Keep a succeeded build from retention (at most `retention.pinsPerUser` per user)'
            : 'Let retention have the build again',
        scope: 'build',
        params: S.IdParams,
        responses: {
          200: { description: 'The build now.', json: S.BuildAnswer },
          404: NOT_FOUND,
          409: {
            description: 'Not a succeeded build, or the pin limit is reached (`quota_exceeded`).',
            json: S.ErrorBody,
          },
        },
        handle: async ({ res, actor, params }) => {
          const b = await core.builds[op](actor, params.id);
          res.json(await buildDetail(core, actor, b.id));
        },
      }),
    ),
    route({
      method: 'post',
      path: '/builds/{id}/release',
      tag: 'releases',
      summary: 'Promote a succeeded build to a named release (Kiln copies and signs its files)',
      description:
        'The same build and name again answers the same release (200); a name the Dockerfile already gave another build is 409: a release never changes. The release is `pending` until the worker has copied its files into the release store, checked them against the build’s signed SHA256SUMS and signed its own; poll GET /releases/{id}.',
      scope: 'build',
      params: S.IdParams,
      body: { kind: 'json', schema: S.PromoteBody },
      responses: {
        200: { description: 'This build’s release of that name, already there.', json: S.ReleaseAnswer },
        201: { description: 'Promoted: the release is being made.', json: S.ReleaseAnswer },
        404: NOT_FOUND,
        409: { description: 'The name is taken by another build, or the build cannot be released.', json: S.ErrorBody },
      },
      handle: async ({ res, actor, params, body }) => {
        const { release, created } = await core.releases.promote(actor, { build: params.id, name: body.name });
        res
          .status(created ? 201 : 200)
          .json({ release: releaseJson(await core.releases.get(actor, String(release.id)), '/api/v1'), created });
      },
    }),
    route({
      method: 'get',
      path: '/releases',
      tag: 'releases',
      summary: 'Your releases (an admin token: everyone’s), newest first; of one Dockerfile, of one name',
      scope: 'read',
      query: S.ReleaseListQuery,
      responses: { 200: { description: 'The releases.', json: S.ReleaseList } },
      handle: async ({ res, actor, query }) => {
        const list = await core.releases.list(actor, {
          ...(query.dockerfile !== undefined ? { dockerfileName: query.dockerfile } : {}),
          ...(query.name !== undefined ? { name: query.name } : {}),
        });
        res.json({ releases: list.map((r) => releaseJson(r, '/api/v1')) });
      },
    }),
    route({
      method: 'get',
      path: '/releases/{id}',
      tag: 'releases',
      summary: 'A release: its state, and once ready its files with their sha256',
      scope: 'read',
      params: S.IdParams,
      responses: { 200: { description: 'The release.', json: S.ReleaseAnswer }, 404: NOT_FOUND },
      handle: async ({ res, actor, params }) => {
        res.json({ release: releaseJson(await core.releases.get(actor, params.id), '/api/v1') });
      },
    }),
    route({
      method: 'get',
      path: '/releases/{id}/files/{name}',
      tag: 'releases',
      summary: 'Download a file of a ready release (Range supported); `kiln verify DIR` checks them all',
      scope: 'read',
      params: S.ReleaseFileParams,
      headers: S.RangeHeader,
      responses: DOWNLOAD,
      handle: async ({ req, res, actor, params, headers }) => {
        await sendArtifact(req, res, await core.releases.file(actor, params.id, params.name, headers.Range));
      },
    }),

    // ---------------------------------------------------------------------------------------------------- git
    hookRoute(core),

    // -------------------------------------------------------------------------------------------------- admin
    route({
      method: 'get',
      path: '/admin/users',
      tag: 'admin',
      summary: 'Every account',
      scope: 'admin',
      responses: { 200: { description: 'The accounts.', json: S.UserList } },
      handle: async ({ res, actor }) => {
        res.json({ users: (await core.users.list(actor)).map(userJson) });
      },
    }),
    route({
      method: 'post',
      path: '/admin/users',
      tag: 'admin',
      summary: 'Create an account with a generated password (shown once)',
      scope: 'admin',
      body: { kind: 'json', schema: S.NewUserBody },
      responses: { 201: { description: 'Created.', json: S.NewUserAnswer } },
      handle: async ({ res, actor, body }) => {
        const u = await core.users.create(actor, body);
        res.status(201).json({ user: userJson(u.user), password: u.password });
      },
    }),
    ...(Object.keys(USER_ACTIONS) as Array<keyof typeof USER_ACTIONS>).map((action) =>
      route({
        method: 'post',
        path: `/admin/users/{id}/${action}`,
        tag: 'admin',
        summary: `${action[0]!.toUpperCase()}${action.slice(1)} an account${action === 'disable' ? ' (ends its sessions and revokes its API tokens)' : ''}`,
        scope: 'admin',
        params: S.IdParams,
        responses: {
          200: { description: 'The account now.', json: S.UserAnswer },
          409: { description: 'The last admin cannot be disabled or demoted.', json: S.ErrorBody },
        },
        handle: async ({ res, actor, params }) => {
          res.json({ user: userJson(await userAction(core, actor, params.id, action)) });
        },
      }),
    ),
    route({
      method: 'get',
      path: '/admin/jobs',
      tag: 'admin',
      summary: 'Every job the build service has, Kiln’s or not',
      scope: 'admin',
      responses: {
        200: { description: 'The jobs.', json: S.AdminJobs },
        503: { description: 'The build service cannot be reached.', json: S.ErrorBody },
      },
      handle: async ({ res, actor }) => {
        res.json(await core.admin.jobs(actor));
      },
    }),
    ...(['enable', 'disable', 'delete'] as const).map((op) =>
      route({
        method: 'post',
        path: `/admin/jobs/{id}/${op}`,
        tag: 'admin',
        summary: `${op[0]!.toUpperCase()}${op.slice(1)} a job (the worker carries it out)${op === 'delete' ? '; `confirm` is its name' : ''}`,
        scope: 'admin',
        params: S.IdParams,
        body: { kind: 'json', schema: S.ConfirmBody },
        responses: {
          202: { description: 'Asked for.', json: S.JobRequest },
          409: { description: 'A Dockerfile’s job: delete the Dockerfile instead.', json: S.ErrorBody },
        },
        handle: async ({ res, actor, params, body }) => {
          res.status(202).json(await core.admin.controlJob(actor, { id: params.id, op, confirm: body.confirm }));
        },
      }),
    ),
    route({
      method: 'get',
      path: '/admin/queue',
      tag: 'admin',
      summary: "Every owner's unfinished builds, and the build service's own queue",
      scope: 'admin',
      responses: { 200: { description: 'The queue.', json: S.AdminQueue } },
      handle: async ({ res, actor }) => {
        const q = await core.admin.queue(actor);
        res.json({
          builds: q.builds.map((b) => ({
            id: b.id,
            state: b.state,
            owner: b.owner,
            dockerfile: { id: b.dockerfile_id, name: b.dockerfile_name },
            backendBuild: b.backend_build,
            requestedAt: b.requested_at,
            startedAt: b.started_at,
          })),
          backend: q.backend,
          ...(q.backendError ? { backendError: q.backendError } : {}),
        });
      },
    }),
  ];
  return table;
}
