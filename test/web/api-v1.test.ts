import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByName } from '../../src/db/index.js';
import { verifyDir } from '../../src/sdk/verify.js';
import * as S from '../../src/web/api-v1/schemas.js';
import { sseEvents } from '../helpers/sse.js';
import { tempDir } from '../helpers/tmp.js';
import { ApiClient, addToken, addUser, startTestWeb, type TestWeb } from '../helpers/web.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    p.on('end', resolve);
  });
  for (const [name, data] of Object.entries(files)) p.entry({ name, mode: 0o644 }, Buffer.from(data));
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

type ApiError = { error: { code: string; message: string; details?: Record<string, unknown> } };

/** The answer's JSON, checked against the schema the OpenAPI document publishes for it (no field it does not name). */
async function body<T>(res: Response, schema: { parse(v: unknown): T }): Promise<T> {
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const json: unknown = await res.json();
  const parsed = schema.parse(json);
  expect(parsed).toEqual(json);
  return parsed;
}

describe('REST API v1: a pipeline puts a Dockerfile, builds it once per key, waits, downloads and verifies', () => {
  let w: TestWeb;
  let api: ApiClient;
  beforeAll(async () => {
    w = await startTestWeb();
    await addUser(w.db, 'alice', 'user');
    api = new ApiClient(w.url, await addToken(w, 'alice', ['build']));
  });
  afterAll(async () => {
    await w?.close();
  });

  it('the whole journey, with the same code as kiln verify', async () => {
    const context = gzipSync(await tarOf({ 'app/hello.txt': 'hello\n' }));
    const df = 'FROM debian:bookworm\n# fake-packages: a=1\nCOPY app /app\n';
    const put = await api.putDockerfile('app', df, { context, settings: { formats: ['raw'], buildArgs: { X: '1' } } });
    expect(put.status, await put.clone().text()).toBe(201);
    const created = await body(put, S.DockerfileAnswer);
    expect(created).toMatchObject({ created: true, dockerfile: { name: 'app', content: df } });
    expect(created.dockerfile.context?.entries.map((e) => e.name)).toContain('app/hello.txt');
    expect(created.dockerfile.settings).toMatchObject({ formats: ['raw'], buildArgs: { X: '1' }, enabled: true });

    // The pipeline's next run sends the same: no new version, no new settings revision.
    const revision = async () =>
      (await w.db('job_settings').where({ dockerfile_id: created.dockerfile.id }).first()).revision;
    const before = await revision();
    const again = await api.putDockerfile('app', df, {
      context,
      settings: { formats: ['raw'], buildArgs: { X: '1' } },
    });
    expect(again.status).toBe(200);
    expect((await body(again, S.DockerfileAnswer)).created).toBe(false);
    expect(await w.db('dockerfile_versions').where({ dockerfile_id: created.dockerfile.id }).count({ n: '*' })).toEqual(
      [{ n: 1 }],
    );
    expect(await revision()).toBe(before);

    // Trigger twice with one key: one build.
    const key = { 'idempotency-key': 'pipeline-42-job-7' };
    const first = await api.post('/builds', { dockerfile: 'app' }, key);
    expect(first.status).toBe(201);
    const b1 = await body(first, S.TriggerAnswer);
    const second = await api.post('/builds', { dockerfile: 'app' }, key);
    expect(second.status).toBe(200);
    expect((await body(second, S.TriggerAnswer)).build.id).toBe(b1.build.id);
    expect(b1.build).toMatchObject({ trigger: 'api', dockerfile: { name: 'app' } });
    expect(await w.db('builds').where({ dockerfile_id: created.dockerfile.id }).count({ n: '*' })).toEqual([{ n: 1 }]);

    // Wait: each long poll answers when the state moves on, until the build is finished.
    let b = (await body(await api.get(`/builds/${b1.build.id}`), S.BuildAnswer)).build;
    while (!b.final) {
      const res = await api.get(`/builds/${b.id}?wait=60s&seen=${b.state}`);
      expect(res.status).toBe(200);
      b = (await body(res, S.BuildAnswer)).build;
    }
    expect(b.state).toBe('succeeded');

    // List the artifacts, download them, check one against the listing and all with kiln verify's code.
    const list = await body(await api.get(`/builds/${b.id}/artifacts`), S.ArtifactList);
    const image = list.artifacts.find((a) => a.name === 'image.raw')!;
    expect(image.sha256).toMatch(/^[0-9a-f]{64}$/);
    const bytes = Buffer.from(await (await api.get(image.url.replace('/api/v1', ''))).arrayBuffer());
    expect(sha256(bytes)).toBe(image.sha256);
    const part = await api.get(image.url.replace('/api/v1', ''), { range: 'bytes=0-2' });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(0, 3));

    const { dir, cleanup } = tempDir('kiln-api-download-');
    try {
      const out = path.join(dir, 'build');
      mkdirSync(out);
      for (const a of list.artifacts) {
        const res = await api.get(a.url.replace('/api/v1', ''));
        expect(res.status, a.name).toBe(200);
        writeFileSync(path.join(out, a.name), Buffer.from(await res.arrayBuffer()));
      }
      const key = await (await fetch(`${w.url}${list.signingKey}`)).text();
      const report = await verifyDir(out, { publicKey: key.trim(), requireSignature: true });
      const ok = (name: string) => report.checks.find((c) => c.name === name)?.ok;
      expect(ok('sha256 image.raw')).toBe(true);
      expect(ok('signature')).toBe(true);
    } finally {
      cleanup();
    }

    // The build is in the list, with its trigger.
    const page = await body(await api.get('/builds?dockerfile=app'), S.BuildPage);
    expect(page.builds.map((x) => [x.id, x.trigger])).toEqual([[b.id, 'api']]);
  });

  it('the same Idempotency-Key for another Dockerfile is 422 idempotency_key_reused; keys are per user', async () => {
    expect((await api.putDockerfile('other', 'FROM debian:bookworm\n')).status).toBe(201);
    const key = { 'idempotency-key': 'reused-key-1' };
    expect((await api.post('/builds', { dockerfile: 'app' }, key)).status).toBe(201);
    const reused = await api.post('/builds', { dockerfile: 'other' }, key);
    expect(reused.status).toBe(422);
    expect(((await reused.json()) as ApiError).error.code).toBe('idempotency_key_reused');
    // Bob picks the same key for his own Dockerfile: his own build, nothing learnt of alice's.
    await addUser(w.db, 'bob', 'user');
    const bob = new ApiClient(w.url, await addToken(w, 'bob', ['build']));
    expect((await bob.putDockerfile('app', 'FROM debian:bookworm\n')).status).toBe(201);
    const his = await bob.post('/builds', { dockerfile: 'app' }, key);
    expect(his.status).toBe(201);
  });

  it('bad input gets the one JSON error shape, never HTML or a 500; unknown routes 404, known paths 405 with Allow', async () => {
    const cases: Array<[Promise<Response>, number, string]> = [
      [api.get('/nope'), 404, 'not_found'],
      [api.request('/builds', { method: 'DELETE' }), 405, 'method_not_allowed'],
      [api.get('/builds/abc'), 404, 'not_found'],
      [api.get('/builds/1?wait=forever'), 422, 'invalid_input'],
      [api.get('/builds?state=bogus'), 422, 'invalid_input'],
      [api.get('/builds?cursor=notacursor'), 422, 'invalid_input'],
      [api.post('/builds', { dockerfile: 'app', extra: 1 }), 422, 'invalid_input'],
      [api.post('/builds', {}), 422, 'invalid_input'],
      [api.request('/dockerfiles/x', { method: 'PUT', body: new FormData() }), 422, 'invalid_input'],
      [
        api.request('/builds', { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } }),
        400,
        'bad_request',
      ],
      [
        api.request('/builds', { method: 'POST', body: 'x', headers: { 'content-type': 'text/plain' } }),
        415,
        'bad_request',
      ],
      [api.post('/builds', { dockerfile: 'Not A Name' }), 422, 'invalid_input'],
      [api.post('/builds', { dockerfile: 'missing' }), 404, 'not_found'],
      [api.putDockerfile('bad', 'FROM debian:bookworm\nRUN --network=host true\n'), 422, 'policy_violation'],
      [api.putDockerfile('ctx', 'FROM debian:bookworm\n', { context: Buffer.from('not a tar') }), 422, 'invalid_input'],
      [
        api.request('/dockerfiles/x', { method: 'PUT', body: 'FROM x', headers: { 'content-type': 'text/plain' } }),
        415,
        'bad_request',
      ],
      [new ApiClient(w.url).get('/builds'), 401, 'unauthenticated'],
      [new ApiClient(w.url, 'kiln_0000000000000000_' + 'A'.repeat(43)).get('/builds'), 401, 'unauthenticated'],
    ];
    for (const [p, status, code] of cases) {
      const res = await p;
      const text = await res.text();
      expect([res.status, res.headers.get('content-type'), text], text).toEqual([
        status,
        expect.stringMatching(/^application\/json/),
        expect.any(String),
      ]);
      expect(S.ErrorBody.parse(JSON.parse(text)).error.code).toBe(code);
    }
    // Refused before its body is read (no token here): the client still reads the answer, not a reset connection.
    const big = await new ApiClient(w.url).putDockerfile('big', 'FROM debian:bookworm\n', {
      context: Buffer.alloc(8 * 1024 * 1024, 1),
    });
    expect(big.status).toBe(401);
    expect(S.ErrorBody.parse(await big.json()).error.code).toBe('unauthenticated');
    const m = await api.request('/builds', { method: 'DELETE' });
    expect(m.headers.get('allow')).toBe('POST, GET, HEAD');
    const policy = (await (
      await api.putDockerfile('bad', 'FROM debian:bookworm\nRUN --network=host true\n')
    ).json()) as ApiError;
    expect(policy.error.details?.findings).toEqual([expect.objectContaining({ line: 2 })]);
    // Nothing of the refused ones was stored.
    const alice = (await findUserByName(w.db, 'alice'))!;
    expect(
      (await w.db('dockerfiles').where({ owner_id: alice.id })).map((d: { name: string }) => d.name).sort(),
    ).toEqual(['app', 'other']);
  });
});

describe('REST API v1: tokens at the door (scopes, expiry, revocation, a disabled user, the rate limit, CSRF)', () => {
  let w: TestWeb & { local: import('../helpers/in-process-glue.js').InProcessGlue };
  // Time runs (the worker's tasks need it to), and a test jumps it forward.
  let offset = 0;
  const clock = () => Date.now() + offset;
  beforeAll(async () => {
    w = await startTestWeb({ clock });
  });
  afterAll(async () => {
    await w?.close();
  });
  const errorOf = async (res: Response) => ((await res.json()) as ApiError).error;

  it('a token beyond its scope gets 403 on every route that needs more, whatever the object (another user’s too)', async () => {
    await addUser(w.db, 'carol', 'user');
    await addUser(w.db, 'dan', 'user');
    const carol = new ApiClient(w.url, await addToken(w, 'carol', ['build'], { now: clock }));
    expect((await carol.putDockerfile('held', 'FROM debian:bookworm\n# fake: gate scopes\n')).status).toBe(201);
    const { build } = (await (await carol.post('/builds', { dockerfile: 'held' })).json()) as { build: { id: number } };
    const read = new ApiClient(w.url, await addToken(w, 'carol', ['read'], { now: clock }));
    const dan = new ApiClient(w.url, await addToken(w, 'dan', ['read'], { now: clock }));
    for (const c of [read, dan]) {
      for (const res of [
        await c.putDockerfile('held', 'FROM debian:bookworm\n'),
        await c.post('/builds', { dockerfile: 'held' }),
        await c.post(`/builds/${build.id}/cancel`),
        await c.get('/admin/users'),
      ]) {
        expect(res.status).toBe(403);
        expect((await errorOf(res)).code).toBe('forbidden');
      }
    }
    expect((await read.get(`/builds/${build.id}`)).status).toBe(200);
    // Reading another user's build with a token that may read: not found, as everywhere.
    expect((await dan.get(`/builds/${build.id}`)).status).toBe(404);
    expect((await carol.get('/admin/users')).status).toBe(403);
    w.local.openGate('scopes');
    await w.waitForBuild(build.id);
  });

  it('an admin token reaches the admin routes; an admin’s build token is a user’s', async () => {
    await addUser(w.db, 'root', 'admin');
    const admin = new ApiClient(w.url, await addToken(w, 'root', ['admin'], { now: clock }));
    const users = await body(await admin.get('/admin/users'), S.UserList);
    expect(users.users.map((u) => u.username)).toContain('carol');
    expect((await body(await admin.get('/admin/queue'), S.AdminQueue)).builds).toBeInstanceOf(Array);
    const made = await admin.post('/admin/users', { username: 'erin' });
    expect(made.status).toBe(201);
    expect((await body(made, S.NewUserAnswer)).password.length).toBeGreaterThan(11);
    const rootBuild = new ApiClient(w.url, await addToken(w, 'root', ['build'], { now: clock }));
    expect((await rootBuild.get('/admin/users')).status).toBe(403);
    const carolsBuild = (await w.db('builds').first()).id as number;
    expect((await rootBuild.get(`/builds/${carolsBuild}`)).status).toBe(404);
    expect((await admin.get(`/builds/${carolsBuild}`)).status).toBe(200);
  });

  it('expiry (on the web’s clock): 401 saying so', async () => {
    const api = new ApiClient(w.url, await addToken(w, 'carol', ['read'], { expires: '1d', now: clock }));
    expect((await api.get('/me')).status).toBe(200);
    offset += 86_400_000;
    try {
      const res = await api.get('/me');
      expect(res.status).toBe(401);
      expect(await errorOf(res)).toMatchObject({ code: 'unauthenticated', message: expect.stringMatching(/expired/) });
    } finally {
      offset -= 86_400_000;
    }
  });

  it('the account page: a token is shown once, its last use appears, and revoking it ends it at once', async () => {
    const page = w.client();
    await page.signUp('frank');
    const t = await page.token('/account');
    const made = await page.postForm('/account/tokens', {
      _csrf: t,
      name: 'gitlab-ci',
      scopes: 'build',
      expires: '30d',
    });
    expect(made.status).toBe(201);
    const html = await made.text();
    const token = /<code>(kiln_[0-9a-f]{16}_[A-Za-z0-9_-]{43})<\/code>/.exec(html)![1]!;
    const api = new ApiClient(w.url, token);
    expect(await body(await api.get('/me'), S.Me)).toMatchObject({
      user: { username: 'frank' },
      token: { scopes: ['build'] },
    });
    const again = await (await page.get('/account')).text();
    expect(again).not.toContain(token);
    expect(again).not.toContain(token.slice(22));
    const row = /<tr id="token-(\d+)">([\s\S]*?)<\/tr>/.exec(again)!;
    expect(row[2]).toContain('gitlab-ci');
    expect(row[2]).toMatch(
      /<td><time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<\/time><\/td>\s*<td><span class="state state-succeeded">active/,
    );
    // A form without its CSRF token does nothing (case 10).
    expect((await page.postForm(`/account/tokens/${row[1]}/revoke`, {})).status).toBe(403);
    expect((await api.get('/me')).status).toBe(200);
    const revoked = await page.postForm(`/account/tokens/${row[1]}/revoke`, { _csrf: await page.token('/account') });
    expect(revoked.status).toBe(303);
    const after = await api.get('/me');
    expect(after.status).toBe(401);
    expect((await errorOf(after)).message).toBe('This API token was revoked.');
    // The admin scope is not offered to a user, and not accepted from one.
    expect(again).not.toContain('value="admin"');
    const sneaky = await page.postForm('/account/tokens', {
      _csrf: await page.token('/account'),
      name: 'x',
      scopes: 'admin',
    });
    expect(sneaky.status).toBe(422);
  });

  it('disabling a user kills their tokens at once, and the admin console says so', async () => {
    await addUser(w.db, 'gina', 'user');
    const api = new ApiClient(w.url, await addToken(w, 'gina', ['read'], { now: clock }));
    expect((await api.get('/me')).status).toBe(200);
    const admin = w.client();
    const root = await addUser(w.db, 'boss', 'admin');
    await admin.login(root.username, root.password);
    const users = await (await admin.get('/admin/users')).text();
    expect(users).toContain('revokes its API tokens');
    const gina = (await findUserByName(w.db, 'gina'))!;
    const t = await admin.apiToken();
    expect((await admin.postJson(`/api/admin/users/${gina.id}/disable`, {}, { 'x-csrf-token': t })).status).toBe(200);
    const res = await api.get('/me');
    expect(res.status).toBe(401);
    expect((await errorOf(res)).message).toMatch(/revoked when its account was disabled/);
    expect((await admin.postJson(`/api/admin/users/${gina.id}/enable`, {}, { 'x-csrf-token': t })).status).toBe(200);
    expect((await api.get('/me')).status).toBe(401);
  });

  it('case 10: a cross-site request with only a session cookie cannot act on /api/v1 (cookies are not read there); a bearer token needs no CSRF token', async () => {
    const page = w.client();
    await page.signUp('hugo');
    const api = new ApiClient(w.url, await addToken(w, 'hugo', ['build'], { now: clock }));
    expect((await api.putDockerfile('mine', 'FROM debian:bookworm\n')).status).toBe(201);
    const hugo = (await findUserByName(w.db, 'hugo'))!;
    const count = async () => Number((await w.db('builds').where({ owner_id: hugo.id }).count({ n: '*' }))[0]!.n);
    const before = await count();
    const forged: Array<Record<string, string>> = [
      // What a form on another site makes a browser send: the cookie, cross-site headers, no token.
      { 'content-type': 'application/json', 'sec-fetch-site': 'cross-site', origin: 'http://evil.example' },
      // The same without the headers a browser adds (an old browser, a stripped proxy): still only a cookie.
      { 'content-type': 'application/json' },
      // Even with the session's own CSRF token, a cookie is not a credential here.
      { 'content-type': 'application/json', 'x-csrf-token': await page.apiToken() },
    ];
    for (const headers of forged) {
      const res = await page.request('/api/v1/builds', {
        method: 'POST',
        body: JSON.stringify({ dockerfile: 'mine' }),
        headers,
      });
      expect([401, 403]).toContain(res.status);
      expect(S.ErrorBody.parse(await res.json()).error.code).toMatch(/^(unauthenticated|forbidden)$/);
    }
    expect(await count()).toBe(before);
    // No Set-Cookie either: the API does not touch sessions.
    expect((await page.request('/api/v1/me', {})).headers.get('set-cookie')).toBeNull();
    const res = await api.post('/builds', { dockerfile: 'mine' });
    expect(res.status).toBe(201);
    expect(await count()).toBe(before + 1);
  });
});

describe('REST API v1: following a build (long poll, log, events, report)', () => {
  let w: TestWeb & { local: import('../helpers/in-process-glue.js').InProcessGlue };
  let api: ApiClient;
  beforeAll(async () => {
    w = await startTestWeb();
    await addUser(w.db, 'ivy', 'user');
    api = new ApiClient(w.url, await addToken(w, 'ivy', ['build']));
  });
  afterAll(async () => {
    await w?.close();
  });

  it('a long poll answers when the state changes, or with the same state once its time is up', async () => {
    await api.putDockerfile('held', 'FROM debian:bookworm\n# fake: gate poll\n# fake-lines: 3\nRUN true\n');
    const { build } = (await (await api.post('/builds', { dockerfile: 'held' })).json()) as { build: { id: number } };
    await w.waitForBuild(build.id, (b) => b.state === 'running');
    const timedOut = (await body(await api.get(`/builds/${build.id}?wait=1&seen=running`), S.BuildAnswer)).build;
    expect(timedOut.state).toBe('running');
    const waiting = api.get(`/builds/${build.id}?wait=60s&seen=running`);
    w.local.openGate('poll');
    const moved = (await body(await waiting, S.BuildAnswer)).build;
    expect(moved.state).not.toBe('running');
    // A finished build answers at once, whatever the wait.
    const done = await w.waitForBuild(build.id);
    const final = (await body(await api.get(`/builds/${build.id}?wait=60s&seen=${done.state}`), S.BuildAnswer)).build;
    expect(final).toMatchObject({ state: 'succeeded', final: true, queue: null });
  });

  it('the log: by offset as JSON, followed as plain text to its end, and as events that resume after the last one seen', async () => {
    await api.putDockerfile(
      'chatty',
      'FROM debian:bookworm\n# fake: gate chatty\n# fake-lines: 5\n# fake-ansi\nRUN true\n',
    );
    const { build } = (await (await api.post('/builds', { dockerfile: 'chatty' })).json()) as { build: { id: number } };
    const stream = api.get(`/builds/${build.id}/log/stream`);
    const events = await api.get(`/builds/${build.id}/events`);
    expect(events.headers.get('content-type')).toMatch(/^text\/event-stream/);
    w.local.openGate('chatty');
    const text = await (await stream).text();
    expect(text).toMatch(/^line 1$/m);
    expect(text).toMatch(/^after 5$/m);
    expect(text).not.toContain('##kiln');
    // eslint-disable-next-line no-control-regex
    expect(text).not.toMatch(/\x1b/);
    const seen: Array<{ event: string; id?: string; data: string }> = [];
    for await (const ev of sseEvents(events)) {
      seen.push(ev);
      if (ev.event === 'end') break;
    }
    const logLines = seen
      .filter((e) => e.event === 'log')
      .flatMap((e) => (JSON.parse(e.data) as { lines: string[] }).lines);
    expect(logLines.join('\n') + '\n').toBe(text);
    expect(seen.some((e) => e.event === 'build' && S.Build.parse(JSON.parse(e.data)).state === 'succeeded')).toBe(true);
    // Resuming after the first log event gives exactly the lines after it.
    const firstLog = seen.find((e) => e.event === 'log')!;
    const resumed = await api.get(`/builds/${build.id}/events`, { 'last-event-id': firstLog.id! });
    const rest: string[] = [];
    for await (const ev of sseEvents(resumed)) {
      if (ev.event === 'log') rest.push(...(JSON.parse(ev.data) as { lines: string[] }).lines);
      if (ev.event === 'end') break;
    }
    expect(rest).toEqual(logLines.slice((JSON.parse(firstLog.data) as { lines: string[] }).lines.length));
    const chunk = await body(await api.get(`/builds/${build.id}/log?offset=0`), S.LogChunk);
    expect(chunk.text).toBe(text);
  });

  it('a failed build: its report names the failing Dockerfile line', async () => {
    await api.putDockerfile('broken', 'FROM debian:bookworm\nRUN true\n# fake: fail\n');
    const { build } = (await (await api.post('/builds', { dockerfile: 'broken' })).json()) as { build: { id: number } };
    await w.waitForBuild(build.id);
    const b = (await body(await api.get(`/builds/${build.id}`), S.BuildAnswer)).build;
    expect(b.state).toBe('failed');
    const report = await body(await api.get(`/builds/${build.id}/report`), S.Report);
    expect(report.failure).toMatchObject({ line: 2, instruction: expect.stringContaining('RUN true') });
  });

  it('lists page by cursor: no build skipped or repeated, even when new ones arrive between pages', async () => {
    await api.putDockerfile('many', 'FROM debian:bookworm\n');
    for (let i = 0; i < 5; i++) await api.post('/builds', { dockerfile: 'many' });
    const seen: number[] = [];
    let cursor: string | null = '';
    type Page = { builds: Array<{ id: number }>; nextCursor: string | null };
    let first = true;
    while (cursor !== null) {
      const page: Page = await body(
        await api.get(`/builds?dockerfile=many&limit=2${cursor ? `&cursor=${cursor}` : ''}`),
        S.BuildPage,
      );
      seen.push(...page.builds.map((b) => b.id));
      cursor = page.nextCursor;
      // A build arriving after the first page lands before it: the following pages are unaffected.
      if (first) await api.post('/builds', { dockerfile: 'many' });
      first = false;
    }
    expect(seen.length).toBe(5);
    expect([...seen].sort((a, b) => b - a)).toEqual(seen);
    expect(new Set(seen).size).toBe(5);
    for (const id of seen) await w.waitForBuild(id);
    const dfs = await body(await api.get('/dockerfiles?limit=2'), S.DockerfilePage);
    expect(dfs.dockerfiles.map((d) => d.name)).toEqual(['broken', 'chatty']);
    const next = await body(await api.get(`/dockerfiles?limit=2&cursor=${dfs.nextCursor}`), S.DockerfilePage);
    expect(next.dockerfiles.map((d) => d.name)).toEqual(['held', 'many']);
    expect(next.nextCursor).toBeNull();
  });
});

describe('REST API v1: the rate limit', () => {
  let w: TestWeb;
  let offset = 0;
  const clock = () => Date.now() + offset;
  beforeAll(async () => {
    w = await startTestWeb({ clock, config: { api: { rateLimit: 3, rateWindowSeconds: 60 } } });
  });
  afterAll(async () => {
    await w?.close();
  });
  const errorOf = async (res: Response) => ((await res.json()) as ApiError).error;

  it('every token is rate-limited on its own: 429 with Retry-After, then it recovers when its window passes', async () => {
    await addUser(w.db, 'carol', 'user');
    const a = new ApiClient(w.url, await addToken(w, 'carol', ['read'], { now: clock }));
    const b = new ApiClient(w.url, await addToken(w, 'carol', ['read'], { now: clock }));
    for (let i = 0; i < 3; i++) expect((await a.get('/me')).status).toBe(200);
    const limited = await a.get('/me');
    expect(limited.status).toBe(429);
    const retry = Number(limited.headers.get('retry-after'));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
    expect(await errorOf(limited)).toMatchObject({ code: 'rate_limited', details: { retryAfterSeconds: retry } });
    expect((await b.get('/me')).status).toBe(200);
    offset += 30_000;
    expect(Number((await a.get('/me')).headers.get('retry-after'))).toBeLessThanOrEqual(30);
    offset += 30_000;
    expect((await a.get('/me')).status).toBe(200);
  });
});
