import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { until } from './wait.js';
import type { HttpClient } from './web.js';

const repo = path.resolve(import.meta.dirname, '../..');

export interface KilnServe {
  url: string;
  /** The `kiln serve` process (bin/kiln execs node, so this is the server itself). */
  pid: number;
  /** Everything the process printed so far (stdout + stderr). */
  output(): string;
  stop(): Promise<void>;
  /** SIGKILL, as a crash or a power cut would end it: nothing of it runs its shutdown. */
  kill(): Promise<void>;
}

/** Starts the real `bin/kiln serve` process with `env` on top of this one's and waits for "Kiln is ready at URL". */
export async function startKilnServe(cwd: string, env: Record<string, string>): Promise<KilnServe> {
  let out = '';
  const child: ChildProcess = spawn(path.join(repo, 'bin/kiln'), ['serve'], {
    cwd,
    env: {
      ...process.env,
      KILN_WEB_PORT: '0',
      KILN_SSH_PORT: '0',
      KILN_WORKER_RECONCILE_SECONDS: '2',
      KILN_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr!.on('data', (c: Buffer) => {
    out += c.toString();
  });
  try {
    await until(
      () => {
        if (child.exitCode !== null) throw new Error('exited');
        return /Kiln is ready at (\S+)/.test(out);
      },
      120_000,
      100,
    );
  } catch {
    child.kill('SIGKILL');
    throw new Error(`kiln serve did not start:\n${out}`);
  }
  const exited = new Promise((r) => child.once('exit', r));
  return {
    url: /Kiln is ready at (\S+)/.exec(out)![1]!,
    pid: child.pid!,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface BuildJson {
  id: number;
  state: string;
  final: boolean;
  reason?: string;
  backendBuild?: number;
  artifacts: Array<{ name: string; size: number; url: string }>;
}

/** Polls the build through the JSON API until it is final. */
export function waitForBuild(client: HttpClient, id: number): Promise<BuildJson> {
  return until(
    async () => {
      const build = ((await (await client.get(`/api/builds/${id}`)).json()) as { build: BuildJson }).build;
      return build.final && build;
    },
    20 * 60_000,
    500,
  );
}

/**
 * What a new user does on the site: sign up, paste a Dockerfile, press Build, wait for it to end. Returns the final
 * build, its log text and when Build was pressed (for build-to-download timings).
 */
export async function buildAsNewUser(
  client: HttpClient,
  username: string,
  dockerfile: string,
): Promise<{ dfId: number; build: BuildJson; log: string; pressed: number }> {
  await client.signUp(username);
  const dfId = await client.createDockerfile('debian-minimal', dockerfile);
  const pressed = Date.now();
  const { id } = await client.build(dfId);
  const build = await waitForBuild(client, id);
  const log = ((await (await client.get(`/api/builds/${id}/log?offset=0`)).json()) as { text: string }).text;
  return { dfId, build, log, pressed };
}
