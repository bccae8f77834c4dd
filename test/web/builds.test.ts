import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcileOnce } from '../../src/core/tasks/reconcile.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const GOOD = 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y linux-image-amd64 systemd-sysv\n';
type BuildJson = { id: number; state: string; final: boolean; backendBuild: number | null; reason: string | null; artifacts: Array<{ name: string; size: number; url: string }>; imageSha256: string | null; progress: { stage: string; percent: number } | null };

async function getBuild(c: HttpClient, id: number): Promise<BuildJson> {
  const r = await c.get(`/api/builds/${id}`);
  expect(r.status).toBe(200);
  return ((await r.json()) as { build: BuildJson }).build;
}

describe('builds', () => {
  let w: TestWeb;
  let a: HttpClient;
  let b: HttpClient;
  let dfId: number;
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { quotaQueuedBuilds: 3 } }, logger: (await import('../../src/shared/logger.js')).createLogger({ level: process.env.TEST_LOG ? 'error' : 'silent' }) });
    a = w.client();
    await a.signUp('alice');
    b = w.client();
    await b.signUp('bob');
    dfId = await a.createDockerfile('debian-minimal', GOOD);
  });
  afterAll(async () => { await w?.close(); });

  it('Build => job.put with the spec, job.build with the key, row queued with the backend build number', async () => {
    const { id, key } = await a.build(dfId);
    const row = await w.db('builds').where({ id }).first();
    expect(row.state).toBe('queued');
    expect(row.idempotency_key).toBe(key);
    expect(Number(row.backend_build)).toBe(1);
    const job = w.glue.jobs.get(dfId)!;
    expect(job.spec).toMatchObject({ owner: 'alice', name: 'debian-minimal', dockerfile: GOOD, schedule: 'off', enabled: true });
    const version = await w.db('dockerfile_versions').where({ id: row.version_id }).first();
    expect(version.sha256).toBe(createHash('sha256').update(GOOD).digest('hex'));
  });

  it('a replayed POST with the same key is the same build (serial and parallel)', async () => {
    const before = w.glue.buildCount;
    const { id, key, token } = await a.build(dfId);
    const again = await a.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: token, key });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe(`/builds/${id}`);
    // a fresh form, double-clicked many times at once
    const html = await (await a.get(`/dockerfiles/${dfId}`)).text();
    const k2 = /name="key" value="([^"]+)"/.exec(html)![1]!;
    const rs = await Promise.all(Array.from({ length: 8 }, () => a.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: token, key: k2 })));
    const locations = new Set(rs.map((r) => r.headers.get('location')));
    expect(rs.every((r) => r.status === 303)).toBe(true);
    expect(locations.size).toBe(1);
    expect(w.glue.buildCount).toBe(before + 2);
    expect(Number((await w.db('builds').where({ idempotency_key: k2 }).count({ n: '*' }))[0]!.n)).toBe(1);
  });

  it('case 20: queued-build quota: 20 parallel requests accept exactly the quota', async () => {
    // 3 builds are active from the tests above; finish them first
    for (const r of await w.db('builds').select()) w.glue.fail(dfId, Number(r.backend_build), 'stopped by test');
    for (const r of await w.db('builds').select()) await getBuild(a, r.id);
    const t = await a.apiToken();
    const keys = Array.from({ length: 20 }, (_, i) => `parallel-key-${i}-xxxx`);
    const rs = await Promise.all(keys.map((key) => a.postJson(`/api/dockerfiles/${dfId}/builds`, { key }, { 'x-csrf-token': t })));
    expect(rs.filter((r) => r.status === 201).length).toBe(3);
    const refused = rs.filter((r) => r.status === 429);
    expect(refused.length).toBe(17);
    expect(refused[0]!.headers.get('retry-after')).toBeTruthy();
    expect(Number((await w.db('builds').whereIn('state', ['requested', 'queued', 'running']).count({ n: '*' }))[0]!.n)).toBe(3);
    for (const r of await w.db('builds').whereIn('state', ['queued']).select()) w.glue.fail(dfId, Number(r.backend_build), 'stopped by test');
    for (const r of await w.db('builds').select()) await getBuild(a, r.id);
  });

  it('case 15: status, progress, log (ANSI and OSC 8 links stripped, markup kept as text) and download follow the glue; case 23: the image downloads as an attachment under a server-made name, nosniff, private no-store; Range gives 206', async () => {
    const { id } = await a.build(dfId);
    const bn = Number((await w.db('builds').where({ id }).first()).backend_build);
    w.glue.start(dfId, bn);
    w.glue.progress(dfId, bn, 'docker-build', 40, 'RUN apt-get');
    w.glue.appendLog(dfId, bn, 'step 1\n\x1b[31m<script>alert(1)</script>\x1b[0m\n\x1b]8;;javascript:alert(2)\x07link\x1b]8;;\x07\n');
    let s = await getBuild(a, id);
    expect(s.state).toBe('running');
    expect(s.progress).toMatchObject({ stage: 'docker-build', percent: 40 });
    const log = (await (await a.get(`/api/builds/${id}/log?offset=0`)).json()) as { text: string; nextOffset: number; more: boolean };
    expect(log.text).toBe('step 1\n<script>alert(1)</script>\nlink\n');
    expect(log.text).not.toContain('\x1b');
    expect(log.more).toBe(true);
    const image = Buffer.from('0123456789abcdef'.repeat(1000));
    const sha = w.glue.succeed(dfId, bn, image);
    s = await getBuild(a, id);
    expect(s.state).toBe('verifying');
    expect(s.final).toBe(false);
    expect(s.imageSha256).toBeNull();
    await reconcileOnce(w.db, w.glue, w.config);
    s = await getBuild(a, id);
    expect(s.state).toBe('succeeded');
    expect(s.final).toBe(true);
    expect(s.imageSha256).toBe(sha);
    expect(s.artifacts.map((x) => x.name).sort()).toEqual(['SHA256SUMS', 'SHA256SUMS.sig', 'image.raw', 'result.json']);
    const dl = await a.get(`/builds/${id}/artifacts/image.raw`);
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('application/octet-stream');
    expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="kiln-${id}-image.raw"`);
    expect(dl.headers.get('x-content-type-options')).toBe('nosniff');
    expect(dl.headers.get('cache-control')).toBe('private, no-store');
    const bytes = Buffer.from(await dl.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(sha);
    const part = await a.get(`/builds/${id}/artifacts/image.raw`, { range: 'bytes=16-31' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 16-31/${image.length}`);
    expect(Buffer.from(await part.arrayBuffer()).toString()).toBe('0123456789abcdef');
    const head = await a.request(`/builds/${id}/artifacts/image.raw`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(image.length));
    const html = await (await a.get(`/builds/${id}`)).text();
    expect(html).toContain(`/builds/${id}/artifacts/image.raw`);
    expect(html).toContain('<script src="/static/build.js" defer></script>');
  });

  it('case 21: download ids and names like ../../, %2e%2e%2f, %252e, ..%5c, %00 => 400/404, and nothing is read', async () => {
    const row = await w.db('builds').where({ state: 'succeeded' }).first();
    const calls = w.glue.calls.length;
    const names = ['..%2F..%2Fetc%2Fpasswd', '../../etc/passwd', '%2e%2e%2f', '%2e%2e%2fSHA256SUMS', '%252e%252e%252fetc', '..%5cimage.raw', '..%5c..%5cetc%5cpasswd',
      'image.raw%00', 'image.raw%00.txt', '%00', 'image.qcow2', 'build.log', '.', '..', '%2e', 'IMAGE.RAW', 'image.raw%2f'];
    // Sent as written (node:http), not normalised by a URL parser the way fetch would.
    const raw = (p: string) => new Promise<number>((resolve, reject) => {
      const u = new URL(w.url);
      http.get({ host: u.hostname, port: u.port, path: p, headers: { cookie: a.cookieHeader() } }, (res) => { res.resume(); resolve(res.statusCode!); }).on('error', reject);
    });
    for (const name of names) {
      for (const prefix of ['', '/api']) {
        expect([400, 404], `${prefix} ${name}`).toContain(await raw(`${prefix}/builds/${row.id}/artifacts/${name}`));
      }
    }
    for (const id of ['..%2f1', '..', '../..', '%2e%2e%2f1', '%252e%252e', '..%5c1', `${row.id}%00`, '%00', '0', '-1', '1.0', '99999999999999']) {
      for (const p of [`/builds/${id}`, `/builds/${id}/artifacts/image.raw`, `/api/builds/${id}/artifacts/image.raw`]) {
        expect([400, 404], p).toContain(await raw(p));
      }
    }
    // Not one of these reached the glue: no artifact was opened, by name or otherwise.
    expect(w.glue.calls.slice(calls).filter((c) => c.verb === 'build.artifact')).toEqual([]);
  });

  it('case 12: user B gets 404 on A\'s Dockerfile, build, log and download; POSTs change nothing', async () => {
    const row = await w.db('builds').where({ state: 'succeeded' }).first();
    const paths = [
      `/dockerfiles/${dfId}`, `/dockerfiles/${dfId}/raw`, `/builds/${row.id}`, `/builds/${row.id}/artifacts/image.raw`,
      `/api/dockerfiles/${dfId}`, `/api/builds/${row.id}`, `/api/builds/${row.id}/log?offset=0`, `/api/builds/${row.id}/artifacts/image.raw`,
    ];
    for (const p of paths) {
      const r = await b.get(p);
      expect(r.status, p).toBe(404);
      expect(await r.text()).not.toContain('debian-minimal');
    }
    // a missing id looks the same as someone else's
    expect((await b.get('/api/dockerfiles/999999')).status).toBe(404);
    const before = Number((await w.db('builds').count({ n: '*' }))[0]!.n);
    const callsBefore = w.glue.calls.length;
    const t = await b.apiToken();
    const r = await b.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'bob-steals-a-build' }, { 'x-csrf-token': t });
    expect(r.status).toBe(404);
    const bt = await b.token('/dockerfiles');
    expect((await b.postForm(`/dockerfiles/${dfId}/builds`, { _csrf: bt, key: 'bob-steals-b-build' })).status).toBe(404);
    expect(Number((await w.db('builds').count({ n: '*' }))[0]!.n)).toBe(before);
    expect(w.glue.calls.length).toBe(callsBefore);
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
    const calls = w.glue.calls.length;
    expect((await a.postForm(`/dockerfiles/${dfId}/builds`, { key: 'no-csrf-token-key' })).status).toBe(403);
    expect((await a.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'no-csrf-token-key2' })).status).toBe(403);
    expect(Number((await w.db('builds').count({ n: '*' }))[0]!.n)).toBe(before);
    expect(w.glue.calls.length).toBe(calls);
  });

  it('glue down: the build stays requested; reconcile dispatches it once the glue is back (same key, one build)', async () => {
    w.glue.available = false;
    const { id, key } = await a.build(dfId);
    let row = await w.db('builds').where({ id }).first();
    expect(row.state).toBe('requested');
    expect(row.backend_build).toBeNull();
    expect((await getBuild(a, id)).state).toBe('requested');
    await reconcileOnce(w.db, w.glue, w.config);
    expect((await w.db('builds').where({ id }).first()).state).toBe('requested');
    w.glue.available = true;
    const before = w.glue.buildCount;
    await reconcileOnce(w.db, w.glue, w.config);
    await reconcileOnce(w.db, w.glue, w.config);
    row = await w.db('builds').where({ id }).first();
    expect(row.state, JSON.stringify(row)).toBe('queued');
    expect(w.glue.buildCount).toBe(before + 1);
    expect(w.glue.jobs.get(dfId)!.keys.get(key)).toBe(Number(row.backend_build));
    // reconcile also refreshes dispatched builds
    w.glue.fail(dfId, Number(row.backend_build), 'disk full');
    await reconcileOnce(w.db, w.glue, w.config);
    row = await w.db('builds').where({ id }).first();
    expect(row.state).toBe('failed');
    expect(row.reason).toBe('disk full');
  });

  it('cancel: a queued build is cancelled through the glue, an undispatched one locally; final builds stay', async () => {
    const { id, token } = await a.build(dfId);
    const r = await a.postForm(`/builds/${id}/cancel`, { _csrf: token });
    expect(r.status).toBe(303);
    expect((await getBuild(a, id)).state).toBe('cancelled');
    const bn = Number((await w.db('builds').where({ id }).first()).backend_build);
    expect(w.glue.jobs.get(dfId)!.builds.get(bn)!.state).toBe('cancelled');
    w.glue.available = false;
    const second = await a.build(dfId);
    const calls = w.glue.calls.length;
    const t = await a.apiToken();
    const j = await a.postJson(`/api/builds/${second.id}/cancel`, {}, { 'x-csrf-token': t });
    expect(j.status).toBe(200);
    expect(((await j.json()) as { build: { state: string } }).build.state).toBe('cancelled');
    // Its dispatch never got an answer, so the web tried to withdraw it (the glue was away) ...
    expect(w.glue.calls.slice(calls).map((c) => c.verb)).toEqual(['build.withdraw']);
    w.glue.available = true;
    await reconcileOnce(w.db, w.glue, w.config);
    // ... and the reconciler sends the withdrawal once, then never re-dispatches the build.
    const after = w.glue.calls.slice(calls + 1).map((c) => c.verb);
    expect(after.filter((v) => v === 'build.withdraw')).toHaveLength(1);
    expect(after).not.toContain('job.build');
    await reconcileOnce(w.db, w.glue, w.config);
    expect(w.glue.calls.slice(calls + 1).filter((c) => c.verb === 'build.withdraw')).toHaveLength(1);
    expect((await w.db('builds').where({ id: second.id }).first()).state).toBe('cancelled');
    const done = await w.db('builds').where({ state: 'succeeded' }).first();
    await a.postJson(`/api/builds/${done.id}/cancel`, {}, { 'x-csrf-token': t });
    expect((await w.db('builds').where({ id: done.id }).first()).state).toBe('succeeded');
    // not yours: 404, nothing cancelled
    const third = await a.build(dfId);
    const bt = await b.apiToken();
    expect((await b.postJson(`/api/builds/${third.id}/cancel`, {}, { 'x-csrf-token': bt })).status).toBe(404);
    expect((await w.db('builds').where({ id: third.id }).first()).state).toBe('queued');
    await a.postJson(`/api/builds/${third.id}/cancel`, {}, { 'x-csrf-token': t });
  });

  it('cancel of a build that already ended in the backend takes its real end: a success is verified, a failure keeps a reason', async () => {
    const t = await a.apiToken();
    const ok = await a.build(dfId);
    const okBn = Number((await w.db('builds').where({ id: ok.id }).first()).backend_build);
    w.glue.succeed(dfId, okBn); // ended before the web looked again
    await a.postJson(`/api/builds/${ok.id}/cancel`, {}, { 'x-csrf-token': t });
    expect((await w.db('builds').where({ id: ok.id }).first()).state).toBe('verifying');
    await reconcileOnce(w.db, w.glue, w.config);
    expect((await w.db('builds').where({ id: ok.id }).first()).state).toBe('succeeded');

    const bad = await a.build(dfId);
    const badBn = Number((await w.db('builds').where({ id: bad.id }).first()).backend_build);
    w.glue.fail(dfId, badBn, '');
    await a.postJson(`/api/builds/${bad.id}/cancel`, {}, { 'x-csrf-token': t });
    const row = await w.db('builds').where({ id: bad.id }).first();
    expect(row.state).toBe('failed');
    expect(row.reason).toBeTruthy();
  });

  it('a glue refusal (not an outage) fails the build with the glue\'s message', async () => {
    const orig = w.glue.call.bind(w.glue);
    w.glue.call = (async (verb: string, args: ReadonlyArray<string | number>, stdin?: string | Buffer) => {
      if (verb === 'job.put') {
        const { KilnError } = await import('../../src/shared/errors.js');
        throw new KilnError('policy_violation', 'Dockerfile uses a forbidden instruction.');
      }
      return orig(verb as 'ping', args, stdin);
    }) as typeof w.glue.call;
    try {
      const { id } = await a.build(dfId);
      const s = await getBuild(a, id);
      expect(s.state).toBe('failed');
      expect(s.reason).toBe('Dockerfile uses a forbidden instruction.');
    } finally {
      w.glue.call = orig;
    }
  });
});

describe('security headers', () => {
  let w: TestWeb;
  beforeAll(async () => { w = await startTestWeb(); });
  afterAll(async () => { await w?.close(); });

  it('case 24: every HTML response carries CSP, HSTS, nosniff, Referrer-Policy and no X-Powered-By', async () => {
    const c = w.client();
    for (const p of ['/login', '/register', '/nope', '/static/kiln.css']) {
      const r = await c.get(p);
      const h = r.headers;
      expect(h.get('content-security-policy'), p).toBe("default-src 'self';script-src 'self';object-src 'none';frame-ancestors 'none';base-uri 'none';form-action 'self'");
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

