import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Engine, type EngineOptions } from './engine.js';
import { DoubleServer, type DoubleUser } from './server.js';

export type { DoubleUser } from './server.js';

export interface JenkinsDoubleOptions extends Partial<Omit<EngineOptions, 'dataDir'>> {
  port?: number;
  host?: string;
  /** Where jobs, builds, logs and the queue live. Without it a temp dir is used and removed on stop(). */
  dataDir?: string;
  users: DoubleUser[];
  /** The version it reports in X-Jenkins (default server.ts DEFAULT_VERSION). */
  version?: string;
}

export interface JenkinsDouble {
  /** Base URL with a trailing slash, e.g. http://127.0.0.1:PORT/ */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Requests served since start (a test can assert that nothing reached "Jenkins"). */
  requests(): number;
  /** Method and path of the latest requests served (e.g. `POST /job/kiln-job-1/disable`). */
  requestLog(): string[];
  /** Graceful stop: running builds are killed, the server closed, a temp data dir removed. */
  stop(): Promise<void>;
  /** Hard stop, like kill -9 of the controller: connections cut, build processes killed, nothing more written. */
  crash(): Promise<void>;
  /** Starts again on the same port from the same data dir (after crash()). */
  start(): Promise<void>;
  /** crash() then start(). */
  restart(): Promise<void>;
  /** Test hook: awaited after createItem made a job, before Jenkins answers (see DoubleServer.afterCreateItem). */
  afterCreateItem?: (name: string) => Promise<void> | void;
  /** Test hook for TimerTrigger: schedules a timer build now (real cron minutes are too slow). Returns the queue id. */
  fireTimer(job: string): number | null;
  readonly engine: Engine;
}

/**
 * Environment for a glue process (`kiln glue` under OpenSSH, `kiln glue-server`) that should drive this double:
 * backend jenkins, its URL, the user's API token and the agent-side SDK command.
 */
export function glueEnv(
  double: Pick<JenkinsDouble, 'url'>,
  user: DoubleUser,
  sdkCommand: readonly string[],
): Record<string, string> {
  if (!user.token) throw new Error('glueEnv needs a user with an API token');
  return {
    KILN_GLUE_BACKEND: 'jenkins',
    KILN_GLUE_JENKINS_URL: double.url,
    KILN_GLUE_JENKINS_USER: user.name,
    KILN_GLUE_JENKINS_TOKEN: user.token,
    KILN_GLUE_JENKINS_SDK_COMMAND: sdkCommand.join(','),
  };
}

/** Starts the Jenkins double on loopback. Nothing listens before this is called. */
export async function startJenkinsDouble(opts: JenkinsDoubleOptions): Promise<JenkinsDouble> {
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'jenkins-double-'));
  const host = opts.host ?? '127.0.0.1';
  const engineOpts: EngineOptions = {
    dataDir,
    executors: opts.executors ?? 2,
    quietPeriodSeconds: opts.quietPeriodSeconds ?? 5,
    leftItemTtlMs: opts.leftItemTtlMs ?? 5 * 60_000,
    startDelayMs: opts.startDelayMs ?? 50,
    tickMs: opts.tickMs ?? 100,
    labels: opts.labels,
    nodeName: opts.nodeName,
    ...(opts.now ? { now: opts.now } : {}),
  };
  let engine!: Engine;
  let server!: DoubleServer;
  let port = opts.port ?? 0;

  const listen = async () => {
    engine = new Engine(engineOpts);
    server = new DoubleServer(engine, opts.users, opts.version);
    server.afterCreateItem = (name) => handle.afterCreateItem?.(name);
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.server.listen(port, host, () => resolve());
    });
    port = (server.server.address() as AddressInfo).port;
  };
  const close = async () => {
    server.server.closeAllConnections();
    await new Promise<void>((resolve) => server.server.close(() => resolve()));
  };
  await listen();

  const handle: JenkinsDouble = {
    get url() {
      return `http://${host}:${port}/`;
    },
    get port() {
      return port;
    },
    dataDir,
    get engine() {
      return engine;
    },
    requests: () => server.requests,
    requestLog: () => [...server.log],
    async stop() {
      engine.crash();
      await close();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
    async crash() {
      engine.crash();
      await close();
    },
    async start() {
      await listen();
    },
    async restart() {
      await handle.crash();
      await handle.start();
    },
    fireTimer(job: string) {
      return engine.fireTimer(job)?.id ?? null;
    },
  };
  return handle;
}
