/**
 * The embedded stack (`kiln serve`: web + built-in glue + local runner in one process) killed with SIGKILL, as a
 * crash or a power cut ends it, then started again on the same data directory. The SDK is the fake one (a shell
 * script, test/helpers/glue.ts): what is under test is state, not images.
 *   - a build cut off mid-run is requeued once and succeeds, its page says so; a second cut fails it clearly;
 *     nothing it staged is left in the temp dir, and the SDK never saw the web's secrets;
 *   - case 45: killed during an upload, nothing half-written; a build request retried with its key is one build;
 *   - case 49: killed during a burst of writes, the database passes integrity_check and every acknowledged
 *     (200/201) Dockerfile and build is there, and each build ends exactly once.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../../src/db/index.js';
import { writeFakeSdk } from '../helpers/glue.js';
import { startKilnServe, waitForBuild, type KilnServe } from '../helpers/serve.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { HttpClient } from '../helpers/web.js';

const SECRET = 'web-session-secret-that-no-build-may-see-0123456789';
const tmp = tempDir('kiln-crash-');
const sdk = writeFakeSdk(tmp.dir)[0]!;
const running: KilnServe[] = [];
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});
afterAll(() => tmp.cleanup());

interface Stack {
  dir: string;
  data: string;
  tmpdir: string;
  env: Record<string, string>;
  serve: KilnServe;
  alice: HttpClient;
}

async function start(env: Record<string, string>): Promise<KilnServe> {
  const s = await startKilnServe(tmp.dir, env);
  running.push(s);
  return s;
}

/** A fresh stack in its own data directory; its own TMPDIR, so anything left in a temp dir is seen. */
async function fresh(name: string): Promise<Stack> {
  const dir = path.join(tmp.dir, name);
  const tmpdir = path.join(dir, 'tmp');
  mkdirSync(tmpdir, { recursive: true });
  const data = path.join(dir, 'data');
  const env = {
    KILN_DATA_DIR: data,
    KILN_GLUE_SDK_COMMAND: sdk,
    KILN_WEB_SESSION_SECRET: SECRET,
    TMPDIR: tmpdir,
    KILN_WEB_QUOTA_QUEUED_BUILDS: '500',
    KILN_WEB_QUOTA_DOCKERFILES: '500',
    KILN_SDK_FORMATS: 'raw',
  };
  const serve = await start(env);
  const alice = new HttpClient(serve.url);
  await alice.signUp('alice');
  return { dir, data, tmpdir, env, serve, alice };
}

/** The same user (session cookie) against a restarted server, which listens on another port. */
function rebase(c: HttpClient, url: string): HttpClient {
  const n = new HttpClient(url);
  for (const [k, v] of c.jar) n.jar.set(k, v);
  return n;
}

const buildDir = (s: Stack, job: number, n: number) => path.join(s.data, `glue/jobs/kiln-job-${job}/builds/${n}`);
const readJson = <T>(file: string): T | undefined => {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
};
const groupAlive = (pgid: number) => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

async function withDb<T>(s: Stack, fn: (db: Db) => Promise<T>): Promise<T> {
  const db = createDb({ client: 'sqlite', filename: path.join(s.data, 'kiln.sqlite') });
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

/** Kills kiln serve, then, as a power cut would, every SDK it had running (their process groups outlive it). */
async function powerCut(s: Stack): Promise<void> {
  await s.serve.kill();
  const jobs = path.join(s.data, 'glue/jobs');
  for (const job of existsSync(jobs) ? readdirSync(jobs) : []) {
    for (const n of existsSync(path.join(jobs, job, 'builds')) ? readdirSync(path.join(jobs, job, 'builds')) : []) {
      const rec = readJson<{ state: string; process?: { pid: number } }>(
        path.join(jobs, job, 'builds', n, 'build.json'),
      );
      if (rec?.state === 'running' && rec.process) {
        try {
          process.kill(-rec.process.pid, 'SIGKILL');
        } catch {
          /* ended */
        }
      }
    }
  }
}

describe('kiln serve killed mid-build (SIGKILL)', () => {
  it('the cut-off build is requeued once and succeeds, its page says so; nothing staged is left; no secret reached the SDK', async () => {
    const s = await fresh('requeue');
    const dfId = await s.alice.createDockerfile('slow', 'FROM debian:bookworm\n# fake: tmp 5\n');
    const { id } = await s.alice.build(dfId);
    const first = buildDir(s, dfId, 1);
    const staged = await until(
      () =>
        existsSync(path.join(first, 'archive/tmpdir.txt')) &&
        readFileSync(path.join(first, 'archive/tmpdir.txt'), 'utf8').trim(),
    );
    const sdkPid = (await until(() => readJson<{ process?: { pid: number } }>(path.join(first, 'build.json'))?.process))
      .pid;

    await s.serve.kill();
    expect(groupAlive(sdkPid)).toBe(true); // the SDK outlived kiln serve; the restart must deal with it
    const again = await start(s.env);
    const alice = rebase(s.alice, again.url);
    const build = (await waitForBuild(alice, id)) as unknown as {
      state: string;
      requeues: number;
      requeueReason: string;
    };
    expect(build).toMatchObject({
      state: 'succeeded',
      requeues: 1,
      requeueReason: expect.stringMatching(/^interrupted: the build service restarted/),
    });
    const page = await (await alice.get(`/builds/${id}`)).text();
    expect(page).toContain('Requeued after an interruption');

    expect(groupAlive(sdkPid)).toBe(false);
    expect(existsSync(staged)).toBe(false);
    expect(readdirSync(s.tmpdir).filter((n) => n.startsWith('kiln-sdk-'))).toEqual([]);
    for (const n of [1, 2])
      expect(readFileSync(path.join(buildDir(s, dfId, n), 'archive/env.txt'), 'utf8')).not.toContain(SECRET);
  }, 240_000);

  it('a second SIGKILL during the requeued attempt fails the build with a reason a user understands', async () => {
    const s = await fresh('twice');
    const dfId = await s.alice.createDockerfile('slow', 'FROM debian:bookworm\n# fake: sleep 30\n');
    const { id } = await s.alice.build(dfId);
    await until(() => readJson<{ process?: unknown }>(path.join(buildDir(s, dfId, 1), 'build.json'))?.process);
    await powerCut(s);
    s.serve = await start(s.env);
    // The requeued attempt runs as build 2 of the job; cut it off too.
    await until(() => readJson<{ process?: unknown }>(path.join(buildDir(s, dfId, 2), 'build.json'))?.process, 120_000);
    await powerCut(s);
    const third = await start(s.env);
    const build = (await waitForBuild(rebase(s.alice, third.url), id)) as unknown as {
      state: string;
      reason: string;
      requeues: number;
    };
    expect(build).toMatchObject({ state: 'failed', requeues: 1 });
    expect(build.reason).toMatch(/interrupted twice by a fault of the build service, not by your Dockerfile/);
    expect(build.reason).toMatch(/press Build/);
    expect(existsSync(buildDir(s, dfId, 3))).toBe(false); // no third attempt
  }, 300_000);
});

describe('case 45: kill the web during an upload', () => {
  it('no partial row after an upload cut off mid-body; a build request retried with its key is one build', async () => {
    const s = await fresh('upload');
    const token = await s.alice.apiToken();
    // A Dockerfile with a 3 MiB build context, sent as one JSON body of which only the first half arrives.
    const body = Buffer.from(
      JSON.stringify({
        name: 'cut-off',
        content: 'FROM debian:bookworm\nCOPY big /big\n',
        contextTarBase64: Buffer.alloc(3 * 2 ** 20, 7).toString('base64'),
      }),
    );
    const url = new URL('/api/dockerfiles', s.serve.url);
    const req = http.request(url, {
      method: 'POST',
      headers: {
        cookie: s.alice.cookieHeader(),
        'x-csrf-token': token,
        'content-type': 'application/json',
        'content-length': String(body.length),
      },
    });
    req.on('error', () => undefined);
    req.write(body.subarray(0, body.length >> 1));
    await new Promise((r) => setTimeout(r, 500));
    await s.serve.kill();
    req.destroy();
    await withDb(s, async (db) => {
      expect(await db('dockerfiles').count<{ n: number }[]>({ n: '*' })).toEqual([{ n: 0 }]);
      expect(await db('dockerfile_contexts').count<{ n: number }[]>({ n: '*' })).toEqual([{ n: 0 }]);
      expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
    });
    expect(readdirSync(s.tmpdir)).toEqual([]); // no stray upload file either

    s.serve = await start(s.env);
    let alice = rebase(s.alice, s.serve.url);
    const dfId = await alice.createDockerfile('quick', 'FROM debian:bookworm\nRUN true\n');
    // The build request is sent whole, and the server killed before (or while) it answers.
    const key = 'case45-retried-build-key';
    const sent = http.request(new URL(`/api/dockerfiles/${dfId}/builds`, s.serve.url), {
      method: 'POST',
      headers: {
        cookie: alice.cookieHeader(),
        'x-csrf-token': await alice.apiToken(),
        'content-type': 'application/json',
      },
    });
    sent.on('error', () => undefined);
    sent.end(JSON.stringify({ key }));
    await new Promise((r) => sent.once('finish', r));
    await s.serve.kill();
    s.serve = await start(s.env);
    alice = rebase(s.alice, s.serve.url);
    const retry = await alice.postJson(
      `/api/dockerfiles/${dfId}/builds`,
      { key },
      { 'x-csrf-token': await alice.apiToken() },
    );
    expect([200, 201]).toContain(retry.status);
    const again = await alice.postJson(
      `/api/dockerfiles/${dfId}/builds`,
      { key },
      { 'x-csrf-token': await alice.apiToken() },
    );
    expect(again.status).toBe(200);
    const id = ((await retry.json()) as { build: { id: number } }).build.id;
    expect(((await again.json()) as { build: { id: number } }).build.id).toBe(id);
    expect((await waitForBuild(alice, id)).state).toBe('succeeded');
    await withDb(s, async (db) => {
      expect(await db('builds').where({ idempotency_key: key }).count<{ n: number }[]>({ n: '*' })).toEqual([{ n: 1 }]);
    });
    // One backend build for it (two if a cut-off first attempt was requeued, never more).
    const row = await withDb(
      s,
      (db) => db('builds').where({ idempotency_key: key }).first() as Promise<{ requeues: number }>,
    );
    expect(readdirSync(path.join(s.data, `glue/jobs/kiln-job-${dfId}/builds`))).toHaveLength(1 + row.requeues);
  }, 300_000);
});

describe('case 49: a power cut during writes', () => {
  it('the database passes integrity_check, every acknowledged Dockerfile and build is there, each build ends exactly once', async () => {
    const s = await fresh('power');
    const acked: { dockerfiles: number[]; builds: Array<{ id: number; key: string }> } = {
      dockerfiles: [],
      builds: [],
    };
    let stop = false;
    const writer = async (w: number) => {
      const c = s.alice;
      const token = await c.apiToken();
      for (let i = 0; !stop; i++) {
        try {
          const made = await c.postJson(
            '/api/dockerfiles',
            { name: `w${w}-${i}`, content: `FROM debian:bookworm\nRUN echo ${w} ${i}\n` },
            { 'x-csrf-token': token },
          );
          if (made.status !== 201) continue;
          const dfId = ((await made.json()) as { dockerfile: { id: number } }).dockerfile.id;
          acked.dockerfiles.push(dfId);
          for (const k of [0, 1]) {
            const key = `power-${w}-${i}-${k}-${'x'.repeat(8)}`;
            const r = await c.postJson(`/api/dockerfiles/${dfId}/builds`, { key }, { 'x-csrf-token': token });
            if (r.status === 200 || r.status === 201)
              acked.builds.push({ id: ((await r.json()) as { build: { id: number } }).build.id, key });
          }
        } catch {
          /* the server is gone: the cut */
        }
      }
    };
    const writers = [1, 2, 3].map(writer);
    await until(() => acked.builds.length >= 12, 120_000);
    await powerCut(s);
    stop = true;
    await Promise.all(writers);

    await withDb(s, async (db) => {
      expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
      expect(await db.raw('PRAGMA foreign_key_check')).toEqual([]);
      const dfs = new Set((await db('dockerfiles').select('id')).map((r: { id: number }) => Number(r.id)));
      for (const id of acked.dockerfiles) expect(dfs.has(id), `dockerfile ${id}`).toBe(true);
      for (const b of acked.builds)
        expect(await db('builds').where({ id: b.id, idempotency_key: b.key }).first(), `build ${b.id}`).toBeTruthy();
    });

    s.serve = await start(s.env);
    const rows = await until(
      () =>
        withDb(s, async (db) => {
          const all = (await db('builds').select('id', 'dockerfile_id', 'state', 'requeues')) as Array<{
            id: number;
            dockerfile_id: number;
            state: string;
            requeues: number;
          }>;
          return all.every((r) => ['succeeded', 'failed', 'cancelled'].includes(r.state)) && all;
        }),
      240_000,
    );
    expect(rows.filter((r) => r.state !== 'succeeded')).toEqual([]);
    // Exactly one backend build per attempt: no build ran twice, none was lost on the way.
    for (const dfId of new Set(rows.map((r) => Number(r.dockerfile_id)))) {
      const mine = rows.filter((r) => Number(r.dockerfile_id) === dfId);
      const attempts = mine.reduce((n, r) => n + 1 + Number(r.requeues), 0);
      const dir = path.join(s.data, `glue/jobs/kiln-job-${dfId}/builds`);
      const ran = readdirSync(dir).filter(
        (n) => readJson<{ state: string }>(path.join(dir, n, 'build.json'))?.state !== 'cancelled',
      );
      expect(ran.length, `job ${dfId}`).toBe(attempts);
    }
  }, 420_000);
});
