import type { Readable } from 'node:stream';
import Jenkins, { type JenkinsOptions } from 'jenkins';
import type { FrozenConfig } from '../../../config/index.js';
import {
  ARTIFACT_NAMES,
  IDEMPOTENCY_KEY_RE,
  JOB_BUILDS_DEPTH,
  MAX_LOG_CHUNK,
  SHA256_RE,
  utf8Boundary,
  backendJobName,
  jobIdFromBackendName,
  lastProgress,
  specSha256,
  gitSourceSchema,
  type GitSource,
  type ArtifactInfo,
  type ArtifactName,
  type BuildState,
  type BuildStatus,
  type JobBuild,
  type JobInfo,
  type JobSpec,
  type JobView,
  type LogChunk,
  type ProgressEvent,
  type QueueItem,
} from '../../../protocol/index.js';
import { KilnError, isKilnError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { Backend, BackendHealth } from '../types.js';
import { JenkinsApi, paramOf, type BuildJson, type QueueItemJson } from './client.js';
import {
  ARTIFACT_PREFIX,
  checkSettings,
  jobConfig,
  parameterDefaults,
  parseTimerSpec,
  renderJobXml,
  type TemplateSettings,
} from './template.js';

export { renderJobXml } from './template.js';

/** The parameter that carries build()'s idempotency key into Jenkins, where a retry can find it again. */
export const KEY_PARAM = 'KILN_BUILD_KEY';
/** Builds searched for an idempotency key (newest first); retries come soon after the first attempt. */
const KEY_SEARCH_DEPTH = 25;
/** The job parameters that carry a build's inputs (jenkins/job.xml); a checked build() sends them explicitly. */
const INPUT_PARAMS = [
  'DOCKERFILE_B64',
  'CONTEXT_B64',
  'BUILD_ARGS_B64',
  'BASE_NAMES_B64',
  'SOURCE_B64',
  'FORMATS',
  'BOOT_FIRMWARE',
] as const;

/** protocol.specSha256 of the inputs a job's parameters hold (a source that does not parse counts as none). */
function paramsDigest(p: Record<string, string | undefined>): string {
  const b64 = (k: string) => Buffer.from(p[k] ?? '', 'base64');
  let source: GitSource | undefined;
  if (p.SOURCE_B64) {
    try {
      source = gitSourceSchema.parse(JSON.parse(b64('SOURCE_B64').toString('utf8')));
    } catch {
      source = undefined;
    }
  }
  return specSha256(b64('DOCKERFILE_B64'), b64('CONTEXT_B64'), source);
}

/**
 * Whether Jenkins `version` (its X-Jenkins header) is at least one of `floors` (config glue.jenkins.minVersion):
 * a floor `A.B.C` admits the LTS line A.B from C on, a floor `A.B` every release from A.B on.
 */
export function versionAllowed(version: string, floors: readonly string[]): boolean {
  const nums = (v: string) => (/^[0-9]+(\.[0-9]+)*/.exec(v.trim())?.[0] ?? '').split('.').filter(Boolean).map(Number);
  const v = nums(version);
  if (v.length < 2) return false;
  return floors.some((f) => {
    const [a, b, c] = nums(f);
    if (a === undefined || b === undefined) return false;
    if (c !== undefined) return v[0] === a && v[1] === b && (v[2] ?? 0) >= c;
    return v[0]! > a || (v[0] === a && v[1]! >= b);
  });
}

export interface JenkinsBackendDeps {
  config: FrozenConfig;
  logger: Logger;
  /** Builds the `jenkins` client; tests may wrap it. Default: `new Jenkins(opts)`. */
  jenkinsClientFactory?: (opts: JenkinsOptions) => Jenkins;
  /** How long build() follows a queue item to its build number before answering `timeout` (retry is safe). */
  followTimeoutMs?: number;
  /** Poll interval while following queue items and cancellations. */
  pollMs?: number;
  /** How often a held build.wait asks Jenkins whether the build is still building (one small GET each). */
  waitPollMs?: number;
  /** Wait after a new trigger before looking for a duplicate (must stay below the 1 s quiet period). */
  dedupeWaitMs?: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
/** A folder name Jenkins accepts and node-jenkins cannot misread as a path or URL (SECURITY-CHECKLIST 3.1). */
const FOLDER = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

export function createJenkinsBackend(deps: JenkinsBackendDeps): Backend {
  return new JenkinsBackend(deps);
}

/**
 * The `jenkins` backend: one freestyle job per Kiln job, named only by protocol.backendJobName, rendered from
 * jenkins/job.xml. See the Backend interface for lifecycle and idempotency; build() idempotency rests on the
 * KILN_BUILD_KEY parameter, searched in the queue and recent builds before and after triggering.
 */
export class JenkinsBackend implements Backend {
  readonly kind = 'jenkins' as const;
  private readonly api: JenkinsApi;
  private readonly settings: TemplateSettings;
  private readonly folder: string | undefined;
  private readonly logger: Logger;
  private readonly followTimeoutMs: number;
  private readonly pollMs: number;
  private readonly waitPollMs: number;
  private readonly dedupeWaitMs: number;
  /**
   * How far each running build's console has been read, and its last progress event: status is asked for every
   * few seconds while a build runs, and Jenkins can send a log from an offset but not its tail, so only the new
   * part is fetched. In-process only: a glue started per request (the OpenSSH door) reads the whole log once.
   */
  private readonly consoleSeen = new Map<string, { size: number; partial: string; progress?: ProgressEvent }>();
  private readonly minVersion: readonly string[];
  private readonly user: string;
  /** Set once Jenkins passed the start checks (version floor, no Overall/Administer); until then every call checks. */
  private checked = false;

  constructor(deps: JenkinsBackendDeps) {
    const j = deps.config.glue.jenkins;
    if (!j.url) throw new KilnError('invalid_input', 'glue.jenkins.url is required for the jenkins backend');
    let url: URL;
    try {
      url = new URL(j.url);
    } catch {
      throw new KilnError('invalid_input', 'glue.jenkins.url is not a URL');
    }
    if (!/^https?:$/.test(url.protocol) || url.username || url.password || url.search || url.hash) {
      throw new KilnError(
        'invalid_input',
        'glue.jenkins.url must be a plain http(s) URL without credentials (use glue.jenkins.user/token)',
      );
    }
    if (!j.user || !j.token)
      throw new KilnError(
        'invalid_input',
        'glue.jenkins.user and glue.jenkins.token (or KILN_GLUE_JENKINS_TOKEN_FILE) are required',
      );
    if (
      j.folder !== undefined &&
      (!FOLDER.test(j.folder) || j.folder === '.' || j.folder === '..' || j.folder.endsWith('.'))
    ) {
      throw new KilnError('invalid_input', 'glue.jenkins.folder must be one folder name of [A-Za-z0-9_.-]');
    }
    this.folder = j.folder;
    this.minVersion = j.minVersion;
    this.user = j.user;
    this.settings = checkSettings({
      label: j.label,
      keepBuilds: j.keepBuilds,
      retention: { keepBuilds: deps.config.retention.keepBuilds, keepDays: deps.config.retention.keepDays },
      timeoutSeconds: j.timeoutSeconds,
      sdkCommand: j.sdkCommand,
    });
    const baseUrl = url.toString().replace(/\/+$/, '');
    const authorization = `Basic ${Buffer.from(`${j.user}:${j.token}`).toString('base64')}`;
    // Credentials go in a header, not the URL, so they never show in a logged URL. An API token needs no crumb
    // (JENKINS-REST.md §2.2), but the client still asks for one, which keeps password setups working too.
    const opts: JenkinsOptions = {
      baseUrl,
      crumbIssuer: true,
      timeout: j.requestTimeoutMs,
      headers: { authorization, referer: `${baseUrl}/` },
    };
    const client = deps.jenkinsClientFactory ? deps.jenkinsClientFactory(opts) : new Jenkins(opts);
    this.api = new JenkinsApi(client, { baseUrl, authorization, timeoutMs: j.requestTimeoutMs });
    this.logger = deps.logger.child({ backend: 'jenkins' });
    // Below the web's SSH timeout (ssh.timeoutMs, 30 s), so a long queue wait answers `timeout` rather than a cut channel.
    this.followTimeoutMs = deps.followTimeoutMs ?? 20_000;
    this.pollMs = deps.pollMs ?? 200;
    this.waitPollMs = deps.waitPollMs ?? 500;
    this.dedupeWaitMs = Math.min(deps.dedupeWaitMs ?? 600, 900);
  }

  /**
   * Checks Jenkins before the glue works with it (see check()). A Jenkins that cannot be reached now is checked
   * again at the first call; one that fails a check stops the start.
   */
  async start(): Promise<void> {
    try {
      await this.check();
    } catch (e) {
      if (isKilnError(e) && (e.detail as { refused?: boolean } | undefined)?.refused) throw e;
      this.logger.warn(
        { err: (e as Error).message },
        'Jenkins could not be checked at start; checking again at the first call',
      );
    }
  }

  async close(): Promise<void> {
    /* no pooled resources */
  }

  /**
   * Refuses a Jenkins the glue must not work with (SECURITY-CHECKLIST 3.3, 3.4; test cases 35, 36), through
   * Jenkins' own API: its version (the X-Jenkins header of /whoAmI/api/json, JENKINS-REST.md §2.5) below
   * glue.jenkins.minVersion, a token Jenkins does not authenticate, and a token that has Overall/Administer (GET
   * /script, the script console, answers 403 to anyone without it; a GET only shows the form, it runs nothing).
   * Refusals are `backend_unavailable`: builds wait, as for an unreachable Jenkins, until the operator fixes it.
   */
  private async check(): Promise<void> {
    if (this.checked) return;
    const refuse = (message: string, detail: Record<string, unknown>) => {
      this.logger.error(detail, message);
      return new KilnError('backend_unavailable', message, { detail: { refused: true, ...detail } });
    };
    const who = await this.api.get('/whoAmI/api/json');
    if (who.status === 401 || who.status === 403)
      throw new KilnError(
        'backend_unavailable',
        "Jenkins refused the glue's credentials (check glue.jenkins.user and token)",
        { detail: { status: who.status } },
      );
    if (who.status !== 200)
      throw new KilnError(
        'backend_unavailable',
        `Jenkins did not answer /whoAmI (HTTP ${who.status}); try again later`,
      );
    const version = who.headers.get('x-jenkins');
    if (!version)
      throw refuse(
        'Jenkins did not say its version (no X-Jenkins header): the glue cannot check it against glue.jenkins.minVersion',
        { check: 'version' },
      );
    if (!versionAllowed(version, this.minVersion)) {
      throw refuse(
        `Jenkins ${version} is older than the minimum this glue accepts (${this.minVersion.join(' LTS line or ')}; glue.jenkins.minVersion): upgrade Jenkins, it misses security fixes`,
        { check: 'version', version },
      );
    }
    let me: { name?: unknown; authenticated?: unknown; anonymous?: unknown } = {};
    try {
      me = JSON.parse(who.text) as typeof me;
    } catch {
      /* checked below */
    }
    // Anonymous here means Jenkins ignored the credentials (e.g. security off, where anonymous may do anything).
    if (me.anonymous !== false || me.authenticated !== true) {
      throw refuse(
        `Jenkins did not authenticate the glue's user "${this.user}" (whoAmI: ${JSON.stringify(String(me.name ?? 'nothing'))})`,
        { check: 'identity' },
      );
    }
    const script = await this.api.get('/script');
    if (script.status >= 200 && script.status < 300) {
      throw refuse(
        `The glue's Jenkins user "${this.user}" has Overall/Administer; give it only Job/Create, Configure, Delete, Build, Read and Overall/Read (SECURITY-CHECKLIST 3.4)`,
        { check: 'administer' },
      );
    }
    if (script.status !== 403)
      throw new KilnError(
        'backend_unavailable',
        `Jenkins gave an unexpected answer to the permission check (HTTP ${script.status} for /script); try again later`,
      );
    this.logger.info({ version, user: this.user }, 'Jenkins checked: version and permissions are acceptable');
    this.checked = true;
  }

  /** The client-side job name: `folder/kiln-job-N` or `kiln-job-N`. Only ever built from a validated number. */
  private name(job: number): string {
    if (!Number.isSafeInteger(job) || job < 1 || job > 999_999_999_999)
      throw new KilnError('invalid_input', 'job id must be a positive integer');
    const base = backendJobName(job);
    return this.folder ? `${this.folder}/${base}` : base;
  }

  private buildNo(build: number): number {
    if (!Number.isSafeInteger(build) || build < 1 || build > 999_999_999_999)
      throw new KilnError('invalid_input', 'build number must be a positive integer');
    return build;
  }

  private path(job: number, build: number, rest: string): string {
    const segs = this.name(job)
      .split('/')
      .map((s) => `/job/${encodeURIComponent(s)}`)
      .join('');
    return `${segs}/${build}/${rest}`;
  }

  // ------------------------------------------------------------------------------------------------ jobs
  async putJob(job: number, spec: JobSpec): Promise<{ created: boolean }> {
    const name = this.name(job);
    await this.check();
    const xml = renderJobXml(job, spec, this.settings);
    try {
      await this.api.call('job.create', (c) => c.job.create(name, xml));
      this.logger.info({ job, jenkinsJob: name }, 'jenkins job created');
      return { created: true };
    } catch (e) {
      // Create-if-absent, else update: "already exists" (400) is the normal path for an update or a retried create.
      if (!(e instanceof KilnError && e.code === 'conflict' && /already exists/i.test(e.message))) throw e;
    }
    await this.api.call('job.config', (c) => c.job.config(name, xml));
    this.logger.info({ job, jenkinsJob: name }, 'jenkins job updated');
    return { created: false };
  }

  async setEnabled(job: number, enabled: boolean): Promise<void> {
    const name = this.name(job);
    await this.check();
    await this.api.call(enabled ? 'job.enable' : 'job.disable', (c) =>
      enabled ? c.job.enable(name) : c.job.disable(name),
    );
  }

  async deleteJob(job: number): Promise<{ deleted: boolean }> {
    const name = this.name(job);
    await this.check();
    try {
      await this.api.call('job.delete', (c) => c.job.destroy(name));
      return { deleted: true };
    } catch (e) {
      if (e instanceof KilnError && e.code === 'not_found') return { deleted: false };
      throw e;
    }
  }

  /**
   * The job as its config.xml says now, whoever wrote it last (Kiln, or someone in Jenkins): disabled, the timer,
   * and the parameters' defaults, which are what a timer build takes.
   */
  async getJob(job: number): Promise<JobView> {
    const name = this.name(job);
    await this.check();
    const xml = (await this.api.call('job.config', (c) => c.job.config(name))) as string | Buffer;
    const cfg = jobConfig(Buffer.isBuffer(xml) ? xml.toString('utf8') : String(xml));
    const p = cfg.params;
    const text = (k: string) => Buffer.from(p[k] ?? '', 'base64').toString('utf8');
    const buildArgs: Record<string, string> = {};
    for (const line of text('BUILD_ARGS_B64').split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0 && Object.keys(buildArgs).length < 64)
        buildArgs[line.slice(0, eq).slice(0, 128)] = line.slice(eq + 1).slice(0, 4096);
    }
    const list = (v: string | undefined) =>
      (v ?? '')
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean)
        .slice(0, 4)
        .map((x) => x.slice(0, 16));
    const timer = parseTimerSpec(cfg.timerSpec);
    const view: JobView = {
      job,
      enabled: !cfg.disabled,
      ...timer,
      formats: list(p.FORMATS),
      buildArgs,
      specSha256: paramsDigest(p),
    };
    if (timer.schedule === 'other') view.timerSpec = (cfg.timerSpec ?? '').slice(0, 500);
    const firmware = list(p.BOOT_FIRMWARE);
    if (firmware.length) view.bootFirmware = firmware;
    return view;
  }

  /** The job's newest builds; a timer build carries Jenkins' TimerTriggerCause, Kiln's own its KILN_BUILD_KEY. */
  async jobBuilds(job: number): Promise<JobBuild[]> {
    const name = this.name(job);
    await this.check();
    const tree = `builds[number,timestamp,actions[parameters[name,value],causes[_class]]]{0,${JOB_BUILDS_DEPTH}}`;
    const j = (await this.api.call('job.get', (c) => c.job.get(name, { tree }))) as { builds?: BuildJson[] };
    return (j.builds ?? []).map((b) => {
      const key = paramOf(b.actions, KEY_PARAM);
      const timer = (b.actions ?? []).some((a) => (a?.causes ?? []).some((c) => /TimerTrigger/.test(c?._class ?? '')));
      const out: JobBuild = { build: b.number, trigger: timer ? 'schedule' : key ? 'api' : 'other' };
      if (key && IDEMPOTENCY_KEY_RE.test(key)) out.key = key;
      if (b.timestamp) out.queuedAt = new Date(b.timestamp).toISOString();
      return out;
    });
  }

  // ---------------------------------------------------------------------------------------------- builds
  private async queuedWithKey(job: number, key: string): Promise<QueueItemJson[]> {
    const base = backendJobName(job);
    // An explicit tree: at depth 0 Jenkins may prune the parameters nested under actions (§2.6).
    const tree = 'items[id,why,inQueueSince,task[name,url],actions[parameters[name,value]]]';
    const items = (await this.api.call('queue.list', (c) => c.queue.list({ tree }))) as QueueItemJson[];
    return items
      .filter(
        (i) =>
          i.task?.name === base &&
          (!this.folder || (i.task.url ?? '').includes(`/job/${encodeURIComponent(this.folder)}/`)) &&
          paramOf(i.actions, KEY_PARAM) === key,
      )
      .sort((a, b) => a.id - b.id);
  }

  private async buildsWithKey(job: number, key: string): Promise<Array<{ number: number; queueId?: number }>> {
    const name = this.name(job);
    const j = (await this.api.call('job.get', (c) =>
      c.job.get(name, { tree: `builds[number,queueId,actions[parameters[name,value]]]{0,${KEY_SEARCH_DEPTH}}` }),
    )) as { builds?: BuildJson[] };
    return (j.builds ?? [])
      .filter((b) => paramOf(b.actions, KEY_PARAM) === key)
      .map((b) => ({ number: b.number, queueId: b.queueId }))
      .sort((a, b) => a.number - b.number);
  }

  /** Follows a queue item until the executor has created its build (JENKINS-REST.md §6.4: executable appears late). */
  private async follow(job: number, id: number): Promise<number> {
    const deadline = Date.now() + this.followTimeoutMs;
    for (;;) {
      let item: QueueItemJson | undefined;
      try {
        item = (await this.api.call('queue.item', (c) => c.queue.item(id))) as QueueItemJson;
      } catch (e) {
        // A LeftItem expires after 5 minutes: the build, if any, carries the queue id.
        if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
        const j = (await this.api.call('job.get', (c) =>
          c.job.get(this.name(job), { tree: `builds[number,queueId]{0,${KEY_SEARCH_DEPTH}}` }),
        )) as { builds?: BuildJson[] };
        const b = j.builds?.find((x) => x.queueId === id);
        if (b) return b.number;
        throw new KilnError('not_found', 'the queued build vanished from Jenkins');
      }
      if (item.executable?.number) return item.executable.number;
      if (item.cancelled) throw new KilnError('conflict', 'the build was cancelled in Jenkins before it started');
      if (Date.now() > deadline) {
        throw new KilnError(
          'timeout',
          `the build is still queued in Jenkins (${item.why ?? 'waiting'}); ask again with the same key`,
        );
      }
      await sleep(this.pollMs);
    }
  }

  async build(job: number, idempotencyKey: string, sha256?: string): Promise<{ build: number; created: boolean }> {
    const name = this.name(job);
    this.key(idempotencyKey);
    if (sha256 !== undefined && !SHA256_RE.test(sha256)) throw new KilnError('invalid_input', 'bad sha256');
    await this.check();
    const log = this.logger.child({ job, key: idempotencyKey });

    // 1. Seen before? A retried trigger finds its item in the queue or its build among the recent ones.
    const queued = await this.queuedWithKey(job, idempotencyKey);
    if (queued[0]) return { build: await this.follow(job, queued[0].id), created: false };
    const built = await this.buildsWithKey(job, idempotencyKey);
    if (built[0]) return { build: built[0].number, created: false };

    // 2. Trigger with a 1 s quiet period: long enough for step 3 to withdraw our item before it can start. With a
    // digest, the build's inputs go along explicitly, checked against it: a job.put between this caller's put and
    // now changes the job's defaults, never what this build uses.
    const inputs = sha256 === undefined ? {} : await this.inputsMatching(name, sha256);
    const t = await this.api.trigger(name, { ...inputs, [KEY_PARAM]: idempotencyKey }, '1sec');
    let id = t.id;
    if (id === null) {
      const again = await this.queuedWithKey(job, idempotencyKey);
      id = again[0]?.id ?? null;
      if (id === null) {
        const b = await this.buildsWithKey(job, idempotencyKey);
        if (b[0]) return { build: b[0].number, created: false };
        throw new KilnError(
          'backend_unavailable',
          'Jenkins accepted the build but did not say where it was queued; retry with the same key',
        );
      }
    }
    if (!t.created) return { build: await this.follow(job, id), created: false };

    // 3. A concurrent retry may have slipped through the window in which its item had left the queue but its
    // build did not exist yet (§6.4). Look again late in our quiet period, when that build exists: the oldest
    // request wins and a younger duplicate withdraws its item before it can start.
    await sleep(this.dedupeWaitMs);
    const others = (await this.queuedWithKey(job, idempotencyKey)).filter((i) => i.id < id!);
    const older = (await this.buildsWithKey(job, idempotencyKey)).filter((b) => b.queueId !== id);
    if (others[0] || older[0]) {
      const cancelled = await this.api.cancelQueueItem(id);
      if (!cancelled) {
        // Ours already started (Jenkins was slow): stop it, the older one stands.
        const mine = (await this.buildsWithKey(job, idempotencyKey)).find((b) => b.queueId === id);
        if (mine) await this.api.call('build.stop', (c) => c.build.stop(name, mine.number));
      }
      log.warn({ queueId: id }, 'duplicate trigger withdrawn');
      return { build: older[0] ? older[0].number : await this.follow(job, others[0]!.id), created: false };
    }
    const number = await this.follow(job, id);
    log.info({ queueId: id, build: number }, 'jenkins build started');
    return { build: number, created: true };
  }

  /** The job's input parameters as it holds them now, if they are the spec with digest `sha256`; else conflict. */
  private async inputsMatching(name: string, sha256: string): Promise<Record<string, string>> {
    const xml = (await this.api.call('job.config', (c) => c.job.config(name))) as string | Buffer;
    const defaults = parameterDefaults(Buffer.isBuffer(xml) ? xml.toString('utf8') : String(xml));
    if (paramsDigest(defaults) !== sha256) {
      throw new KilnError(
        'conflict',
        'The job holds another version of the Dockerfile than the one asked for (it changed meanwhile); put it again and retry',
      );
    }
    return Object.fromEntries(INPUT_PARAMS.map((p) => [p, defaults[p] ?? '']));
  }

  /** Idempotency keys travel as a Jenkins parameter value: the protocol's pattern, checked again here. */
  private key(k: string): void {
    if (!IDEMPOTENCY_KEY_RE.test(k)) throw new KilnError('invalid_input', 'bad idempotency key');
  }

  async withdraw(
    job: number,
    idempotencyKey: string,
  ): Promise<{ withdrawn: boolean; build?: number; state?: BuildState }> {
    this.name(job);
    this.key(idempotencyKey);
    await this.check();
    let withdrawn = false;
    for (const item of await this.queuedWithKey(job, idempotencyKey)) {
      withdrawn = (await this.api.cancelQueueItem(item.id)) || withdrawn;
    }
    // An item can leave the queue for a build between the two looks: the build list catches it.
    const built = await this.buildsWithKey(job, idempotencyKey);
    if (!built[0]) return { withdrawn };
    const { state } = await this.cancel(job, built[0].number);
    return { withdrawn: true, build: built[0].number, state };
  }

  async cancel(job: number, build: number): Promise<{ state: BuildState }> {
    const name = this.name(job);
    const n = this.buildNo(build);
    await this.check();
    const b = (await this.api.call('build.get', (c) => c.build.get(name, n))) as BuildJson;
    if (b.building) {
      // stop answers 302 running or not (§3.12); the build then ends ABORTED.
      await this.api.call('build.stop', (c) => c.build.stop(name, n));
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const s = await this.status(job, n);
        if (s.state !== 'running' && s.state !== 'queued') return { state: s.state };
        await sleep(this.pollMs);
      }
      return { state: 'running' };
    }
    return { state: (await this.status(job, n)).state };
  }

  /**
   * Jenkins' "keep this build forever" (`keepLog`), which its build discarder honours: read first, toggled only when
   * it differs (toggleLogKeep flips it), so asking twice is one change. Needs Run/Update (and Run/Delete to let go).
   */
  async keep(job: number, build: number, keep: boolean): Promise<{ kept: boolean }> {
    const name = this.name(job);
    const n = this.buildNo(build);
    await this.check();
    const b = (await this.api.call('build.get', (c) => c.build.get(name, n))) as BuildJson;
    if (!!b.keepLog !== keep) await this.api.post(this.path(job, n, 'toggleLogKeep'), 'build.keep');
    return { kept: keep };
  }

  /**
   * Jenkins drops a build's artifacts itself, with the job's build discarder (jenkins/job.xml, from the retention
   * the web sends with every job.put): nothing is deleted from here. Answers whether they are gone yet.
   */
  async discard(job: number, build: number): Promise<{ discarded: boolean }> {
    const name = this.name(job);
    const n = this.buildNo(build);
    await this.check();
    const b = (await this.api.call('build.get', (c) => c.build.get(name, n))) as BuildJson;
    if (b.keepLog) throw new KilnError('conflict', 'This build is kept (pinned): its artifacts are not discarded');
    if (b.building) throw new KilnError('conflict', 'This build has not finished');
    return { discarded: (b.artifacts ?? []).length === 0 };
  }

  async status(job: number, build: number): Promise<BuildStatus> {
    const name = this.name(job);
    const n = this.buildNo(build);
    await this.check();
    const b = (await this.api.call('build.get', (c) => c.build.get(name, n))) as BuildJson;
    const base: BuildStatus = {
      job,
      build: n,
      state: 'running',
      startedAt: new Date(b.timestamp).toISOString(),
      artifacts: [],
    };
    // `result` can be set before the build is over (§5.3): only building === false means finished.
    if (b.building || b.result === null) {
      const progress = await this.progressOf(name, n);
      if (progress) base.progress = progress;
      return base;
    }
    this.consoleSeen.delete(`${name}#${n}`);
    base.finishedAt = new Date(b.timestamp + b.duration).toISOString();
    switch (b.result) {
      case 'SUCCESS':
        base.state = 'succeeded';
        break;
      case 'ABORTED': {
        // A user's stop logs "Aborted by <user>"; without it the build was cut off (Jenkins restart, lost agent).
        const text = (await this.api.call('build.log', (c) => c.build.log(name, n))) as string;
        if (/\nAborted by /.test(`\n${text}`)) {
          base.state = 'cancelled';
          base.reason = 'cancelled';
        } else {
          base.state = 'lost';
          base.reason = 'interrupted: the build was cut off in Jenkins (a restart of Jenkins or a lost agent)';
        }
        break;
      }
      default:
        base.state = 'failed';
        base.reason = b.result === 'NOT_BUILT' ? 'not built' : 'the build failed; see its log';
    }
    base.artifacts = await this.artifactList(job, n, b);
    // The SDK writes result.json however it ends, unless it is killed outright: a failed step without one was cut
    // off (the SDK or the step SIGKILLed, the agent's OOM killer), which is the build service's fault, like a
    // restart: `lost`, so the web requeues it once, as it does for the local runner's killed SDK.
    if (b.result === 'FAILURE' && !base.artifacts.some((a) => a.name === 'result.json')) {
      base.state = 'lost';
      base.reason = 'interrupted: the build step ended before the SDK wrote its result (it was killed)';
    }
    return base;
  }

  /**
   * build.wait: Jenkins tells nobody when a build ends, so the glue asks, every waitPollMs, for the two fields that
   * say it (`tree=building,result`, a few bytes); the full status (console progress, artifact sizes) is read once,
   * at the start and when the answer changes. A build Jenkins numbered is never `queued` here: waiting on that
   * answers at once, as a running build.
   */
  async wait(
    job: number,
    build: number,
    known: BuildState,
    seconds: number,
    signal?: AbortSignal,
  ): Promise<BuildStatus> {
    const deadline = Date.now() + seconds * 1000;
    const name = this.name(job);
    const n = this.buildNo(build);
    const st = await this.status(job, n);
    if (st.state !== known || known !== 'running') return st;
    while (Date.now() + this.waitPollMs < deadline && !signal?.aborted) {
      await sleep(this.waitPollMs, signal);
      const b = (await this.api.call('build.get', (c) => c.build.get(name, n, { tree: 'building,result' }))) as Pick<
        BuildJson,
        'building' | 'result'
      >;
      if (!b.building && b.result != null) break;
    }
    return this.status(job, n);
  }

  /** The console from byte `start` (§3.15): its text, the log's size Jenkins reported, and whether more will come. */
  private async console(
    name: string,
    n: number,
    start: number,
  ): Promise<{ text: string; size?: number; more: boolean }> {
    const r = (await this.api.call('build.log', (c) => c.build.log(name, n, { start, meta: true }))) as {
      text: unknown;
      more: boolean;
      size?: string;
    };
    const text = typeof r.text === 'string' ? r.text : Buffer.isBuffer(r.text) ? r.text.toString('utf8') : '';
    return { text, more: r.more, size: r.size !== undefined && /^[0-9]+$/.test(r.size) ? Number(r.size) : undefined };
  }

  /** The build's last `##kiln` progress event, reading the console only past where the last call stopped. */
  private async progressOf(name: string, n: number): Promise<ProgressEvent | undefined> {
    const key = `${name}#${n}`;
    let seen = this.consoleSeen.get(key) ?? { size: 0, partial: '' };
    // Progress is a nicety on top of the state: a console that cannot be read now leaves the last one known.
    const got = await this.console(name, n, seen.size).catch((err: unknown) => {
      this.logger.debug({ err, build: n }, 'console not readable for progress');
      return undefined;
    });
    if (got?.size === undefined) return seen.progress;
    const { text, size } = got;
    // A log shorter than what was read (rotated, or the build replaced) comes whole again (§3.15).
    if (size < seen.size) seen = { size: 0, partial: '' };
    const lines = seen.partial + text;
    const lastNl = lines.lastIndexOf('\n');
    const progress = lastProgress(lines.slice(0, lastNl + 1)) ?? seen.progress;
    // An unfinished last line waits for its end; a line longer than any progress event is not one.
    const partial = lines.slice(lastNl + 1);
    this.consoleSeen.delete(key);
    this.consoleSeen.set(key, { size, partial: partial.length > 4096 ? '' : partial, progress });
    if (this.consoleSeen.size > 1000) this.consoleSeen.delete(this.consoleSeen.keys().next().value!);
    return progress;
  }

  private async artifactList(job: number, n: number, b: BuildJson): Promise<ArtifactInfo[]> {
    const names = (b.artifacts ?? [])
      .filter((a) => a.relativePath.startsWith(ARTIFACT_PREFIX))
      .map((a) => a.relativePath.slice(ARTIFACT_PREFIX.length))
      .filter((x): x is ArtifactName => (ARTIFACT_NAMES as readonly string[]).includes(x));
    const sizes = await Promise.all(
      names.map((x) => this.api.artifactSize(this.path(job, n, `artifact/${ARTIFACT_PREFIX}${encodeURIComponent(x)}`))),
    );
    const missing = names.filter((_x, i) => sizes[i] === undefined);
    if (missing.length)
      this.logger.warn({ job, build: n, missing }, 'jenkins listed artifacts whose size it would not tell; left out');
    return names.flatMap((x, i) => (sizes[i] === undefined ? [] : [{ name: x, size: sizes[i]! }]));
  }

  async log(job: number, build: number, offset: number): Promise<LogChunk> {
    const name = this.name(job);
    const n = this.buildNo(build);
    if (!Number.isSafeInteger(offset) || offset < 0)
      throw new KilnError('invalid_input', 'offset must be a non-negative integer');
    await this.check();
    const r = await this.console(name, n, offset);
    const text = r.text;
    const size = r.size ?? offset + Buffer.byteLength(text);
    // Jenkins restarts at 0 when start is past the end (§3.15): say so through `offset`.
    const from = offset > size ? 0 : offset;
    const bytes = Buffer.from(text, 'utf8');
    if (bytes.length <= MAX_LOG_CHUNK) return { text, offset: from, nextOffset: size, more: r.more };
    const cut = utf8Boundary(bytes.subarray(0, MAX_LOG_CHUNK), false);
    return { text: bytes.subarray(0, cut).toString('utf8'), offset: from, nextOffset: from + cut, more: true };
  }

  async artifact(job: number, build: number, name: ArtifactName, offset: number): Promise<Readable> {
    const n = this.buildNo(build);
    if (!(ARTIFACT_NAMES as readonly string[]).includes(name)) throw new KilnError('invalid_input', 'unknown artifact');
    if (!Number.isSafeInteger(offset) || offset < 0)
      throw new KilnError('invalid_input', 'offset must be a non-negative integer');
    await this.check();
    return this.api.artifact(this.path(job, n, `artifact/${ARTIFACT_PREFIX}${encodeURIComponent(name)}`), offset);
  }

  /**
   * Jenkins' version from the X-Jenkins header of /whoAmI (a light GET, asked each time: the health page wants to
   * know that Jenkins answers now). The Docker engines are the agents', out of the glue's sight.
   */
  async describe(): Promise<BackendHealth> {
    try {
      const who = await this.api.get('/whoAmI/api/json');
      const version = who.headers.get('x-jenkins') ?? undefined;
      if (who.status !== 200)
        return {
          backendReachable: false,
          backendError: `Jenkins answered HTTP ${who.status}`,
          ...(version ? { version } : {}),
        };
      return { backendReachable: true, ...(version ? { version: version.slice(0, 100) } : {}) };
    } catch (e) {
      return {
        backendReachable: false,
        backendError: (isKilnError(e) ? e.message : 'Jenkins could not be reached').slice(0, 1000),
      };
    }
  }

  // ---------------------------------------------------------------------------------------------- lists
  async listJobs(): Promise<JobInfo[]> {
    await this.check();
    const tree = 'jobs[name,color,buildable,lastBuild[number]]';
    const folder = this.folder;
    const jobs = (await this.api.call('job.list', (c) =>
      (folder ? c.job.get(folder, { tree }) : c.info({ tree })).then((i: { jobs?: unknown[] }) => i.jobs ?? []),
    )) as Array<{
      _class?: string;
      name: string;
      color?: string;
      buildable?: boolean;
      lastBuild?: { number: number } | null;
    }>;
    return jobs.map((j) => {
      const id = jobIdFromBackendName(j.name);
      const info: JobInfo = {
        backendName: j.name,
        managed: id !== undefined,
        enabled: j.buildable ?? !(j.color ?? '').startsWith('disabled'),
      };
      if (id !== undefined) info.job = id;
      if (j.lastBuild?.number) info.lastBuild = j.lastBuild.number;
      return info;
    });
  }

  async listQueue(): Promise<QueueItem[]> {
    await this.check();
    const items = (await this.api.call('queue.list', (c) => c.queue.list())) as QueueItemJson[];
    return items.map((i) => {
      const q: QueueItem = { id: i.id, backendName: i.task?.name ?? '' };
      const id = jobIdFromBackendName(q.backendName);
      if (id !== undefined) q.job = id;
      if (i.why) q.why = i.why;
      if (i.inQueueSince) q.since = new Date(i.inQueueSince).toISOString();
      return q;
    });
  }
}
