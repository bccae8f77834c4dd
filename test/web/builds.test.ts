import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/core/index.js';
import { refreshTask } from '../../src/core/builds/refresh.js';
import { glueKey } from '../../src/core/builds/requeue.js';
import { findBuild, listTasksOf, type TaskRow } from '../../src/db/index.js';
import { KilnError } from '../../src/shared/errors.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const GOOD = 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y linux-image-amd64 systemd-sysv\n';
type BuildJson = {
  id: number;
  state: string;
  final: boolean;
  backendBuild: number | null;
  reason: string | null;
  artifacts: Array<{ name: string; size: number; url: string }>;
  imageSha256: string | null;
  progress: { stage: string; percent: number } | null;
};
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

async function getBuild(c: HttpClient, id: number): Promise<BuildJson> {
  const r = await c.get(`/api/builds/${id}`);
  expect(r.status).toBe(200);
  return ((await r.json()) as { build: BuildJson }).build;
}

describe('builds', () => {
  let w: TestWeb & { local: InProcessGlue };
  let a: HttpClient;
  let b: HttpClient;
  let dfId: number;
  const lastBackendBuild = async (job: number) =>
    (await w.glue.call('jobs.list', [])).jobs.find((j) => j.job === job)?.lastBuild ?? 0;
  const jobCommands = (from: number) => w.local.verbsSince(from).filter((v) => v.startsWith('job.'));
  /**
   * A cancelled build's dispatch that read its row before the cancel may still be on its way to the glue (the
   * withdraw takes back what it starts). Tests that expect no job.put from it from some point on (the glue back up,
   * a refusal armed by the next test) first wait until each of the build's tasks is `settled`.
   */
  const untilTasks = (id: number, settled: (t: TaskRow) => boolean) =>
    until(async () => (await listTasksOf(w.db, `build:${id}`)).every(settled));
  beforeAll(async () => {
    w = await startTestWeb({
      config: { web: { quotaQueuedBuilds: 3 } },
      logger: (await import('../../src/shared/logger.js')).createLogger({
        level: process.env.TEST_LOG ? 'error' : 'silent',
      }),
    });
    a = w.client();
    await a.signUp('alice');
    b = w.client();
    await b.signUp('bob');
    dfId = await a.createDockerfile('debian-minimal', GOOD);
  });
  afterAll(async () => {
    await w?.close();
  });

  it('Build => the request only records it; the worker puts the job (the spec) and builds it with the key; the row is queued with the backend build number', async () => {
    const { id, key } = await a.build(dfId);
    const row = await w.waitForBuild(id, (r) => r.backend_build !== null);
    expect(row.idempotency_key).toBe(key);
    expect(row.backend_build).toBe(1);
    const spec = JSON.parse(
      readFileSync(path.join(w.local.dataDir, `glue/jobs/kiln-job-${dfId}/config.json`), 'utf8'),
    ) as Record<string, unknown>;
    expect(spec).toMatchObject({
      owner: 'alice',
      name: 'debian-minimal',
      dockerfile: GOOD,
      schedule: 'off',
      enabled: true,
    });
    const version = await w.db('dockerfile_versions').where({ id: row.version_id }).first();
    expect(version.sha256).toBe(sha256(GOOD));
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
  });

  it('a replayed POST with the same key is the same build (serial and parallel)', async () => {
    const before = await lastBackendBuild(dfId);
    const { id, key, token } = await a.build(dfId);
    const again = await a.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: token, key });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe(`/builds/${id}`);
    // a fresh form, double-clicked many times at once
    const html = await (await a.get(`/dockerfiles/${dfId}`)).text();
    const k2 = /name="key" value="([^"]+)"/.exec(html)![1]!;
    const rs = await Promise.all(
      Array.from({ length: 8 }, () => a.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: token, key: k2 })),
    );
    const locations = new Set(rs.map((r) => r.headers.get('location')));
    expect(rs.every((r) => r.status === 303)).toBe(true);
    expect(locations.size).toBe(1);
    const second = Number(/\/builds\/(\d+)$/.exec([...locations][0]!)![1]);
    await w.waitForBuild(id);
    await w.waitForBuild(second);
    expect(await lastBackendBuild(dfId)).toBe(before + 2);
    expect(Number((await w.db('builds').where({ idempotency_key: k2 }).count({ n: '*' }))[0]!.n)).toBe(1);
  });

  it('case 20: queued-build quota: 20 parallel requests accept exactly the quota', async () => {
    // Builds held running at a gate, so none ends (and frees its quota) during the burst.
    const held = await a.createDockerfile('held', 'FROM debian:bookworm\n# fake: gate quota\n');
    const t = await a.apiToken();
    const keys = Array.from({ length: 20 }, (_, i) => `parallel-key-${i}-xxxx`);
    const rs = await Promise.all(
      keys.map((key) => a.postJson(`/api/dockerfiles/${held}/builds`, { key }, { 'x-csrf-token': t })),
    );
    expect(rs.filter((r) => r.status === 201).length).toBe(3);
    const refused = rs.filter((r) => r.status === 429);
    expect(refused.length).toBe(17);
    expect(refused[0]!.headers.get('retry-after')).toBeTruthy();
    expect(
      Number((await w.db('builds').whereIn('state', ['requested', 'queued', 'running']).count({ n: '*' }))[0]!.n),
    ).toBe(3);
    w.local.openGate('quota');
    for (const r of await w.db('builds').where({ dockerfile_id: held }))
      expect((await w.waitForBuild(r.id)).state).toBe('succeeded');
  });

  it('case 15: status, progress, log (ANSI and OSC 8 links stripped, markup kept as text) and download follow the glue; case 23: the image downloads as an attachment under a server-made name, nosniff, private no-store; Range gives 206', async () => {
    const df = await a.createDockerfile('watched', 'FROM debian:bookworm\n# fake: gate watched\n# fake-ansi\n');
    const { id } = await a.build(df);
    let s = await until(async () => {
      const x = await getBuild(a, id);
      return x.state === 'running' && x.progress && x;
    });
    expect(s.progress).toMatchObject({ stage: 'build', percent: 10 });
    const log = await until(async () => {
      const l = (await (await a.get(`/api/builds/${id}/log?offset=0`)).json()) as {
        text: string;
        nextOffset: number;
        more: boolean;
      };
      return l.text.includes('waiting at gate') && l;
    });
    expect(log.text).toContain('step 1\n<script>alert(1)</script>\nlink\n');
    expect(log.text).not.toContain('\x1b');
    expect(log.more).toBe(true);
    w.local.openGate('watched');
    await w.waitForBuild(id);
    s = await getBuild(a, id);
    const image = Buffer.from('RAW-IMAGE-BYTES');
    expect(s.state).toBe('succeeded');
    expect(s.final).toBe(true);
    expect(s.imageSha256).toBe(sha256(image));
    expect(s.artifacts.map((x) => x.name).sort()).toEqual(['SHA256SUMS', 'SHA256SUMS.sig', 'image.raw', 'result.json']);
    const dl = await a.get(`/builds/${id}/artifacts/image.raw`);
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('application/octet-stream');
    expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="kiln-${id}-image.raw"`);
    expect(dl.headers.get('x-content-type-options')).toBe('nosniff');
    expect(dl.headers.get('cache-control')).toBe('private, no-store');
    expect(Buffer.from(await dl.arrayBuffer())).toEqual(image);
    const part = await a.get(`/builds/${id}/artifacts/image.raw`, { range: 'bytes=4-9' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 4-9/${image.length}`);
    expect(await part.text()).toBe('IMAGE-');
    const head = await a.request(`/builds/${id}/artifacts/image.raw`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(image.length));
    const html = await (await a.get(`/builds/${id}`)).text();
    expect(html).toContain(`/builds/${id}/artifacts/image.raw`);
    expect(html).toContain('<script src="/static/build.js" defer></script>');
  });

  it('case 21: download ids and names like ../../, %2e%2e%2f, %252e, ..%5c, %00 => 400/404, and nothing is read', async () => {
    const row = await w.db('builds').where({ state: 'succeeded' }).first();
    const from = w.local.commands.length;
    const names = [
      '..%2F..%2Fetc%2Fpasswd',
      '../../etc/passwd',
      '%2e%2e%2f',
      '%2e%2e%2fSHA256SUMS',
      '%252e%252e%252fetc',
      '..%5cimage.raw',
      '..%5c..%5cetc%5cpasswd',
      'image.raw%00',
      'image.raw%00.txt',
      '%00',
      'image.qcow2',
      'build.log',
      '.',
      '..',
      '%2e',
      'IMAGE.RAW',
      'image.raw%2f',
    ];
    // Sent as written (node:http), not normalised by a URL parser the way fetch would.
    const raw = (p: string) =>
      new Promise<number>((resolve, reject) => {
        const u = new URL(w.url);
        http
          .get({ host: u.hostname, port: u.port, path: p, headers: { cookie: a.cookieHeader() } }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          })
          .on('error', reject);
      });
    for (const name of names) {
      for (const prefix of ['', '/api']) {
        expect([400, 404], `${prefix} ${name}`).toContain(await raw(`${prefix}/builds/${row.id}/artifacts/${name}`));
      }
    }
    for (const id of [
      '..%2f1',
      '..',
      '../..',
      '%2e%2e%2f1',
      '%252e%252e',
      '..%5c1',
      `${row.id}%00`,
      '%00',
      '0',
      '-1',
      '1.0',
      '99999999999999',
    ]) {
      for (const p of [`/builds/${id}`, `/builds/${id}/artifacts/image.raw`, `/api/builds/${id}/artifacts/image.raw`]) {
        expect([400, 404], p).toContain(await raw(p));
      }
    }
    // Not one of these reached the glue: no artifact was opened, by name or otherwise.
    expect(w.local.verbsSince(from).filter((v) => v === 'build.artifact')).toEqual([]);
  });

  it("case 12: user B gets 404 on A's Dockerfile, build, log and download; POSTs change nothing", async () => {
    const row = await w.db('builds').where({ state: 'succeeded', dockerfile_id: dfId }).first();
    const paths = [
      `/dockerfiles/${dfId}`,
      `/dockerfiles/${dfId}/raw`,
      `/builds/${row.id}`,
      `/builds/${row.id}/artifacts/image.raw`,
      `/api/dockerfiles/${dfId}`,
      `/api/builds/${row.id}`,
      `/api/builds/${row.id}/log?offset=0`,
      `/api/builds/${row.id}/artifacts/image.raw`,
    ];
    const from = w.local.commands.length;
    for (const p of paths) {
      const r = await b.get(p);
      expect(r.status, p).toBe(404);
      expect(await r.text()).not.toContain('debian-minimal');
    }
    // a missing id looks the same as someone else's
    expect((await b.get('/api/dockerfiles/999999')).status).toBe(404);
    const before = Number((await w.db('builds').count({ n: '*' }))[0]!.n);
    const t = await b.apiToken();
    const r = await b.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'bob-steals-a-build' }, { 'x-csrf-token': t });
    expect(r.status).toBe(404);
    const bt = await b.token('/dockerfiles');
    expect((await b.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: bt, key: 'bob-steals-b-build' })).status).toBe(
      404,
    );
    expect(Number((await w.db('builds').count({ n: '*' }))[0]!.n)).toBe(before);
    expect(w.local.verbsSince(from).filter((v) => v !== 'build.status' && v !== 'jobs.list')).toEqual([]);
    const list = (await (await b.get('/api/dockerfiles')).json()) as { dockerfiles: unknown[] };
    expect(list.dockerfiles).toEqual([]);
  });

  it('anonymous: pages redirect to login, API answers 401', async () => {
    const anon = w.client();
    expect((await anon.get(`/dockerfiles/${dfId}`)).status).toBe(303);
    expect((await anon.get(`/api/builds/1`)).status).toBe(401);
    expect((await anon.get(`/builds/1/artifacts/image.raw`)).status).toBe(303);
  });

  it('case 10: build POST without CSRF => 403, no row, no glue call', async () => {
    const before = Number((await w.db('builds').count({ n: '*' }))[0]!.n);
    const from = w.local.commands.length;
    expect((await a.postForm(`/dockerfiles/${dfId}/builds`, { key: 'no-csrf-token-key' })).status).toBe(403);
    expect((await a.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'no-csrf-token-key2' })).status).toBe(403);
    expect(Number((await w.db('builds').count({ n: '*' }))[0]!.n)).toBe(before);
    expect(jobCommands(from)).toEqual([]);
  });

  it('glue down: the build stays requested while its dispatch task retries; once the glue is back it is dispatched under its key, one backend build', async () => {
    const before = await lastBackendBuild(dfId);
    w.local.down = true;
    try {
      const { id, key } = await a.build(dfId);
      // The dispatch task tried, failed and waits for its next try: the row is untouched.
      const task = await until(async () =>
        (await listTasksOf(w.db, `build:${id}`)).find((t) => t.kind === 'build.dispatch' && t.last_error),
      );
      expect(task).toMatchObject({
        state: expect.stringMatching(/^(pending|running)$/),
        last_error: expect.stringContaining('backend_unavailable'),
      });
      const row = (await findBuild(w.db, id, null))!;
      expect(row).toMatchObject({ state: 'requested', backend_build: null });
      expect((await getBuild(a, id)).state).toBe('requested');
      w.local.down = false;
      const done = await w.waitForBuild(id);
      expect(done.state).toBe('succeeded');
      expect(await lastBackendBuild(dfId)).toBe(before + 1);
      expect(await w.glue.call('job.build', [dfId, key])).toMatchObject({ build: done.backend_build, created: false });
    } finally {
      w.local.down = false;
    }
  });

  it('cancel: a running build is stopped through the glue and ends cancelled; one the glue never got is cancelled here and its key withdrawn once the glue answers; final builds stay', async () => {
    const held = await a.createDockerfile('to-cancel', 'FROM debian:bookworm\n# fake: gate never-opened\n');
    const { id, token } = await a.build(held);
    const running = await w.waitForBuild(id, (r) => r.state === 'running');
    const r = await a.postForm(`/builds/${id}/cancel`, { _csrf: token });
    expect(r.status).toBe(303);
    // The cancel task's 'Cancelled.' or, when a refresh saw the backend's end first, the backend's own words.
    expect(await w.waitForBuild(id)).toMatchObject({
      state: 'cancelled',
      reason: expect.stringMatching(/^(Cancelled\.|cancelled by request)$/),
    });
    expect((await w.glue.call('build.status', [held, running.backend_build!])).state).toBe('cancelled');

    w.local.down = true;
    let second;
    try {
      second = await a.build(held);
      await until(async () =>
        (await listTasksOf(w.db, `build:${second!.id}`)).some((t) => t.kind === 'build.dispatch' && t.last_error),
      );
      const t = await a.apiToken();
      const j = await a.postJson(`/api/builds/${second.id}/cancel`, {}, { 'x-csrf-token': t });
      expect(j.status).toBe(200);
      expect(((await j.json()) as { build: { state: string; reason: string } }).build).toMatchObject({
        state: 'cancelled',
        reason: 'Cancelled before it started.',
      });
      // The glue is still down: the attempt in flight ends unreachable, and the next one reads the cancelled row
      // and stops, so no job.put reaches the glue once it is back.
      await untilTasks(second.id, (t) => t.kind !== 'build.dispatch' || t.state !== 'running');
    } finally {
      w.local.down = false;
    }
    // Once the glue answers, the key is withdrawn (its dispatch attempts are cleared) and nothing was ever built for it.
    const withdrawn = await until(async () =>
      (await listTasksOf(w.db, `build:${second.id}`)).find((t) => t.kind === 'build.withdraw' && t.state === 'done'),
    );
    expect(withdrawn).toBeTruthy();
    const row = (await findBuild(w.db, second.id, null))!;
    expect(row).toMatchObject({ state: 'cancelled', backend_build: null, dispatch_attempts: 0 });
    expect(await w.glue.call('build.withdraw', [held, glueKey(row)])).toEqual({ job: held, withdrawn: false });

    const t = await a.apiToken();
    const done = await w.db('builds').where({ state: 'succeeded' }).first();
    await a.postJson(`/api/builds/${done.id}/cancel`, {}, { 'x-csrf-token': t });
    expect((await w.db('builds').where({ id: done.id }).first()).state).toBe('succeeded');
    // not yours: 404, nothing cancelled
    const third = await a.build(held);
    const bt = await b.apiToken();
    expect((await b.postJson(`/api/builds/${third.id}/cancel`, {}, { 'x-csrf-token': bt })).status).toBe(404);
    expect(['requested', 'queued', 'running']).toContain((await w.db('builds').where({ id: third.id }).first()).state);
    await a.postJson(`/api/builds/${third.id}/cancel`, {}, { 'x-csrf-token': t });
    expect((await w.waitForBuild(third.id)).state).toBe('cancelled');
    // The glue is up: its dispatch's job.put is over once every task has ended (the next test arms a refusal).
    await untilTasks(third.id, (t) => t.state === 'done' || t.state === 'failed');
  });

  it("a glue refusal (not an outage) fails the build with the glue's message", async () => {
    w.local.refuse('job.put', new KilnError('policy_violation', 'Dockerfile uses a forbidden instruction.'));
    const { id } = await a.build(dfId);
    const row = await w.waitForBuild(id);
    expect(row.state).toBe('failed');
    expect(row.reason).toBe('Dockerfile uses a forbidden instruction.');
  });
});

describe("cancel racing the backend's own end", () => {
  let w: TestWeb & { local: InProcessGlue };
  let builder: Worker;
  let a: HttpClient;
  beforeAll(async () => {
    w = await startTestWeb({ worker: false });
    // Dispatches, cancels, verifies; never refreshes: the web does not see a build end unless a cancel tells it.
    builder = w.newWorker({ 'build.refresh': { ...refreshTask, concurrency: 0 } }).start();
    a = w.client();
    await a.signUp('alice');
  });
  afterAll(async () => {
    await builder?.stop();
    await w?.close();
  });

  it('cancel of a build that already ended in the backend takes its real end: a success is verified, a failure keeps its reason', async () => {
    const t = await a.apiToken();
    const endedInBackend = async (content: string) => {
      const df = await a.createDockerfile(`ended${content.length}`, content);
      const { id } = await a.build(df);
      const row = await w.waitForBuild(id, (r) => r.backend_build !== null);
      await until(async () =>
        ['succeeded', 'failed'].includes((await w.glue.call('build.status', [df, row.backend_build!])).state),
      );
      expect((await findBuild(w.db, id, null))!.state).toBe('queued');
      expect((await a.postJson(`/api/builds/${id}/cancel`, {}, { 'x-csrf-token': t })).status).toBe(200);
      return id;
    };
    const ok = await endedInBackend('FROM debian:bookworm\nRUN true\n');
    expect(await w.waitForBuild(ok)).toMatchObject({ state: 'succeeded', image_sha256: sha256('RAW-IMAGE-BYTES') });
    const bad = await endedInBackend('FROM debian:bookworm\n# fake: fail\nRUN false\n');
    expect(await w.waitForBuild(bad)).toMatchObject({ state: 'failed', reason: 'RUN step 2 failed: exit 100' });
  });
});

describe('security headers', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 24: every HTML response carries CSP, HSTS, nosniff, Referrer-Policy and no X-Powered-By', async () => {
    const c = w.client();
    for (const p of ['/login', '/register', '/nope', '/static/kiln.css']) {
      const r = await c.get(p);
      const h = r.headers;
      expect(h.get('content-security-policy'), p).toBe(
        "default-src 'self';script-src 'self';object-src 'none';frame-ancestors 'none';base-uri 'none';form-action 'self'",
      );
      expect(h.get('strict-transport-security'), p).toBe('max-age=31536000; includeSubDomains');
      expect(h.get('x-content-type-options'), p).toBe('nosniff');
      expect(h.get('referrer-policy'), p).toBe('no-referrer');
      expect(h.get('x-powered-by'), p).toBeNull();
      expect(h.get('access-control-allow-origin'), p).toBeNull();
      if (!p.startsWith('/static/')) expect(h.get('cache-control'), p).toBe('no-store');
    }
  });

  it('missing static files and malformed URLs are client errors, not 500s', async () => {
    const c = w.client();
    expect((await c.get('/static/nope.js')).status).toBe(404);
    expect((await c.get('/static/../package.json')).status).toBe(404);
    expect((await c.get('/static/%2e%2e/package.json')).status).toBe(404);
    expect([400, 404]).toContain((await c.get('/builds/%E0%A4%A')).status);
  });

  it('unknown errors are a generic 500 without a stack', async () => {
    const c = w.client();
    await c.signUp('zed');
    await w.db.schema.renameTable('dockerfile_versions', 'dv_gone');
    try {
      const r = await c.get('/api/dockerfiles');
      expect(r.status).toBe(500);
      const body = await r.text();
      expect(body).toBe('{"error":{"code":"internal","message":"Internal error"}}');
      const page = await c.get('/dockerfiles');
      expect(page.status).toBe(500);
      const html = await page.text();
      expect(html).toContain('Internal error');
      expect(html).not.toMatch(/SQLITE|at .*\.ts:/);
    } finally {
      await w.db.schema.renameTable('dv_gone', 'dockerfile_versions');
    }
  });
});
