/**
 * Following a Dockerfile through the site's front doors, against the real web, worker and glue in this process
 * (local backend, fake SDK), on SQLite and on PostgreSQL: the Atom feeds (valid XML parsed back with a real parser,
 * hostile package text escaped, newest first, the package diff "openssl 3.0.11 -> 3.0.13"), their feed tokens
 * (another user's Dockerfile, a wrong, rotated or revoked token: the same 404), and the outgoing webhook to real
 * HTTP receivers on 127.0.0.1 (allowed by config): HMAC signature over the raw body, the timestamp inside it, one
 * delivery id across a 500 and its retry, delivered exactly once, redirects not followed. A second site without the
 * allowance refuses private addresses when the URL is saved and, for a name that resolves elsewhere later (DNS
 * rebinding), when the delivery is made.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDb, type TestDb } from '../db/engines.js';
import { until } from '../helpers/wait.js';
import { ApiClient, addToken, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Hit {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A webhook receiver on 127.0.0.1: records every request; answers with `answer(hit)` (status, extra headers). */
async function receiver(answer: (h: Hit, n: number) => { status: number; headers?: Record<string, string> }) {
  const hits: Hit[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const hit = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      hits.push(hit);
      const a = answer(hit, hits.length);
      res.writeHead(a.status, a.headers ?? {}).end(a.status >= 400 ? 'receiver trouble' : 'ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    hits,
    port,
    url: `http://127.0.0.1:${port}/hook`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (n) => n === 'entry' });

/** The feed, checked well-formed by a real XML parser and parsed back. */
function parseFeed(xml: string): Json {
  expect(XMLValidator.validate(xml)).toBe(true);
  return parser.parse(xml).feed as Json;
}

const DF1 = 'FROM debian:bookworm\n# fake-packages: openssl=3.0.11 zlib=1.2.13 evil<b>&]]>=1<i>&amp;\nRUN true\n';
const DF2 = 'FROM debian:bookworm\n# fake-packages: openssl=3.0.13 zlib=1.2.13 curl=8.5.0\nRUN true\n';

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`following a Dockerfile on ${engine}: Atom feeds and the outgoing webhook`, () => {
    let t: TestDb | undefined;
    let w: TestWeb;
    let alice: HttpClient;
    let bob: HttpClient;
    let api: ApiClient;
    let bobApi: ApiClient;
    let hook: Awaited<ReturnType<typeof receiver>>;
    let secret: string;
    let dockerfileId: number;
    const builds: number[] = [];

    const build = async (client: ApiClient, name: string) => {
      const r = await client.post('/builds', { dockerfile: name });
      expect(r.status).toBe(201);
      const id = ((await r.json()) as Json).build.id as number;
      const row = await w.waitForBuild(id);
      expect(row.state).toBe('succeeded');
      return id;
    };
    const delivery = (buildId: number) =>
      w.db('webhook_deliveries').where({ build_id: buildId }).first<Json | undefined>();

    beforeAll(async () => {
      // The first delivery with a package diff (the second build's) meets a 500; its retry gets 204.
      let failedOnce = false;
      hook = await receiver((h) => {
        const body = JSON.parse(h.body.toString('utf8')) as Json;
        if (body.packageDiff && !failedOnce) {
          failedOnce = true;
          return { status: 500 };
        }
        return { status: 204 };
      });
      if (engine === 'pg') t = await freshDb('pg');
      w = await startTestWeb({
        ...(t ? { db: t.db } : {}),
        config: { webhooks: { allowHosts: ['127.0.0.1'] } },
      });
      alice = w.client();
      await alice.signUp('alice');
      bob = w.client();
      await bob.signUp('bob');
      api = new ApiClient(w.url, await addToken(w, 'alice', ['read', 'build']));
      bobApi = new ApiClient(w.url, await addToken(w, 'bob', ['read', 'build']));
      expect((await api.putDockerfile('web', DF1)).status).toBe(201);
      dockerfileId = ((await (await api.get('/dockerfiles/web')).json()) as Json).dockerfile.id as number;
      expect((await bobApi.putDockerfile('web', DF1)).status).toBe(201);
    });
    afterAll(async () => {
      await w?.close();
      await hook?.close();
      await t?.drop();
    });

    it('the webhook is set through the REST API: its secret is answered once, never read back', async () => {
      const r = await api.post('/dockerfiles/web/webhook', { url: hook.url });
      expect(r.status).toBe(201);
      const saved = (await r.json()) as Json;
      expect(saved.secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
      secret = saved.secret as string;
      const again = (await (await api.post('/dockerfiles/web/webhook', { url: hook.url })).json()) as Json;
      expect(again).toMatchObject({ created: false, webhook: { url: hook.url } });
      expect(again.secret).toBeUndefined();
      const read = await (await api.get('/dockerfiles/web/webhook')).text();
      expect(read).toContain(hook.url);
      expect(read).not.toContain(secret);
      // Bob has a Dockerfile of that name too: his own, without a webhook; alice's is not reachable to him.
      expect(((await (await bobApi.get('/dockerfiles/web/webhook')).json()) as Json).webhook).toBeNull();
    });

    it('a build end is POSTed signed (HMAC-SHA256 of the raw body, timestamp inside it), with artifacts and their sha256', async () => {
      builds.push(await build(api, 'web'));
      const d = await until(async () =>
        (await delivery(builds[0]!))?.state === 'delivered' ? delivery(builds[0]!) : undefined,
      );
      expect(d).toMatchObject({ attempts: 1, response_status: 204 });
      const hit = hook.hits.find((h) => JSON.parse(h.body.toString()).build.id === builds[0])!;
      const expected = `sha256=${createHmac('sha256', secret).update(hit.body).digest('hex')}`;
      expect(hit.headers['x-kiln-signature']).toBe(expected);
      // Any change to the bytes breaks it (the receiver must verify the raw body).
      const tampered = Buffer.from(hit.body.toString().replace('"succeeded"', '"failed"'));
      expect(`sha256=${createHmac('sha256', secret).update(tampered).digest('hex')}`).not.toBe(expected);
      const body = JSON.parse(hit.body.toString()) as Json;
      expect(String(body.timestamp)).toBe(hit.headers['x-kiln-timestamp']);
      expect(body.deliveryId).toBe(hit.headers['x-kiln-delivery']);
      expect(hit.headers['x-kiln-event']).toBe('build.ended');
      expect(body).toMatchObject({
        event: 'build.ended',
        dockerfile: { id: dockerfileId, name: 'web', owner: 'alice' },
        build: { id: builds[0], state: 'succeeded', trigger: 'api' },
        packageDiff: null,
      });
      expect(body.build.finishedAt).toEqual(expect.any(String));
      const image = (body.build.artifacts as Json[]).find((a) => a.name === 'image.raw');
      expect(image?.sha256).toMatch(/^[0-9a-f]{64}$/);
    });

    it('a 500 is retried under the same delivery id and delivered exactly once; the diff says openssl was upgraded', async () => {
      expect((await api.putDockerfile('web', DF2)).status).toBe(200);
      builds.push(await build(api, 'web'));
      const d = await until(async () =>
        (await delivery(builds[1]!))?.state === 'delivered' ? delivery(builds[1]!) : undefined,
      );
      expect(d).toMatchObject({ attempts: 2, response_status: 204 });
      // Its task is done: nothing will send it again.
      await until(async () => {
        const task = await w
          .db('tasks')
          .where({ kind: 'webhook.deliver', subject: `delivery:${d!.id}` })
          .first();
        return task?.state === 'done';
      });
      const mine = hook.hits.filter((h) => JSON.parse(h.body.toString()).build.id === builds[1]);
      expect(mine).toHaveLength(2);
      expect(new Set(mine.map((h) => h.headers['x-kiln-delivery'])).size).toBe(1);
      expect(mine[0]!.headers['x-kiln-delivery']).toBe(d!.delivery_id);
      for (const h of mine)
        expect(h.headers['x-kiln-signature']).toBe(
          `sha256=${createHmac('sha256', secret).update(h.body).digest('hex')}`,
        );
      const body = JSON.parse(mine[1]!.body.toString()) as Json;
      expect(body.packageDiff).toMatchObject({
        previousBuild: builds[0],
        changed: [{ name: 'openssl', architecture: 'amd64', from: '3.0.11', to: '3.0.13' }],
        added: [{ name: 'curl', version: '8.5.0' }],
        removed: [{ name: 'evil<b>&]]>', version: '1<i>&amp;' }],
        unchanged: 1,
      });
      // The settings page lists the deliveries with their answers.
      const page = await (await alice.get(`/dockerfiles/${dockerfileId}`)).text();
      expect(page).toContain(d!.delivery_id as string);
      expect(page).toMatch(/id="deliveries"/);
    });

    let feedToken: string;
    it('the account page makes a feed token (shown once); the feeds are valid Atom, newest first, with the package diff; hostile text is escaped', async () => {
      const made = await alice.postForm('/account/feed-token', { _csrf: await alice.token('/account') });
      expect(made.status).toBe(201);
      const html = await made.text();
      feedToken = /kfeed_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(html)![0];
      const again = await (await alice.get('/account')).text();
      expect(again).not.toContain(feedToken);
      expect(again).toContain('/feeds/user.atom');
      expect(await (await alice.get(`/dockerfiles/${dockerfileId}`)).text()).toContain(
        `/feeds/dockerfiles/${dockerfileId}.atom`,
      );

      const anon = w.client();
      for (const path of ['/feeds/user.atom', `/feeds/dockerfiles/${dockerfileId}.atom`]) {
        const r = await anon.get(`${path}?token=${feedToken}`);
        expect(r.status).toBe(200);
        expect(r.headers.get('content-type')).toMatch(/^application\/atom\+xml/);
        expect(r.headers.get('set-cookie')).toBeNull();
        const xml = await r.text();
        expect(xml).not.toContain(feedToken);
        const feed = parseFeed(xml);
        const entries = feed.entry as Json[];
        expect(entries.map((e) => e.id)).toEqual([`${w.url}/builds/${builds[1]}`, `${w.url}/builds/${builds[0]}`]);
        const newest = entries[0]!;
        expect(newest.title['#text']).toContain('openssl 3.0.11 -> 3.0.13');
        expect(newest.content['#text']).toContain('upgraded openssl:amd64 3.0.11 -> 3.0.13');
        expect(newest.content['#text']).toContain('Trigger: api');
        expect(newest.content['#text']).toMatch(/Finished: \d{4}-/);
        // The hostile package's name and version, parsed back exactly: escaped on the way out, never markup.
        expect(newest.content['#text']).toContain('removed evil<b>&]]>:amd64 1<i>&amp;');
        expect(xml).toContain('evil&lt;b&gt;&amp;]]&gt;');
        expect(xml).not.toMatch(/<b>|<i>/);
        const cats = (newest.category as Json[]).map((c) => c['@term']);
        expect(cats).toEqual(['succeeded', 'api']);
        expect(newest.link['@href']).toBe(`${w.url}/builds/${builds[1]}`);
      }
    });

    it("feeds authz: another user's Dockerfile, a wrong, unknown, rotated or revoked token all get the same 404", async () => {
      const anon = w.client();
      const status = async (p: string) => {
        const r = await anon.get(p);
        return `${r.status} ${await r.text()}`;
      };
      const missing = await status(`/feeds/dockerfiles/999999.atom?token=${feedToken}`);
      expect(missing).toBe('404 No such feed.\n');
      // Bob's own token on alice's Dockerfile: the answer of a Dockerfile that does not exist.
      const made = await bob.postForm('/account/feed-token', { _csrf: await bob.token('/account') });
      const bobToken = /kfeed_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(await made.text())![0];
      expect(await status(`/feeds/dockerfiles/${dockerfileId}.atom?token=${bobToken}`)).toBe(missing);
      const bobFeed = parseFeed(await (await anon.get(`/feeds/user.atom?token=${bobToken}`)).text());
      expect(bobFeed.entry ?? []).toEqual([]);
      const wrong = `${feedToken.slice(0, 23)}${'A'.repeat(43)}`;
      const unknown = `kfeed_${'0'.repeat(16)}_${feedToken.slice(23)}`;
      for (const tok of [wrong, unknown, 'nope', '']) {
        expect(await status(`/feeds/dockerfiles/${dockerfileId}.atom?token=${tok}`)).toBe(missing);
        expect(await status(`/feeds/user.atom?token=${tok}`)).toBe(missing);
      }
      expect(await status(`/feeds/user.atom`)).toBe(missing);
      // An API token is not a feed token.
      expect(await status(`/feeds/user.atom?token=${api.token}`)).toBe(missing);
      // Rotating: the old one stops at once.
      const rotated = await alice.postForm('/account/feed-token', { _csrf: await alice.token('/account') });
      const fresh = /kfeed_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(await rotated.text())![0];
      expect(await status(`/feeds/user.atom?token=${feedToken}`)).toBe(missing);
      expect((await anon.get(`/feeds/user.atom?token=${fresh}`)).status).toBe(200);
      // Revoking: it stops too.
      const revoked = await alice.postForm('/account/feed-token/revoke', { _csrf: await alice.token('/account') });
      expect(revoked.status).toBe(303);
      expect(await status(`/feeds/user.atom?token=${fresh}`)).toBe(missing);
      expect(
        await w
          .db('feed_tokens')
          .where({ public_id: fresh.slice(6, 22) })
          .first(),
      ).toBeUndefined();
    });

    it('a failed build is told too (no diff), and a receiver that keeps failing ends its delivery visibly after worker.maxAttempts', async () => {
      const down = await receiver(() => ({ status: 503 }));
      try {
        expect((await api.post('/dockerfiles/web/webhook', { url: down.url })).status).toBe(200);
        expect((await api.putDockerfile('web', `${DF2}# fake: fail\n`)).status).toBe(200);
        const r = await api.post('/builds', { dockerfile: 'web' });
        const id = ((await r.json()) as Json).build.id as number;
        expect((await w.waitForBuild(id)).state).toBe('failed');
        const d = await until(async () => ((await delivery(id))?.state === 'failed' ? delivery(id) : undefined));
        expect(d).toMatchObject({ attempts: w.config.worker.maxAttempts, response_status: 503 });
        expect(d!.error).toMatch(/^Kiln gave up: .*answered 503/);
        expect(down.hits).toHaveLength(w.config.worker.maxAttempts);
        expect(new Set(down.hits.map((h) => h.headers['x-kiln-delivery'])).size).toBe(1);
        const body = JSON.parse(down.hits[0]!.body.toString()) as Json;
        expect(body).toMatchObject({ build: { id, state: 'failed' }, packageDiff: null });
        const page = await (await alice.get(`/dockerfiles/${dockerfileId}`)).text();
        expect(page).toContain('Kiln gave up');
      } finally {
        await down.close();
        expect((await api.putDockerfile('web', DF2)).status).toBe(200);
      }
    });

    it("a redirect is not followed: the delivery fails at once saying so, and the redirect's target hears nothing", async () => {
      const target = await receiver(() => ({ status: 204 }));
      const redirecting = await receiver(() => ({ status: 302, headers: { location: target.url } }));
      try {
        expect((await api.post('/dockerfiles/web/webhook', { url: redirecting.url })).status).toBe(200);
        const id = await build(api, 'web');
        const d = await until(async () => ((await delivery(id))?.state === 'failed' ? delivery(id) : undefined));
        expect(d).toMatchObject({ attempts: 1, response_status: 302 });
        expect(d!.error).toMatch(/answered 302 \(redirects are not followed\)/);
        expect(redirecting.hits).toHaveLength(1);
        expect(target.hits).toHaveLength(0);
        const listed = ((await (await api.get('/dockerfiles/web/webhook')).json()) as Json).webhook
          .deliveries as Json[];
        expect(listed[0]).toMatchObject({ build: id, state: 'failed', responseStatus: 302 });
      } finally {
        await target.close();
        await redirecting.close();
      }
    });
  });
}

describe('webhook destinations on a site that allows no private address', () => {
  let w: TestWeb;
  let api: ApiClient;
  let hook: Awaited<ReturnType<typeof receiver>>;
  // rebind.test: a public address when the URL is saved, then this machine's loopback (DNS rebinding).
  let rebindTo = '93.184.216.34';
  const lookup = async (host: string) => {
    if (host === 'rebind.test') return [rebindTo];
    if (host === 'metadata.test') return ['93.184.216.34', '169.254.169.254'];
    throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  };

  beforeAll(async () => {
    hook = await receiver(() => ({ status: 204 }));
    w = await startTestWeb({ lookup });
    await w.client().signUp('carol');
    api = new ApiClient(w.url, await addToken(w, 'carol', ['read', 'build']));
    expect((await api.putDockerfile('app', DF2)).status).toBe(201);
  });
  afterAll(async () => {
    await w?.close();
    await hook?.close();
  });

  it('refuses, when saved, URLs that are not http(s), carry credentials, or lead to loopback, link-local, private or ULA addresses', async () => {
    const cases: Array<[string, number, RegExp]> = [
      [hook.url, 403, /127\.0\.0\.1, an address Kiln does not send to/],
      ['http://169.254.169.254/latest/meta-data/', 403, /169\.254\.169\.254/],
      ['http://10.1.2.3/hook', 403, /10\.1\.2\.3/],
      ['http://192.168.1.1/hook', 403, /192\.168\.1\.1/],
      ['http://[::1]:8080/hook', 403, /::1/],
      ['http://[fe80::1]/hook', 403, /fe80::1/],
      ['http://[fd00::1]/hook', 403, /fd00::1/],
      ['http://[::ffff:127.0.0.1]/hook', 403, /an address Kiln does not send to/],
      ['http://2130706433/hook', 403, /127\.0\.0\.1/],
      // One bad address among good ones is enough to refuse.
      ['http://metadata.test/hook', 403, /169\.254\.169\.254/],
      ['ftp://example.com/hook', 422, /http:\/\/ or https:\/\//],
      ['file:///etc/passwd', 422, /http:\/\/ or https:\/\//],
      ['http://user:secret@example.com/hook', 422, /must not hold a user or password/],
      ['http://nowhere.test/hook', 422, /does not resolve/],
      ['not a url', 422, /spaces or control characters|not a URL/],
    ];
    for (const [url, code, message] of cases) {
      const r = await api.post('/dockerfiles/app/webhook', { url });
      const body = (await r.json()) as Json;
      expect(`${url} ${r.status}`).toBe(`${url} ${code}`);
      expect(body.error.message).toMatch(message);
    }
    expect(await w.db('dockerfile_webhooks').count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it("the settings page refuses a private URL with the reason, stores nothing, and shows a new webhook's secret once", async () => {
    const erin = w.client();
    await erin.signUp('erin');
    const id = await erin.createDockerfile('site', DF2);
    const refused = await erin.postForm(`/dockerfiles/${id}/webhook`, {
      _csrf: await erin.token(`/dockerfiles/${id}`),
      url: 'http://169.254.169.254/latest/meta-data/',
    });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('169.254.169.254, an address Kiln does not send to');
    expect(await w.db('dockerfile_webhooks').where({ dockerfile_id: id }).first()).toBeUndefined();
    rebindTo = '93.184.216.34';
    const made = await erin.postForm(`/dockerfiles/${id}/webhook`, {
      _csrf: await erin.token(`/dockerfiles/${id}`),
      url: 'https://rebind.test/hook',
    });
    expect(made.status).toBe(201);
    expect(made.headers.get('cache-control')).toContain('no-store');
    const secret = /<code>([A-Za-z0-9_-]{43})<\/code>/.exec(await made.text())![1]!;
    const page = await (await erin.get(`/dockerfiles/${id}`)).text();
    expect(page).toContain('https://rebind.test/hook');
    expect(page).not.toContain(secret);
  });

  it('checks the address again at delivery: a name that now resolves to 127.0.0.1 fails the delivery, and nothing is sent', async () => {
    const port = hook.port;
    const r = await api.post('/dockerfiles/app/webhook', { url: `http://rebind.test:${port}/hook` });
    expect(r.status).toBe(201);
    rebindTo = '127.0.0.1';
    const b = await api.post('/builds', { dockerfile: 'app' });
    const id = ((await b.json()) as Json).build.id as number;
    await w.waitForBuild(id);
    const d = await until(async () => {
      const row = await w.db('webhook_deliveries').where({ build_id: id }).first<Json | undefined>();
      return row?.state === 'failed' ? row : undefined;
    });
    expect(d.error).toMatch(/rebind\.test is at 127\.0\.0\.1, an address Kiln does not send to/);
    expect(hook.hits).toHaveLength(0);
  });
});

describe('feeds are rate-limited like the API', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({ config: { api: { rateLimit: 2, rateWindowSeconds: 3600 } } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('past api.rateLimit a token gets 429 with Retry-After; requests without a token are counted per address', async () => {
    const dave = w.client();
    await dave.signUp('dave');
    const made = await dave.postForm('/account/feed-token', { _csrf: await dave.token('/account') });
    const token = /kfeed_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(await made.text())![0];
    const anon = w.client();
    expect((await anon.get(`/feeds/user.atom?token=${token}`)).status).toBe(200);
    expect((await anon.get(`/feeds/user.atom?token=${token}`)).status).toBe(200);
    const limited = await anon.get(`/feeds/user.atom?token=${token}`);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // Guessing tokens from one address runs into the same limit.
    const guesses = [];
    for (let i = 0; i < 3; i++) guesses.push((await anon.get(`/feeds/user.atom?token=guess${i}`)).status);
    expect(guesses).toEqual([404, 404, 429]);
  });
});
