import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByName } from '../../src/db/index.js';
import { addKeyOnPage, sshKeygen } from '../helpers/ssh-door.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { ApiClient, addToken, addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const PUBLIC = new Set([
  'GET /',
  'GET /login',
  'GET /register',
  'GET /api/csrf',
  'GET /.well-known/kiln-signing-key',
  'GET /healthz',
  'POST /login',
  'POST /api/login',
  'POST /register',
  'POST /api/register',
  'POST /logout',
  'POST /api/logout',
  'GET /api/v1/openapi.json',
  // Authenticated by the delivery's signature, not a session (test/web/git.test.ts: 401 unsigned, 202 unknown repo).
  'POST /api/v1/hooks/git',
  // Authenticated by the feed token in the URL, not a session: any failure is one 404 (test/web/following.test.ts:
  // another user's Dockerfile, wrong, rotated and revoked tokens).
  'GET /feeds/user.atom',
  'GET /feeds/dockerfiles/:id.atom',
]);

/** Routes whose success needs a specific body (the matrix sends a generic one): only the anonymous check applies. */
const BODY_SPECIFIC = new Set([
  'POST /account/password',
  'POST /api/account/password',
  'POST /admin/base-names',
  'POST /api/admin/base-names',
  // Deleting needs the Dockerfile's name typed as confirmation, the settings form every field (test/web/jobs.test.ts
  // runs both as owner and admin).
  'POST /dockerfiles/:id/delete',
  'POST /api/dockerfiles/:id/delete',
  'POST /dockerfiles/:id/job',
  // Deleting a backend job needs its name as confirmation (test/web/admin.test.ts).
  'POST /admin/jobs/:id/delete',
  'POST /api/admin/jobs/:id/delete',
  'POST /api/v1/admin/jobs/:id/delete',
  // A token needs a name and scopes (test/web/api-v1.test.ts); revoking one is the owner's (bob's try is checked).
  'POST /account/tokens',
  'POST /account/tokens/:id/revoke',
  // A new webhook secret needs a Dockerfile from git (test/web/git.test.ts).
  'POST /dockerfiles/:id/git/secret',
  // Adding needs a public key; deleting removes alice's key the first time (test/web/ssh-keys.test.ts).
  'POST /account/ssh-keys',
  'POST /account/ssh-keys/:id/delete',
  // A webhook needs a URL; a new secret needs a webhook (test/web/following.test.ts runs both).
  'POST /dockerfiles/:id/webhook',
  'POST /dockerfiles/:id/webhook/secret',
  'POST /api/v1/dockerfiles/:name/webhook',
  'POST /api/v1/dockerfiles/:name/webhook/secret',
]);
/**
 * The REST API names Dockerfiles by name among the caller's own: another user's token finds nothing (404), and so
 * does an admin's (an admin names their own Dockerfiles; others' they reach by build id).
 */
const BY_NAME = new Set([
  'GET /api/v1/dockerfiles/:name',
  'POST /api/v1/builds',
  'GET /api/v1/dockerfiles/:name/webhook',
  'POST /api/v1/dockerfiles/:name/webhook',
  'POST /api/v1/dockerfiles/:name/webhook/secret',
  'POST /api/v1/dockerfiles/:name/webhook/delete',
]);
/**
 * The admin console and the metrics: only an admin gets through; any other user gets 403 (checklist case 13),
 * whether or not it owns anything.
 */
const adminOnly = (p: string) => /^\/(?:api\/(?:v1\/)?)?admin(?:\/|$)|^\/metrics$/.test(p);

/**
 * Every route the app registers, replayed as anonymous, as another user, as the owner and as an admin. A new
 * route without an owner check (or without login) fails here without anyone writing a test for it.
 */
describe('authorization matrix over every route', () => {
  let w: TestWeb;
  let routes: Array<{ method: string; path: string }>;
  const who: Record<'anon' | 'bob' | 'alice' | 'admin', HttpClient> = {} as never;
  // The REST API's callers: the same users with tokens of every scope they may have (anonymous: none).
  const api: Record<'anon' | 'bob' | 'alice' | 'admin', ApiClient> = {} as never;
  let ids: { dockerfile: number; build: number; victim: number; sshKey: number; release: number };

  beforeAll(async () => {
    w = await startTestWeb();
    routes = w.routes();
    who.anon = w.client();
    who.alice = w.client();
    await who.alice.signUp('alice');
    who.bob = w.client();
    await who.bob.signUp('bob');
    const root = await addUser(w.db, 'root', 'admin');
    who.admin = w.client();
    await who.admin.login(root.username, root.password);
    const df = await who.alice.createDockerfile('mine', 'FROM debian:bookworm\nRUN true\n');
    const { id } = await who.alice.build(df);
    await w.waitForBuild(id);
    // The admin's user routes act on an account of its own (the matrix disables, promotes and demotes it).
    const victim = await addUser(w.db, 'victim', 'user');
    const keys = tempDir('kiln-matrix-keys-');
    await addKeyOnPage(who.alice, sshKeygen(keys.dir, 'alice', 'ed25519').pub);
    keys.cleanup();
    // A release of alice's build, for the release routes (a page form: promoting with the matrix's `name`).
    const promoted = await who.alice.postForm(`/builds/${id}/release`, {
      _csrf: await who.alice.token(`/builds/${id}`),
      name: 'matrix-v1',
    });
    expect(promoted.status).toBe(303);
    const release = Number(/\/releases\/(\d+)$/.exec(promoted.headers.get('location') ?? '')![1]);
    await until(
      async () => (await w.db('releases').where({ id: release }).first<{ state: string }>('state'))?.state === 'ready',
    );
    ids = {
      dockerfile: df,
      build: id,
      victim: (await findUserByName(w.db, victim.username))!.id,
      sshKey: (await w.db('user_ssh_keys').first<{ id: number }>('id'))!.id,
      release,
    };
    api.anon = new ApiClient(w.url);
    api.alice = new ApiClient(w.url, await addToken(w, 'alice', ['read', 'build']));
    api.bob = new ApiClient(w.url, await addToken(w, 'bob', ['read', 'build']));
    api.admin = new ApiClient(w.url, await addToken(w, 'root', ['read', 'build', 'admin']));
    // The REST API's Dockerfile (the page routes switch the other one's job off and on as they go).
    expect((await api.alice.putDockerfile('api-mine', 'FROM debian:bookworm\nRUN true\n')).status).toBe(201);
  });
  afterAll(async () => {
    await w?.close();
  });

  const fill = (p: string): string =>
    p
      .replace(/^(\/(?:api\/(?:v1\/)?)?admin\/users\/):id/, (_m, pre: string) => `${pre}${ids.victim}`)
      .replace(/^(\/(?:api\/(?:v1\/)?)?admin\/jobs\/):id/, (_m, pre: string) => `${pre}424242`)
      .replace(/^\/api\/v1\/dockerfiles\/:name/, '/api/v1/dockerfiles/api-mine')
      .replace(/^\/account\/ssh-keys\/:id/, () => `/account/ssh-keys/${ids.sshKey}`)
      .replace(/^(\/(?:api\/v1\/)?releases\/):id/, (_m, pre: string) => `${pre}${ids.release}`)
      .replace(/^\/dockerfiles\/:id/, () => `/dockerfiles/${ids.dockerfile}`)
      .replace(/^\/api\/dockerfiles\/:id/, () => `/api/dockerfiles/${ids.dockerfile}`)
      .replace(/:id/, () => String(ids.build))
      .replace(/:n\b/, '0')
      .replace(/:name/, 'image.raw');

  async function call(
    u: 'anon' | 'bob' | 'alice' | 'admin',
    method: string,
    path: string,
    n: number,
  ): Promise<Response> {
    const c = who[u];
    if (path.startsWith('/api/v1/')) {
      const v1 = api[u];
      const p = path.slice('/api/v1'.length);
      if (method === 'GET') return v1.get(p);
      // Creating by name makes the caller's own Dockerfile: a fresh name, so no later route finds it instead of alice's.
      if (method === 'PUT') return v1.putDockerfile(`put-${n}`, 'FROM debian:bookworm\n');
      if (p === '/builds') return v1.post(p, { dockerfile: 'api-mine' });
      if (p === '/admin/users') return v1.post(p, { username: `matrix${n}` });
      // Promoting takes a release name (a fresh one each time: a name is never given to another build).
      if (p.endsWith('/release')) return v1.post(p, { name: `m${n}` });
      // A webhook takes a URL (checked before the handler finds the Dockerfile: send a well-formed one).
      if (p.endsWith('/webhook')) return v1.post(p, { url: 'http://127.0.0.1:9/hook' });
      return v1.post(p, {});
    }
    if (method === 'GET') return c.get(path + (path.endsWith('/log') ? '?offset=0' : ''));
    const token = await c.apiToken();
    return c.postJson(
      path,
      { key: `matrix-key-${n}-${Date.now()}`, name: `m${n}`, content: 'FROM debian:bookworm\n' },
      { 'x-csrf-token': token },
    );
  }

  it('knows the routes (sanity)', () => {
    const keys = routes.map((r) => `${r.method} ${r.path}`);
    expect(keys).toEqual(
      expect.arrayContaining([
        'GET /dockerfiles/:id',
        'GET /builds/:id/artifacts/:name',
        'POST /dockerfiles/:id/builds',
        'GET /api/builds/:id/log',
        'GET /admin/base-names',
        'POST /api/admin/base-names/:id/delete',
        'POST /dockerfiles/:id/job',
        'POST /dockerfiles/:id/job/disable',
        'POST /api/dockerfiles/:id/job/enable',
        'GET /api/dockerfiles/:id/job',
        'GET /dockerfiles/:id/delete',
        'POST /api/dockerfiles/:id/delete',
        // Following builds: lists, the live stream, the documents of a build.
        'GET /builds',
        'GET /api/builds',
        'GET /dockerfiles/:id/builds',
        'GET /api/builds/:id/events',
        'GET /builds/:id/manifest',
        'GET /api/builds/:id/sbom',
        'GET /builds/:id/boot/:n',
        'GET /builds/:id/diff',
        'GET /api/builds/:id/report',
        // The admin console and operations.
        'GET /admin/users',
        'POST /api/admin/users/:id/disable',
        'GET /admin/jobs',
        'POST /admin/jobs/:id/delete',
        'GET /admin/queue',
        'POST /api/admin/queue/:id/cancel',
        'GET /admin/health',
        'GET /api/admin/audit',
        'GET /metrics',
        'GET /healthz',
        // API tokens and the REST API.
        'POST /account/tokens',
        'POST /account/tokens/:id/revoke',
        'PUT /api/v1/dockerfiles/:name',
        'POST /api/v1/builds',
        'GET /api/v1/builds/:id',
        'GET /api/v1/builds/:id/events',
        'GET /api/v1/builds/:id/artifacts/:name',
        'POST /api/v1/admin/users/:id/disable',
        'GET /api/v1/admin/queue',
        'POST /account/ssh-keys/:id/delete',
        // Releases and pins.
        'POST /builds/:id/release',
        'POST /builds/:id/pin',
        'POST /builds/:id/unpin',
        'GET /releases/:id',
        'GET /releases/:id/files/:name',
        'POST /api/v1/builds/:id/release',
        'POST /api/v1/builds/:id/pin',
        'GET /api/v1/releases',
        'GET /api/v1/releases/:id',
        'GET /api/v1/releases/:id/files/:name',
        // Following: feeds, feed tokens, webhooks.
        'GET /feeds/user.atom',
        'GET /feeds/dockerfiles/:id.atom',
        'POST /account/feed-token',
        'POST /account/feed-token/revoke',
        'POST /dockerfiles/:id/webhook',
        'POST /dockerfiles/:id/webhook/delete',
        'GET /api/v1/dockerfiles/:name/webhook',
        'POST /api/v1/dockerfiles/:name/webhook/delete',
      ]),
    );
    expect(routes.length).toBeGreaterThan(20);
  });

  it('case 12, case 13: anonymous reaches only public routes; another user gets 404 on every owned object; owner and admin get through; admin routes let only admins through (403 for users)', async () => {
    let n = 0;
    const problems: string[] = [];
    const owned = (p: string, key: string) => p.includes(':id') || BY_NAME.has(key);
    for (const r of routes) {
      const key = `${r.method} ${r.path}`;
      if (PUBLIC.has(key)) continue;
      const path = fill(r.path);
      const anon = await call('anon', r.method, path, n++);
      const anonOk = r.path.startsWith('/api/')
        ? anon.status === 401
        : (anon.status === 303 && (anon.headers.get('location') ?? '').startsWith('/login')) || anon.status === 401;
      if (!anonOk) problems.push(`anon ${key} -> ${anon.status}`);
      if (adminOnly(r.path)) {
        for (const u of ['alice', 'bob'] as const) {
          const res = await call(u, r.method, path, n++);
          if (res.status !== 403) problems.push(`${u} ${key} -> ${res.status}`);
        }
        const res = await call('admin', r.method, path, n++);
        if (res.status >= (BODY_SPECIFIC.has(key) ? 500 : 400))
          problems.push(`admin ${key} -> ${res.status}: ${(await res.text()).slice(0, 120)}`);
        continue;
      }
      if (owned(r.path, key)) {
        const before = Number((await w.db('builds').count({ n: '*' }))[0]!.n);
        const bob = await call('bob', r.method, path, n++);
        if (bob.status !== 404) problems.push(`bob ${key} -> ${bob.status}`);
        if (Number((await w.db('builds').count({ n: '*' }))[0]!.n) !== before)
          problems.push(`bob ${key} changed builds`);
      }
      if (BODY_SPECIFIC.has(key)) continue;
      for (const u of ['alice', 'admin'] as const) {
        const res = await call(u, r.method, path, n++);
        if (u === 'admin' && BY_NAME.has(key)) {
          if (res.status !== 404) problems.push(`admin ${key} -> ${res.status} (names are per owner)`);
        } else if (res.status >= 400)
          problems.push(`${u} ${key} -> ${res.status}: ${(await res.text()).slice(0, 120)}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
