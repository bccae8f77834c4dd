/**
 * Several web instances on one PostgreSQL database, as production runs them: two real `kiln web` processes (each
 * with its task worker) -> `kiln glue-server` (built-in SSH, local backend, fake SDK). 50 builds requested across
 * both are each dispatched exactly once: one dispatch task run, one `build dispatched` line in one web's log, one
 * `job.build` reaching the glue, one backend build; and every one of them ends succeeded.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listTasksOf } from '../../src/db/index.js';
import { ensureKeyPair } from '../../src/shared/ssh-keys.js';
import { Part } from '../chaos/parts.js';
import { freePort, kilnSnapshot, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { HttpClient } from '../helpers/web.js';
import { freshDb, type TestDb } from './engines.js';

const BUILDS = 50;

/** The JSON log lines a part wrote (pino: one object per line; anything else is skipped). */
function logLines(part: Part): Array<Record<string, unknown>> {
  return readFileSync(part.logFile, 'utf8')
    .split('\n')
    .flatMap((l) => {
      if (!l.startsWith('{')) return [];
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

describe('two kiln web processes on one PostgreSQL database', () => {
  const tmp = tempDir('kiln-two-webs-');
  let pg: TestDb;
  let glue: Part;
  const webs: Part[] = [];

  beforeAll(async () => {
    pg = await freshDb('pg');
    const kiln = await kilnSnapshot(tmp.dir);
    const webKey = path.join(tmp.dir, 'keys', 'web_ed25519');
    await ensureKeyPair(webKey, 'kiln-web');
    const hostKey = path.join(tmp.dir, 'keys', 'glue_host_ed25519');
    const host = await ensureKeyPair(hostKey, 'kiln-glue-host');
    // Both webs sign with one key, as several instances must.
    const signingKey = path.join(tmp.dir, 'keys', 'signing_ed25519');
    await ensureKeyPair(signingKey, 'kiln-signing');
    const sshPort = await freePort();
    const env = (extra: Record<string, string>) => ({
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      TMPDIR: tmp.dir,
      KILN_LOG_LEVEL: 'info',
      ...extra,
    });
    glue = new Part(
      'glue-server',
      () => ({
        file: kiln,
        args: ['glue-server'],
        cwd: tmp.dir,
        ready: /kiln glue listening on/,
        env: env({
          KILN_DATA_DIR: path.join(tmp.dir, 'glue'),
          KILN_SSH_PORT: String(sshPort),
          KILN_SSH_HOST_KEY_FILE: hostKey,
          KILN_SSH_CLIENT_KEY_FILE: webKey,
          KILN_GLUE_SDK_COMMAND: writeFakeSdk(tmp.dir)[0]!,
          KILN_GLUE_CONCURRENCY: '4',
        }),
      }),
      path.join(tmp.dir, 'glue-server.log'),
    );
    await glue.start();
    for (const n of [1, 2]) {
      const webPort = await freePort();
      const web = new Part(
        `web${n}`,
        () => ({
          file: kiln,
          args: ['web'],
          cwd: tmp.dir,
          ready: /Kiln web is ready at (\S+)/,
          env: env({
            KILN_DATA_DIR: path.join(tmp.dir, `web${n}`),
            KILN_WEB_PORT: String(webPort),
            KILN_DB_CLIENT: 'pg',
            KILN_DB_URL: pg.url!,
            KILN_SSH_PORT: String(sshPort),
            KILN_SSH_HOST_FINGERPRINT: host.fingerprint,
            KILN_SSH_CLIENT_KEY_FILE: webKey,
            KILN_WEB_SIGNING_KEY_FILE: signingKey,
            KILN_WEB_QUOTA_QUEUED_BUILDS: '1000',
            KILN_WORKER_POLL_MS: '100',
            KILN_WORKER_REFRESH_MS: '200',
          }),
        }),
        path.join(tmp.dir, `web${n}.log`),
      );
      // The first start migrates; the second finds the schema in place.
      await web.start();
      webs.push(web);
    }
  }, 300_000);

  afterAll(async () => {
    for (const w of webs) await w.stop();
    await glue?.stop();
    await pg?.drop();
    tmp.cleanup();
  });

  it(`${BUILDS} builds requested across both are each dispatched exactly once, and all succeed`, async () => {
    const [c1, c2] = webs.map((w) => new HttpClient(w.url.replace(/\/$/, '')));
    await c1!.signUp('alice');
    await c2!.signUp('bob');
    const dfs = [
      { c: c1!, id: await c1!.createDockerfile('one', 'FROM debian:bookworm\nRUN echo one\n') },
      { c: c2!, id: await c2!.createDockerfile('two', 'FROM debian:bookworm\nRUN echo two\n') },
    ];
    // Each user's session works on either web (one database): alternate the instance every request goes to.
    const other = (c: HttpClient) => new HttpClient(c === c1 ? c2!.base : c1!.base, c.jar);
    const tokens = new Map<HttpClient, string>();
    const requests = Array.from({ length: BUILDS }, (_, i) => {
      const df = dfs[i % 2]!;
      const client = i % 4 < 2 ? df.c : other(df.c);
      return { client, df: df.id, key: `two-webs-${String(i).padStart(4, '0')}` };
    });
    for (const r of requests) if (!tokens.has(r.client)) tokens.set(r.client, await r.client.apiToken());
    const answers = await Promise.all(
      requests.map(async (r) => {
        const res = await r.client.postJson(
          `/api/dockerfiles/${r.df}/builds`,
          { key: r.key },
          { 'x-csrf-token': tokens.get(r.client)! },
        );
        expect(res.status, await res.clone().text()).toBe(201);
        return ((await res.json()) as { build: { id: number } }).build.id;
      }),
    );
    expect(new Set(answers).size).toBe(BUILDS);
    expect(new Set(requests.map((r) => r.client.base)).size).toBe(2);

    const rows = await until(
      async () => {
        const all = (await pg
          .db('builds')
          .select('id', 'state', 'idempotency_key', 'backend_build', 'dockerfile_id', 'reason')) as Array<{
          id: number;
          state: string;
          idempotency_key: string;
          backend_build: number | null;
          dockerfile_id: number;
          reason: string | null;
        }>;
        return all.length === BUILDS && all.every((b) => ['succeeded', 'failed', 'cancelled'].includes(b.state)) && all;
      },
      240_000,
      250,
    );
    expect(rows.filter((b) => b.state !== 'succeeded')).toEqual([]);

    // One dispatch task per build, run once.
    for (const b of rows) {
      const dispatches = (await listTasksOf(pg.db, `build:${b.id}`)).filter((t) => t.kind === 'build.dispatch');
      expect(
        dispatches.map((t) => [t.state, t.attempts]),
        `build ${b.id}`,
      ).toEqual([['done', 1]]);
    }
    // One `build dispatched` line per build, across both webs' logs, and both webs dispatched some.
    const dispatched = webs.map((w) =>
      logLines(w)
        .filter((l) => l.msg === 'build dispatched')
        .map((l) => Number(l.build)),
    );
    const all = dispatched.flat().sort((a, b) => a - b);
    expect(all).toEqual(rows.map((b) => Number(b.id)).sort((a, b) => a - b));
    expect(
      dispatched.every((d) => d.length > 0),
      `dispatched per web: ${dispatched.map((d) => d.length).join(', ')}`,
    ).toBe(true);
    // One job.build per key reached the glue, and one backend build exists per request.
    const jobBuilds = logLines(glue)
      .filter((l) => l.audit === true && l.verb === 'job.build')
      .map((l) => (l.args as unknown[])[1]);
    expect(jobBuilds.sort()).toEqual(requests.map((r) => r.key).sort());
    const backend = new Set(rows.map((b) => `${b.dockerfile_id}#${b.backend_build}`));
    expect(backend.size).toBe(BUILDS);
  }, 600_000);
});
