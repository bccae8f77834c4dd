import path from 'node:path';
import { loadConfig, type FrozenConfig } from '../../src/config/index.js';
import { createDb, findBuild, isFinal, migrateLatest, type BuildRow, type Db } from '../../src/db/index.js';
import { silentLogger, type Logger } from '../../src/shared/logger.js';
import { createApp } from '../../src/web/index.js';
import type { GluePort } from '../../src/core/ports.js';
import type { Backend } from '../../src/glue/backends/types.js';
import {
  CLI,
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  Worker,
  createCore,
  createTokens,
  createUsers,
  type Scope,
} from '../../src/core/index.js';
import { startSshDoorFromConfig, type SshDoor, type SshDoorOptions } from '../../src/ssh-door/index.js';
import { TASK_HANDLERS } from '../../src/core/tasks/kinds.js';
import type { TaskKindName } from '../../src/core/tasks/queue.js';
import type { TaskKind } from '../../src/core/tasks/worker.js';
import { startWeb, type StartWebOptions } from '../../src/web/index.js';
import { startInProcessGlue, type InProcessGlue } from './in-process-glue.js';
import { tempDir } from './tmp.js';
import { startTestGlue, type TestGlue, type TestGlueOptions } from './glue.js';
import { until } from './wait.js';

/** Worker settings for tests: quick polls, refreshes and retries (the defaults are for real deployments). */
export const TEST_WORKER = { pollMs: 50, refreshMs: 100, backoffMs: 50, backoffMaxSeconds: 1 };

/**
 * A running web with its task worker. Its glue is the real one: in this process (`local`: the real glue and local
 * backend with the fake SDK, reached through the real client codec; the default), over SSH (`realGlue`), or one the
 * test gives (`glue`).
 */
export interface TestWeb {
  url: string;
  db: Db;
  glue: GluePort;
  config: FrozenConfig;
  dir: string;
  /** The worker running beside the web, as in `kiln web` (absent with `worker: false`: the test drains one itself). */
  worker: Worker | undefined;
  /**
   * A worker over the same database, glue and clock, not started: `drain()` it to run what is due now. `kinds`
   * replaces handlers (e.g. `{ ...attestTask, concurrency: 0 }`: a worker that never verifies).
   */
  newWorker(kinds?: Partial<Record<TaskKindName, TaskKind>>): Worker;
  client(): HttpClient;
  /** The app's route table (method and path of every route), for tests that replay every route. */
  routes(): Array<{ method: string; path: string }>;
  /** The users' SSH door (with `sshDoor`), on a loopback port of its own, over this web's database, glue and worker. */
  sshDoor: SshDoor | undefined;
  /** Waits until the build's row satisfies `pred` (default: final) and returns it. */
  waitForBuild(id: number, pred?: (b: BuildRow) => boolean): Promise<BuildRow>;
  close(): Promise<void>;
}

interface TestWebOptions {
  config?: Record<string, unknown>;
  limits?: StartWebOptions['limits'];
  /** The clock of the login throttle and of the task queue (ms), for tests that move time instead of waiting. */
  clock?: StartWebOptions['clock'];
  /** The password hasher (a test may watch its semaphore). */
  hasher?: StartWebOptions['hasher'];
  glue?: GluePort;
  /** A migrated database to use instead of a fresh SQLite file (e.g. PostgreSQL); the caller drops it. */
  db?: Db;
  /** The in-process glue's backend instead of the local one (e.g. a Jenkins backend against the double). */
  backend?: Backend;
  /** Use a real built-in SSH glue server with the local backend (fake SDK unless sdkCommand is given). */
  realGlue?: true | Pick<TestGlueOptions, 'sdkCommand' | 'concurrency'>;
  logger?: Logger;
  /** How host names resolve for address checks (webhooks, git), in the web and its worker. */
  lookup?: (host: string) => Promise<string[]>;
  /** false: no worker runs beside the web (the test runs tasks with `newWorker().drain()`). */
  worker?: false;
  /** Builds the in-process glue's local backend runs at once (default 2). */
  glueConcurrency?: number;
  /** Also start the users' SSH door (src/ssh-door), with these options over the configured ones. */
  sshDoor?: true | Partial<Omit<SshDoorOptions, 'core' | 'config'>>;
}

const isFinalRow = (b: BuildRow) => isFinal(b.state);

/** Starts the real app on a random loopback port with a fresh SQLite file in a temp dir. */
export async function startTestWeb(
  opts: TestWebOptions & { realGlue: NonNullable<TestWebOptions['realGlue']> },
): Promise<TestWeb & { realGlue: TestGlue }>;
export async function startTestWeb(opts: TestWebOptions & { glue: GluePort }): Promise<TestWeb>;
export async function startTestWeb(
  opts: Omit<TestWebOptions, 'glue' | 'realGlue'> & { backend: Backend },
): Promise<TestWeb & { local: InProcessGlue<Backend> }>;
export async function startTestWeb(
  opts?: Omit<TestWebOptions, 'glue' | 'realGlue' | 'backend'>,
): Promise<TestWeb & { local: InProcessGlue }>;
export async function startTestWeb(
  opts: TestWebOptions = {},
): Promise<TestWeb & { realGlue?: TestGlue; local?: InProcessGlue<Backend> }> {
  const { dir, cleanup } = tempDir('kiln-web-');
  const real = opts.realGlue ? await startTestGlue(typeof opts.realGlue === 'object' ? opts.realGlue : {}) : undefined;
  const local =
    !real && !opts.glue
      ? await startInProcessGlue<Backend>({
          dataDir: path.join(dir, 'glue-data'),
          ...(opts.glueConcurrency ? { concurrency: opts.glueConcurrency } : {}),
          ...(opts.backend ? { backend: opts.backend } : {}),
        })
      : undefined;
  const config = loadConfig(
    {},
    {
      dataDir: dir,
      ...opts.config,
      web: { hashConcurrency: 2, ...(opts.config?.web as object | undefined) },
      worker: { ...TEST_WORKER, ...(opts.config?.worker as object | undefined) },
    },
  );
  const db = opts.db ?? createDb({ client: 'sqlite', filename: path.join(dir, 'kiln.sqlite') });
  await migrateLatest(db);
  const glue = real?.client ?? local?.client ?? opts.glue!;
  const logger = opts.logger ?? silentLogger;
  const coreDeps = {
    config,
    db,
    glue,
    logger,
    hasher: new PasswordHasher(1),
    limits: DEFAULT_LOGIN_LIMITS,
    ...(opts.clock ? { now: opts.clock } : {}),
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
  };
  const newWorker = (kinds: Partial<Record<TaskKindName, TaskKind>> = {}) =>
    new Worker(coreDeps, { ...TASK_HANDLERS, ...kinds });
  const worker = opts.worker === false ? undefined : newWorker().start();
  const web = await startWeb({
    config,
    db,
    glue,
    logger,
    host: '127.0.0.1',
    port: 0,
    limits: opts.limits,
    clock: opts.clock,
    hasher: opts.hasher,
    ...(worker ? { onEnqueue: () => worker.wake() } : {}),
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
  });
  // As src/cmd/site.ts starts it: a core of its own over the same parts.
  const sshDoor = opts.sshDoor
    ? await startSshDoorFromConfig(
        config,
        { core: createCore({ ...coreDeps, ...(worker ? { onEnqueue: () => worker.wake() } : {}) }), logger },
        { host: '127.0.0.1', port: 0, ...(opts.sshDoor === true ? {} : opts.sshDoor) },
      )
    : undefined;
  return {
    url: web.url,
    sshDoor,
    db,
    glue,
    config,
    dir,
    worker,
    realGlue: real,
    local,
    newWorker,
    client: () => new HttpClient(web.url),
    routes: () => {
      // A second app over the same parts, only to read its table (createApp mounts every router).
      const app = createApp({ config, db, glue, logger: silentLogger, sessionSecret: 'x'.repeat(32) });
      const table = app.locals.routeTable as Array<{ method: string; path: string }>;
      // It never served a request, so it has no read connection to wait for.
      void app.closeApp();
      return table;
    },
    waitForBuild: (id, pred = isFinalRow) =>
      until(async () => {
        const b = await findBuild(db, id, null);
        return b && pred(b) ? b : undefined;
      }),
    close: async () => {
      await sshDoor?.close();
      await web.close();
      await worker?.stop();
      if (!opts.db) await db.destroy();
      await local?.close();
      await real?.cleanup();
      cleanup();
    },
  };
}

/** A user with a generated password, as `kiln user add` makes one. */
export function addUser(
  db: Db,
  username: string,
  role: 'user' | 'admin',
): Promise<{ username: string; password: string }> {
  return createUsers({ db, hasher: new PasswordHasher(1), logger: silentLogger }).create(CLI, { username, role });
}

/** A personal API token of `username`, as `kiln user token` makes one (the clock: the web's, when the test moves it). */
export async function addToken(
  w: Pick<TestWeb, 'db' | 'config'>,
  username: string,
  scopes: readonly Scope[] = ['read', 'build'],
  o: { expires?: string; name?: string; now?: () => number } = {},
): Promise<string> {
  const t = await createTokens({
    db: w.db,
    config: w.config,
    logger: silentLogger,
    ...(o.now ? { now: o.now } : {}),
  }).create(CLI, {
    username,
    name: o.name ?? 'test',
    scopes: [...scopes],
    ...(o.expires ? { expires: o.expires } : {}),
  });
  return t.token;
}

/** The REST API with a bearer token (none: anonymous). Redirects are not followed. */
export class ApiClient {
  constructor(
    readonly base: string,
    public token?: string,
  ) {}

  request(p: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token && !headers.has('authorization')) headers.set('authorization', `Bearer ${this.token}`);
    return fetch(`${this.base}/api/v1${p}`, { ...init, headers, redirect: 'manual' });
  }

  get(p: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, { headers });
  }

  post(p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, {
      method: 'POST',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    });
  }

  /** PUT /dockerfiles/NAME as multipart: the Dockerfile, optionally a context (tar or tar.gz) and settings. */
  putDockerfile(
    name: string,
    dockerfile: string,
    o: { context?: Buffer; settings?: unknown; removeContext?: boolean } = {},
  ): Promise<Response> {
    const f = new FormData();
    f.set('dockerfile', new Blob([dockerfile]), 'Dockerfile');
    if (o.context) f.set('context', new Blob([new Uint8Array(o.context)]), 'context.tar');
    if (o.settings !== undefined) f.set('settings', JSON.stringify(o.settings));
    if (o.removeContext) f.set('removeContext', 'true');
    return this.request(`/dockerfiles/${name}`, { method: 'PUT', body: f });
  }
}

export function ensureFirstAdmin(db: Db): Promise<{ username: string; password: string } | null> {
  return createUsers({ db, hasher: new PasswordHasher(1), logger: silentLogger }).ensureFirstAdmin();
}

/** fetch with a cookie jar and helpers for forms carrying the CSRF token. Redirects are not followed. */
export class HttpClient {
  /** Raw Set-Cookie headers of the last response. */
  lastSetCookie: string[] = [];
  /** `jar` may be shared by clients of one user on several web instances (one session on one database). */
  constructor(
    readonly base: string,
    readonly jar = new Map<string, string>(),
  ) {}

  cookieHeader(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(p: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.jar.size && !headers.has('cookie')) headers.set('cookie', this.cookieHeader());
    const res = await fetch(this.base + p, { ...init, headers, redirect: 'manual' });
    this.lastSetCookie = res.headers.getSetCookie();
    for (const sc of this.lastSetCookie) {
      const [pair, ...attrs] = sc.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || value === '';
      if (expired) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }

  get(p: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, { headers });
  }

  /** The CSRF token embedded in the page at `p`. */
  async token(p = '/login'): Promise<string> {
    const html = await (await this.get(p)).text();
    const m = /name="_csrf" value="([^"]+)"/.exec(html);
    if (!m) throw new Error(`no CSRF token on ${p}`);
    return m[1]!;
  }

  async apiToken(): Promise<string> {
    return ((await (await this.get('/api/csrf')).json()) as { token: string }).token;
  }

  postForm(p: string, fields: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, { method: 'POST', body: new URLSearchParams(fields), headers });
  }

  postMultipart(p: string, form: FormData, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, { method: 'POST', body: form, headers });
  }

  async postJson(p: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(p, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...headers },
    });
  }

  async register(username: string, password: string): Promise<Response> {
    const t = await this.token('/register');
    return this.postForm('/register', { _csrf: t, username, password, password2: password });
  }

  async login(username: string, password: string, next?: string): Promise<Response> {
    const t = await this.token('/login');
    return this.postForm('/login', { _csrf: t, username, password, ...(next !== undefined ? { next } : {}) });
  }

  /** Registers and logs in; throws unless both worked. */
  async signUp(username: string, password = 'correct horse battery staple'): Promise<void> {
    const r = await this.register(username, password);
    if (r.status !== 201) throw new Error(`register ${username}: ${r.status} ${await r.text()}`);
    const l = await this.login(username, password);
    if (l.status !== 303) throw new Error(`login ${username}: ${l.status}`);
  }

  /** Creates a Dockerfile through the HTML form (pasted text); returns its id. */
  async createDockerfile(name: string, content: string): Promise<number> {
    const t = await this.token('/dockerfiles/new');
    const f = new FormData();
    f.set('_csrf', t);
    f.set('name', name);
    f.set('content', content);
    const r = await this.postMultipart('/dockerfiles', f);
    if (r.status !== 303) throw new Error(`create ${name}: ${r.status} ${await r.text()}`);
    return Number(/\/dockerfiles\/(\d+)$/.exec(r.headers.get('location') ?? '')![1]);
  }

  /** Presses Build on a Dockerfile page (with that page's idempotency key); returns the build id. */
  async build(dockerfileId: number): Promise<{ id: number; key: string; token: string }> {
    const html = await (await this.get(`/dockerfiles/${dockerfileId}`)).text();
    const token = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
    const key = /name="key" value="([^"]+)"/.exec(html)![1]!;
    const r = await this.postForm(`/dockerfiles/${dockerfileId}/builds`, { _csrf: token, key });
    if (r.status !== 303) throw new Error(`build: ${r.status} ${await r.text()}`);
    return { id: Number(/\/builds\/(\d+)$/.exec(r.headers.get('location') ?? '')![1]), key, token };
  }
}
