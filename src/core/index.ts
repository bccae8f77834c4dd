/**
 * The application core: one use-case module per noun (dockerfiles, builds, users), each use case taking an Actor
 * and a raw command, checked by the one permission policy; the glue reached through the GluePort it defines. The
 * front doors (the web's pages and JSON API, `kiln user`) are adapters over `createCore`. See README.md.
 */
import type { Actor } from './actor.js';
import * as admin from './admin.js';
import { AuthCache } from './auth-cache.js';
import { listAuditLog } from './audit.js';
import * as baseNames from './base-names.js';
import * as builds from './builds/index.js';
import { DEFAULT_LOGIN_LIMITS, type CoreDeps } from './deps.js';
import * as dockerfiles from './dockerfiles.js';
import * as jobs from './jobs/index.js';
import * as releases from './releases.js';
import { pinBuild, unpinBuild } from './retention.js';
export { describeRetention } from './retention.js';
import { findBuildsByIds } from '../db/index.js';
import { regenerateSecret } from './git/index.js';
import { receivePush, type PushDelivery } from './git/hooks.js';
import { PasswordHasher } from './passwords.js';
import { TASK_HANDLERS } from './tasks/kinds.js';
import * as tokens from './tokens.js';
import { Worker, type WorkerOptions } from './tasks/worker.js';
import * as sshKeys from './ssh-keys.js';
import * as users from './users.js';
import { feedTokenStatus, feedXml, revokeFeedToken, rotateFeedToken } from './following/feeds.js';
import {
  getWebhookView,
  removeWebhook,
  rotateWebhookSecret,
  saveWebhook,
  type DockerfileRef,
} from './following/webhooks.js';

export type { Actor, UserActor, SystemActor, AnonymousActor } from './actor.js';
export { ANONYMOUS, CLI, WORKER, userActor } from './actor.js';
export type { CoreDeps, LoginLimits } from './deps.js';
export { DEFAULT_LOGIN_LIMITS } from './deps.js';
export type { GluePort } from './ports.js';
export { authorize, can, decide, ownerScope, type Action } from './policy.js';
export { PasswordHasher } from './passwords.js';
export { Worker, type WorkerOptions } from './tasks/worker.js';
export type { ContextUpload, DockerfileView } from './dockerfiles.js';
export type { GitSourceView } from './git/index.js';
export { MAX_PUSH_BYTES, type PushDelivery, type PushResult } from './git/hooks.js';
export { describeSchedule, WEEKDAYS, type JobSettings, type JobStatus } from './jobs/index.js';
export type {
  ArtifactDownload,
  BuildPage,
  BuildListView,
  LiveEvent,
  ProgressView,
  QueuePlace,
} from './builds/index.js';
export { progressOf } from './builds/index.js';
export type { LoginAttempt, SessionUser } from './users.js';
export type { AdminJob, AdminQueue, JobOp, SiteHealth } from './admin.js';
export { JOB_OPS } from './admin.js';
export { AWAITING_APPROVAL } from './users.js';
export { SCOPES, type Scope } from './actor.js';
export { authorizeScope } from './policy.js';
export { tokenState, type NewToken } from './tokens.js';
export { AuthCache, AUTH_CHANGES_KEPT } from './auth-cache.js';
export { feedTokenId, FEED_ENTRIES } from './following/feeds.js';
export { signatureOf, type DeliveryView, type DockerfileRef, type WebhookView } from './following/webhooks.js';

/** Binds every use case to its dependencies: `core.builds.request(actor, {dockerfileId, key})`. */
export function createCore(deps: CoreDeps) {
  // Shared by every viewer of this process: one glue read per live log and poll, finished builds' documents kept a while.
  // Pages' reads go to the reader (read-only connections on SQLite): none of these use cases writes.
  const read = { ...deps, db: deps.reader ?? deps.db, live: new builds.Coalescer() };
  // Every long poll of this process on one timer and one query per poll.
  const watch = new builds.BuildWatch((ids) => findBuildsByIds(read.db, ids), deps.config.web.livePollMs);
  // This process's sessions and users, kept exact by the auth change log (auth-cache.ts).
  const auth = new AuthCache(read.db);
  return {
    deps,
    auth,
    dockerfiles: {
      create: (actor: Actor, input: Parameters<typeof dockerfiles.createDockerfile>[2]) =>
        dockerfiles.createDockerfile(deps, actor, input),
      update: (actor: Actor, input: Parameters<typeof dockerfiles.updateDockerfile>[2]) =>
        dockerfiles.updateDockerfile(deps, actor, input),
      get: (actor: Actor, id: unknown) => dockerfiles.getDockerfile(deps, actor, id),
      list: (actor: Actor) => dockerfiles.listDockerfilesFor(read, actor),
      /** Keyset pages (`{cursor, limit}` -> `{items, nextCursor}`). */
      page: (actor: Actor, query: unknown) => dockerfiles.listDockerfilePage(deps, actor, query),
      getByName: (actor: Actor, name: unknown) => dockerfiles.getDockerfileByName(deps, actor, name),
      /** Create or update by name, with a context and job settings (the REST API's PUT). */
      put: (actor: Actor, input: Parameters<typeof dockerfiles.putDockerfile>[2]) =>
        dockerfiles.putDockerfile(deps, actor, input),
      remove: (actor: Actor, input: Parameters<typeof dockerfiles.removeDockerfile>[2]) =>
        dockerfiles.removeDockerfile(deps, actor, input),
      /** Takes the Dockerfile's text and context from a git repository from now on (git/index.ts). */
      setSource: (actor: Actor, input: Parameters<typeof dockerfiles.setGitSource>[2]) =>
        dockerfiles.setGitSource(deps, actor, input),
    },
    git: {
      /** A push webhook delivery (authenticated by its signature, not by an actor): git/hooks.ts. */
      push: (delivery: PushDelivery) => receivePush(deps, delivery),
      regenerateSecret: (actor: Actor, dockerfileId: unknown) => regenerateSecret(deps, actor, dockerfileId),
    },
    jobs: {
      status: (actor: Actor, dockerfileId: unknown) => jobs.jobStatus(deps, actor, dockerfileId),
      save: (actor: Actor, dockerfileId: unknown, input: unknown, opts?: { onlyChanges?: boolean }) =>
        jobs.saveSettings(deps, actor, dockerfileId, input, opts),
      setEnabled: (actor: Actor, dockerfileId: unknown, input: unknown) =>
        jobs.setEnabled(deps, actor, dockerfileId, input),
    },
    builds: {
      request: (actor: Actor, input: Parameters<typeof builds.requestBuild>[2]) =>
        builds.requestBuild(deps, actor, input),
      get: (actor: Actor, id: unknown) => builds.getBuild(deps, actor, id),
      list: (actor: Actor, limit?: number) => builds.listBuilds(read, actor, limit),
      version: (actor: Actor, id: unknown) => builds.buildVersion(deps, actor, id),
      cancel: (actor: Actor, id: unknown) => builds.cancelBuild(deps, actor, id),
      log: (actor: Actor, id: unknown, offset: unknown) => builds.readLog(deps, actor, id, offset),
      artifact: (actor: Actor, id: unknown, name: unknown, range?: string) =>
        builds.openArtifact(deps, actor, id, name, range),
      page: (actor: Actor, id: unknown) => builds.buildPage(read, actor, id),
      history: (actor: Actor, query: builds.BuildListQuery) => builds.listBuildPage(deps, actor, query),
      /** Keyset pages of the same lists (`{state, dockerfile: name, cursor, limit}`). */
      feed: (actor: Actor, query: unknown) => builds.listBuildFeed(deps, actor, query),
      /** The long poll: the build once its state is not `seen`, or after `waitMs`. */
      wait: (actor: Actor, id: unknown, o: { seen?: unknown; waitMs: number }, signal: AbortSignal) =>
        builds.waitForBuild({ ...deps, watch }, actor, id, o, signal),
      queuePlace: (actor: Actor, id: unknown) => builds.buildQueuePlace(read, actor, id),
      follow: (actor: Actor, id: unknown, from: unknown, signal: AbortSignal, format?: 'html' | 'text') =>
        builds.followBuild(read, actor, id, from, signal, format),
      report: (actor: Actor, id: unknown) => builds.buildReport(read, actor, id),
      manifest: (actor: Actor, id: unknown, query: unknown) => builds.manifestView(read, actor, id, query),
      sbom: (actor: Actor, id: unknown, query: unknown) => builds.sbomView(read, actor, id, query),
      serialLog: (actor: Actor, id: unknown, index: unknown) => builds.serialLog(read, actor, id, index),
      diff: (actor: Actor, id: unknown) => builds.packageDiff(read, actor, id),
      /** Keeps a build from retention (its owner or an admin; retention.pinsPerUser per owner), or lets it go. */
      pin: (actor: Actor, id: unknown) => pinBuild(deps, actor, id),
      unpin: (actor: Actor, id: unknown) => unpinBuild(deps, actor, id),
    },
    /** Following a Dockerfile (following/): feed tokens, Atom feeds, the outgoing webhook. */
    following: {
      feedToken: (actor: Actor) => feedTokenStatus(deps, actor),
      rotateFeedToken: (actor: Actor) => rotateFeedToken(deps, actor),
      revokeFeedToken: (actor: Actor) => revokeFeedToken(deps, actor),
      /** A feed as Atom XML, authenticated by its feed token (no actor): any failure is `not_found`. */
      feed: (o: { token: unknown; dockerfile?: unknown; base: string }) => feedXml(read, o),
      webhook: (actor: Actor, ref: DockerfileRef) => getWebhookView(deps, actor, ref),
      saveWebhook: (actor: Actor, ref: DockerfileRef, raw: { url?: unknown }) => saveWebhook(deps, actor, ref, raw),
      rotateWebhookSecret: (actor: Actor, ref: DockerfileRef) => rotateWebhookSecret(deps, actor, ref),
      removeWebhook: (actor: Actor, ref: DockerfileRef) => removeWebhook(deps, actor, ref),
    },
    releases: {
      /** A build promoted to a named release (made, copied and signed by the worker). */
      promote: (actor: Actor, input: { build?: unknown; name?: unknown }) => releases.promote(deps, actor, input),
      get: (actor: Actor, id: unknown) => releases.getRelease(deps, actor, id),
      list: (actor: Actor, query?: Parameters<typeof releases.listReleases>[2]) =>
        releases.listReleases(deps, actor, query),
      file: (actor: Actor, id: unknown, name: unknown, range?: string) =>
        releases.openReleaseFile(deps, actor, id, name, range),
    },
    baseNames: {
      view: (actor: Actor) => baseNames.baseNamesView(deps, actor),
      set: (actor: Actor, input: unknown) => baseNames.setBaseName(deps, actor, input),
      remove: (actor: Actor, id: unknown) => baseNames.removeBaseName(deps, actor, id),
    },
    admin: {
      jobs: (actor: Actor) => admin.listJobs(deps, actor),
      controlJob: (actor: Actor, input: Parameters<typeof admin.controlJob>[2]) => admin.controlJob(deps, actor, input),
      queue: (actor: Actor) => admin.listQueue(deps, actor),
      health: (actor: Actor) => admin.siteHealth(deps, actor),
      audit: (actor: Actor, input?: unknown) => listAuditLog(deps, actor, input),
      metrics: (actor: Actor, address: string | undefined) => admin.metricsText(deps, actor, address),
      readiness: () => admin.readiness(deps),
    },
    tokens: {
      ...createTokens(deps),
      list: (actor: Actor) => tokens.listTokens(deps, actor),
      revoke: (actor: Actor, id: unknown) => tokens.revokeToken(deps, actor, id),
      /** The actor of a request's `Authorization` header (the REST API), or 401. */
      actor: (authorization: string | undefined, address?: string) => tokens.tokenActor(deps, authorization, address),
    },
    sshKeys: {
      list: (actor: Actor) => sshKeys.listKeys(deps, actor),
      add: (actor: Actor, input: Parameters<typeof sshKeys.addKey>[2]) => sshKeys.addKey(deps, actor, input),
      remove: (actor: Actor, id: unknown) => sshKeys.removeKey(deps, actor, id),
      /** The SSH door's authentication: who this key logs in as now (none once revoked or the user disabled). */
      login: (fingerprint: string, address?: string) => sshKeys.keyLogin(deps, fingerprint, address),
      used: (keyId: number) => sshKeys.keyUsed(deps, keyId),
    },
    users: {
      ...createUsers(deps),
      register: (actor: Actor, input: unknown) => users.registerUser(deps, actor, input),
      authenticate: (attempt: users.LoginAttempt) => users.authenticate(deps, attempt),
      /** `ticket`: auth.ticket() when the request arrived (a request checks the auth change log once). */
      sessionActor: (s: users.SessionUser, ticket?: number) => users.sessionActor({ auth }, s, ticket),
      changePassword: (actor: Actor, input: Parameters<typeof users.changePassword>[2]) =>
        users.changePassword(deps, actor, input),
    },
  };
}

/** The account administration use cases alone (what `kiln user` needs: no glue, no web). */
export function createUsers(deps: Pick<CoreDeps, 'db' | 'hasher' | 'logger' | 'now'>) {
  return {
    create: (actor: Actor, input: Parameters<typeof users.createUser>[2]) => users.createUser(deps, actor, input),
    ensureFirstAdmin: () => users.ensureFirstAdmin(deps),
    list: (actor: Actor) => users.listUsers(deps, actor),
    setDisabled: (actor: Actor, input: Parameters<typeof users.setDisabled>[2]) =>
      users.setDisabled(deps, actor, input),
    setRole: (actor: Actor, input: Parameters<typeof users.setRole>[2]) => users.setRole(deps, actor, input),
    approve: (actor: Actor, input: Parameters<typeof users.approveUser>[2]) => users.approveUser(deps, actor, input),
    resetPassword: (actor: Actor, input: Parameters<typeof users.resetPassword>[2]) =>
      users.resetPassword(deps, actor, input),
  };
}

/** Creating API tokens (the account page; `kiln user token` for a named user). */
export function createTokens(deps: Pick<CoreDeps, 'db' | 'config' | 'logger' | 'now'>) {
  return {
    create: (actor: Actor, input: Parameters<typeof tokens.createToken>[2]) => tokens.createToken(deps, actor, input),
  };
}

export type Core = ReturnType<typeof createCore>;

/**
 * A task worker over these dependencies, not started (`start()` it, or `drain()` it in a test). Composition roots
 * build one per process and pass `worker.wake` to the web as `onEnqueue`.
 */
export function createWorker(
  deps: Pick<CoreDeps, 'config' | 'db' | 'glue' | 'logger' | 'now'> & Partial<CoreDeps>,
  o: WorkerOptions = {},
): Worker {
  return new Worker({ hasher: new PasswordHasher(1), limits: DEFAULT_LOGIN_LIMITS, ...deps }, TASK_HANDLERS, o);
}

export { pruneLoginThrottle, deviceCookieValue } from './login-throttle.js';
export { signingKey } from './signing.js';
export { MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_UPLOAD_BYTES } from './build-context.js';
export { CONTROL_CHARS, decodeDockerfile, parseDockerfileName, tooLarge as dockerfileTooLarge } from './validation.js';
export { plainLine } from './builds/log-view.js';
export { SSH_KEY_ALGORITHMS, sshFingerprint, type KeyLogin, type SshKeyView } from './ssh-keys.js';
