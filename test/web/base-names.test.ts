import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { MAX_BASE_NAMES } from '../../src/protocol/index.js';
import { addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

/**
 * The site admin's base names over HTTP (pages and JSON API, real app and SQLite, the real glue in-process): who may set
 * them, what is refused, that saving a Dockerfile honours them and that builds carry them to the glue.
 */
describe('site base names (admin page and API)', () => {
  let w: TestWeb & { local: InProcessGlue };
  let admin: HttpClient;
  let alice: HttpClient;

  beforeAll(async () => {
    w = await startTestWeb();
    const root = await addUser(w.db, 'root', 'admin');
    admin = w.client();
    await admin.login(root.username, root.password);
    alice = w.client();
    await alice.signUp('alice');
  });
  afterAll(async () => {
    await w?.close();
  });

  const api = async (c: HttpClient, path: string, body: unknown) =>
    c.postJson(path, body, { 'x-csrf-token': await c.apiToken() });
  const rows = async () =>
    (await w.db('base_names').orderBy('name')).map((r: { name: string; base: string }) => `${r.name}=${r.base}`);
  const saveDockerfile = (c: HttpClient, name: string, content: string) =>
    api(c, '/api/dockerfiles', { name, content });

  it('a Dockerfile FROM a name nobody mapped is refused on save, with every accepted name listed', async () => {
    const r = await saveDockerfile(alice, 'corp', 'FROM registry.example.com/base/debian:12\nRUN true\n');
    expect(r.status).toBe(422);
    const body = (await r.json()) as { error: { code: string; findings: { line: number; message: string }[] } };
    expect(body.error.code).toBe('policy_violation');
    expect(body.error.findings[0]!.message).toContain(
      'FROM registry.example.com/base/debian:12 is not an allowed base image; allowed: debian:bookworm (or debian:12, debian:oldstable)',
    );
    // The shipped names work with no admin action.
    expect((await saveDockerfile(alice, 'plain', 'FROM debian:12\nRUN true\n')).status).toBe(201);
  });

  it("an admin maps a name (API), idempotently; a user's Dockerfile using it is then saved, and its builds carry the mapping to the glue", async () => {
    const r1 = await api(admin, '/api/admin/base-names', {
      name: 'registry.example.com/base/debian:12',
      base: 'debian:bookworm',
    });
    expect(r1.status).toBe(201);
    const m = ((await r1.json()) as { mapping: { id: number; name: string; base: string } }).mapping;
    expect(m).toMatchObject({ name: 'registry.example.com/base/debian:12', base: 'debian:bookworm' });
    const r2 = await api(admin, '/api/admin/base-names', {
      name: 'registry.example.com/base/debian:12',
      base: 'debian:bookworm',
    });
    expect(r2.status).toBe(200);
    expect(await rows()).toEqual(['registry.example.com/base/debian:12=debian:bookworm']);

    const saved = await saveDockerfile(alice, 'corp', 'FROM registry.example.com/base/debian:12.4\nRUN true\n');
    expect(saved.status).toBe(201);
    const id = ((await saved.json()) as { dockerfile: { id: number } }).dockerfile.id;
    const { id: buildId } = await alice.build(id);
    await w.waitForBuild(buildId, (b) => b.backend_build !== null);
    const spec = JSON.parse(
      readFileSync(path.join(w.local.dataDir, `glue/jobs/kiln-job-${id}/config.json`), 'utf8'),
    ) as { baseNames?: unknown };
    expect(spec.baseNames).toEqual([{ name: 'registry.example.com/base/debian:12', base: 'debian:bookworm' }]);
  });

  it('names are stored as the engine resolves them, and remapping replaces the row', async () => {
    expect(
      (await api(admin, '/api/admin/base-names', { name: 'docker.io/library/debian:stable', base: 'debian:bookworm' }))
        .status,
    ).toBe(201);
    expect(
      (await api(admin, '/api/admin/base-names', { name: 'debian:stable', base: 'debian:bookworm-slim' })).status,
    ).toBe(200);
    expect(await rows()).toContain('debian:stable=debian:bookworm-slim');
    const list = (await (await admin.get('/api/admin/base-names')).json()) as {
      mappings: { name: string }[];
      bases: string[];
      defaults: { name: string }[];
      accepted: string;
    };
    expect(list.mappings.map((x) => x.name)).toEqual(['debian:stable', 'registry.example.com/base/debian:12']);
    expect(list.bases).toEqual(w.config.sdk.bases);
    expect(list.defaults.map((d) => d.name)).toContain('debian:12');
    // The site's mapping wins over the build host's default for the same name.
    expect(list.accepted).toContain('debian:bookworm-slim (or debian:12-slim, debian:oldstable-slim, debian:stable)');
  });

  it.each([
    [
      { name: 'corp/debian:unstable', base: 'debian:sid' },
      'debian:sid is not an allowed base (sdk.bases: debian:bookworm, debian:trixie, debian:bookworm-slim, debian:trixie-slim)',
    ],
    [{ name: 'corp/x', base: 'docker.io/library/alpine' }, 'is not an allowed base'],
    [{ name: `debian:12@sha256:${'a'.repeat(64)}`, base: 'debian:bookworm' }, 'no digest'],
    [{ name: 'debian:trixie', base: 'debian:bookworm' }, 'debian:trixie is an allowed base itself'],
    [{ name: 'docker.io/library/debian:bookworm', base: 'debian:trixie' }, 'is an allowed base itself'],
    [{ name: 'Corp/Debian:12', base: 'debian:bookworm' }, 'is not an image name the engine would accept'],
    [{ name: 'scratch', base: 'debian:bookworm' }, 'is not an image name'],
    [{ name: '<script>alert(1)</script>', base: 'debian:bookworm' }, 'must be an image name'],
    [{ name: 'x y', base: 'debian:bookworm' }, 'must be an image name'],
    [{ name: 'corp/x', base: ['debian:bookworm'] }, 'base is required'],
    [{ base: 'debian:bookworm' }, 'name is required'],
    [{ name: 'a'.repeat(300), base: 'debian:bookworm' }, ''],
  ])('refuses %j with 422 and stores nothing', async (body, message) => {
    const before = await rows();
    const r = await api(admin, '/api/admin/base-names', body);
    expect(r.status).toBe(422);
    const e = ((await r.json()) as { error: { code: string; message: string } }).error;
    expect(e.code).toBe('invalid_input');
    expect(e.message).toContain(message);
    expect(await rows()).toEqual(before);
  });

  it('the admin page lists, adds (form with CSRF token) and removes; a refusal re-renders the form with the message', async () => {
    const page = await (await admin.get('/admin/base-names')).text();
    expect(page).toContain('registry.example.com/base/debian:12');
    expect(page).toContain('<option value="debian:trixie-slim"');
    const token = await admin.token('/admin/base-names');
    const add = await admin.postForm('/admin/base-names', {
      _csrf: token,
      name: 'ghcr.io/corp/trixie',
      base: 'debian:trixie',
    });
    expect(add.status, await add.clone().text()).toBe(303);
    expect(add.headers.get('location')).toBe('/admin/base-names');
    // No tag means `latest`, as the engine reads it.
    expect(await rows()).toContain('ghcr.io/corp/trixie:latest=debian:trixie');
    const bad = await admin.postForm('/admin/base-names', { _csrf: token, name: 'corp/"><b>x', base: 'debian:trixie' });
    expect(bad.status).toBe(422);
    const html = await bad.text();
    expect(html).toContain('role="alert"');
    expect(html).toContain('value="corp/&quot;&gt;&lt;b&gt;x"');
    expect(html).not.toContain('"><b>x');
    const id = (await w.db('base_names').where({ name: 'ghcr.io/corp/trixie:latest' }).first()).id as number;
    expect((await admin.postForm(`/admin/base-names/${id}/delete`, { _csrf: token })).status).toBe(303);
    expect(await rows()).not.toContain('ghcr.io/corp/trixie:latest=debian:trixie');
    // Removing it again is no error.
    expect(await (await api(admin, `/api/admin/base-names/${id}/delete`, {})).json()).toEqual({ removed: false });
    // Without the CSRF token nothing changes.
    const noToken = await admin.postForm('/admin/base-names', { name: 'ghcr.io/corp/other', base: 'debian:trixie' });
    expect(noToken.status).toBe(403);
    expect(
      (await admin.postJson('/api/admin/base-names', { name: 'ghcr.io/corp/other', base: 'debian:trixie' })).status,
    ).toBe(403);
    expect((await rows()).join()).not.toContain('ghcr.io/corp/other');
  });

  it('case 13: a non-admin gets 403 on every admin page and admin API route, anonymous is sent to log in; nothing changes', async () => {
    const before = await rows();
    const anon = w.client();
    const id = (await w.db('base_names').first()).id as number;
    const routes: [string, string][] = [
      ['GET', '/admin/base-names'],
      ['POST', '/admin/base-names'],
      ['POST', `/admin/base-names/${id}/delete`],
      ['GET', '/api/admin/base-names'],
      ['POST', '/api/admin/base-names'],
      ['POST', `/api/admin/base-names/${id}/delete`],
    ];
    for (const [method, path] of routes) {
      const body = { name: 'evil/debian:12', base: 'debian:bookworm', role: 'admin' };
      const as = async (c: HttpClient) => (method === 'GET' ? c.get(path) : api(c, path, body));
      expect((await as(alice)).status, `alice ${method} ${path}`).toBe(403);
      const a = await as(anon);
      expect(
        path.startsWith('/api/') || method === 'POST' ? a.status : a.status === 303 && a.headers.get('location'),
        `anon ${method} ${path}`,
      ).toBe(path.startsWith('/api/') || method === 'POST' ? 401 : `/login?next=${encodeURIComponent(path)}`);
    }
    expect(await rows()).toEqual(before);
    expect(await (await alice.get('/dockerfiles')).text()).not.toContain('/admin/base-names');
  });

  it('a mapping removed is no longer accepted on save', async () => {
    const id = (await w.db('base_names').where({ name: 'registry.example.com/base/debian:12' }).first()).id as number;
    expect(await (await api(admin, `/api/admin/base-names/${id}/delete`, {})).json()).toEqual({ removed: true });
    expect((await saveDockerfile(alice, 'corp2', 'FROM registry.example.com/base/debian:12\n')).status).toBe(422);
  });

  it(`holds at most ${MAX_BASE_NAMES} names (what a job spec may carry); changing one at the limit still works`, async () => {
    const have = Number((await w.db('base_names').count({ n: '*' }))[0]!.n);
    const now = new Date().toISOString();
    await w.db('base_names').insert(
      Array.from({ length: MAX_BASE_NAMES - have }, (_, i) => ({
        name: `fill/n${i}:1`,
        base: 'debian:bookworm',
        created_at: now,
        updated_at: now,
      })),
    );
    const over = await api(admin, '/api/admin/base-names', { name: 'fill/one-more:1', base: 'debian:bookworm' });
    expect(over.status).toBe(409);
    expect((await api(admin, '/api/admin/base-names', { name: 'fill/n0:1', base: 'debian:trixie' })).status).toBe(200);
    expect(Number((await w.db('base_names').count({ n: '*' }))[0]!.n)).toBe(MAX_BASE_NAMES);
    await w.db('base_names').where('name', 'like', 'fill/%').del();
  });
});
