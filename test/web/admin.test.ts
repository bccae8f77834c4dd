/**
 * The admin console over HTTP, with the real glue in-process (local backend, fake SDK) and the task worker running
 * beside the web as in `kiln web`: users (approval, disable/enable, roles, never the last admin), the backend's
 * jobs (including jobs Kiln did not create), the queue, health, the audit log, /healthz and /metrics.
 */
import { existsSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/web/index.js';
import { createDb, findUserByName, migrateLatest } from '../../src/db/index.js';
import { jobSpecSchema } from '../../src/protocol/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { dockerSocketPath, probeDockerEngine } from '../../src/shared/docker-engine.js';
import { addUser, startTestWeb, HttpClient, type TestWeb } from '../helpers/web.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';

const PW = 'correct horse battery staple';
type Json = Record<string, unknown>;
const json = async (r: Response): Promise<Json> => (await r.json()) as Json;

async function post(c: HttpClient, p: string, body: Json = {}): Promise<Response> {
  return c.postJson(p, body, { 'x-csrf-token': await c.apiToken() });
}
async function audit(c: HttpClient): Promise<Array<Json>> {
  return (await json(await c.get('/api/admin/audit'))).entries as Json[];
}

describe('admin console', () => {
  let w: TestWeb & { local: InProcessGlue };
  let admin: HttpClient;
  let root: { username: string; password: string };

  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { registrationApproval: true } } });
    root = await addUser(w.db, 'root', 'admin');
    admin = w.client();
    expect((await admin.login(root.username, root.password)).status).toBe(303);
  });
  afterAll(async () => {
    await w?.close();
  });

  /** A user who registered, was approved by the admin and logged in. */
  async function approvedUser(name: string): Promise<HttpClient> {
    const c = w.client();
    await c.register(name, PW);
    await post(admin, `/api/admin/users/${(await findUserByName(w.db, name))!.id}/approve`);
    expect((await c.login(name, PW)).status).toBe(303);
    return c;
  }

  it('registration awaiting approval: the account cannot log in and is told why (only with its right password); once approved it can', async () => {
    const carol = w.client();
    const reg = await carol.register('carol', PW);
    expect(reg.status).toBe(201);
    expect(await reg.text()).toContain('An admin has to approve it');
    expect((await findUserByName(w.db, 'carol'))?.approved).toBe(false);
    const wrong = await carol.login('carol', 'wrong password entirely');
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).not.toContain('approve');
    const early = await carol.login('carol', PW);
    expect(early.status).toBe(403);
    expect(await early.text()).toContain('waiting for an admin to approve it');
    const api = w.client();
    const apiLogin = await post(api, '/api/login', { username: 'carol', password: PW });
    expect(apiLogin.status).toBe(403);
    expect(((await json(apiLogin)).error as Json).message).toMatch(/waiting for an admin/);
    expect(await (await api.get('/api/me')).status).toBe(401);

    const users = (await json(await admin.get('/api/admin/users'))).users as Json[];
    const row = users.find((u) => u.username === 'carol')!;
    expect(row).toMatchObject({ approved: false, disabled: false, role: 'user' });
    expect(row).not.toHaveProperty('password_hash');
    const page = await (await admin.get('/admin/users')).text();
    expect(page).toContain('awaiting approval');
    const t = await admin.token('/admin/users');
    const ok = await admin.postForm(`/admin/users/${row.id as number}/approve`, { _csrf: t });
    expect(ok.status).toBe(303);
    expect((await carol.login('carol', PW)).status).toBe(303);
    expect((await carol.get('/api/me')).status).toBe(200);
    const entry = (await audit(admin)).find((e) => e.action === 'user.approve')!;
    expect(entry).toMatchObject({
      actor: 'user:root',
      target: `user:${row.id as number}`,
      address: expect.stringMatching(/127\.0\.0\.1/),
    });
    expect(entry.at).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('disabling a user ends their sessions at once; enabling lets them log in again', async () => {
    const dave = w.client();
    await dave.register('dave', PW);
    const id = (await findUserByName(w.db, 'dave'))!.id;
    await post(admin, `/api/admin/users/${id}/approve`);
    expect((await dave.login('dave', PW)).status).toBe(303);
    const second = w.client();
    expect((await second.login('dave', PW)).status).toBe(303);
    expect((await dave.get('/api/me')).status).toBe(200);
    const r = await post(admin, `/api/admin/users/${id}/disable`);
    expect(r.status).toBe(200);
    expect(((await json(r)).user as Json).disabled).toBe(true);
    for (const c of [dave, second]) {
      expect((await c.get('/api/me')).status).toBe(401);
      expect((await c.get('/dockerfiles')).headers.get('location')).toMatch(/^\/login/);
    }
    expect((await dave.login('dave', PW)).status).toBe(401);
    expect((await post(admin, `/api/admin/users/${id}/enable`)).status).toBe(200);
    expect((await dave.login('dave', PW)).status).toBe(303);
    const actions = (await audit(admin)).filter((e) => e.target === `user:${id}`).map((e) => e.action);
    expect(actions).toEqual(['user.enable', 'user.disable', 'user.approve']);
  });

  it('promote and demote take effect at the next request; the last admin can be neither demoted nor disabled', async () => {
    const rootId = (await findUserByName(w.db, 'root'))!.id;
    const demoteSelf = await post(admin, `/api/admin/users/${rootId}/demote`);
    expect(demoteSelf.status).toBe(409);
    expect(((await json(demoteSelf)).error as Json).message).toMatch(/last admin/);
    expect((await post(admin, `/api/admin/users/${rootId}/disable`)).status).toBe(409);
    // the page says so too, and nothing changed or was logged
    const t = await admin.token('/admin/users');
    const page = await admin.postForm(`/admin/users/${rootId}/disable`, { _csrf: t });
    expect(page.status).toBe(409);
    expect(await page.text()).toContain('is the last admin');
    expect(await findUserByName(w.db, 'root')).toMatchObject({ role: 'admin', disabled: false });
    expect((await audit(admin)).filter((e) => e.target === `user:${rootId}`)).toEqual([]);

    const erin = w.client();
    await erin.register('erin', PW);
    const erinId = (await findUserByName(w.db, 'erin'))!.id;
    await post(admin, `/api/admin/users/${erinId}/approve`);
    await erin.login('erin', PW);
    expect((await erin.get('/admin/users')).status).toBe(403);
    expect((await post(admin, `/api/admin/users/${erinId}/promote`)).status).toBe(200);
    expect((await erin.get('/admin/users')).status).toBe(200);
    // two admins now: root may step down, and then erin is the last one
    expect((await post(erin, `/api/admin/users/${rootId}/demote`)).status).toBe(200);
    expect((await admin.get('/admin/users')).status).toBe(403);
    expect((await post(erin, `/api/admin/users/${erinId}/demote`)).status).toBe(409);
    expect((await post(erin, `/api/admin/users/${rootId}/promote`)).status).toBe(200);
    expect((await admin.get('/admin/users')).status).toBe(200);
  });

  it('jobs: every job the glue reports, including ones Kiln did not create; enable, disable and a confirmed delete go through the worker', async () => {
    const alice = await approvedUser('alice');
    const df = await alice.createDockerfile('web', 'FROM debian:bookworm\nRUN true\n');
    await w.waitForBuild((await alice.build(df)).id);
    // Made in the backend directly, not by this Kiln: a Kiln-named job no Dockerfile has, and a job of another name.
    await w.local.backend.putJob(
      990,
      jobSpecSchema.parse({ owner: 'someone else', name: 'made-by-hand', dockerfile: 'FROM debian:bookworm\n' }),
    );
    mkdirSync(path.join(w.local.dataDir, 'glue', 'jobs', 'nightly-docs'), { recursive: true });

    const jobs = (await json(await admin.get('/api/admin/jobs'))).jobs as Json[];
    expect(jobs.map((j) => j.backendName)).toEqual(
      expect.arrayContaining([`kiln-job-${df}`, 'kiln-job-990', 'nightly-docs']),
    );
    expect(jobs.find((j) => j.job === df)).toMatchObject({
      enabled: true,
      dockerfile: { id: df, name: 'web', owner: 'alice' },
    });
    expect(jobs.find((j) => j.job === 990)).toMatchObject({ enabled: true, dockerfile: null });
    expect(jobs.find((j) => j.backendName === 'nightly-docs')).not.toHaveProperty('job');
    const page = await (await admin.get('/admin/jobs')).text();
    expect(page).toContain('not created by this Kiln');
    expect(page).toContain('nightly-docs');

    const isEnabled = async (job: number) =>
      (await w.glue.call('jobs.list', [])).jobs.find((j) => j.job === job)?.enabled;
    const r = await post(admin, '/api/admin/jobs/990/disable');
    expect(r.status).toBe(202);
    await until(async () => (await isEnabled(990)) === false);
    expect((await post(admin, '/api/admin/jobs/990/enable')).status).toBe(202);
    await until(async () => (await isEnabled(990)) === true);

    // Delete: refused without the job's name as confirmation (nothing queued, nothing logged), then done.
    const before = (await audit(admin)).length;
    const unconfirmed = await post(admin, '/api/admin/jobs/990/delete', { confirm: 'yes' });
    expect(unconfirmed.status).toBe(422);
    expect((await audit(admin)).length).toBe(before);
    const confirmPage = await admin.get('/admin/jobs/990/delete');
    expect(await confirmPage.text()).toContain("Type the job's name");
    const t = await admin.token('/admin/jobs/990/delete');
    const formNo = await admin.postForm('/admin/jobs/990/delete', { _csrf: t, confirm: 'kiln-job-99' });
    expect(formNo.status).toBe(422);
    const formYes = await admin.postForm('/admin/jobs/990/delete', { _csrf: t, confirm: 'kiln-job-990' });
    expect(formYes.status).toBe(303);
    await until(async () => !(await w.glue.call('jobs.list', [])).jobs.some((j) => j.job === 990));
    const log = (await audit(admin)).filter((e) => e.target === 'job:990').map((e) => e.action);
    expect(log).toEqual(['job.delete', 'job.enable', 'job.disable']);
    // Alice's job is her Dockerfile's: disabling it flips her switch (her page agrees, no drift), audited; it is
    // deleted with her Dockerfile, not from here.
    expect((await post(admin, `/api/admin/jobs/${df}/disable`)).status).toBe(202);
    await until(async () => (await isEnabled(df)) === false);
    const status = await json(await alice.get(`/api/dockerfiles/${df}/job`));
    expect(status.job).toMatchObject({ settings: { enabled: false }, drift: [] });
    expect((await audit(admin)).find((e) => e.target === `job:${df}`)).toMatchObject({
      action: 'job.disable',
      actor: 'user:root',
    });
    const refused = await post(admin, `/api/admin/jobs/${df}/delete`, { confirm: `kiln-job-${df}` });
    expect(refused.status).toBe(409);
    expect(((await json(refused)).error as Json).message).toMatch(/delete the Dockerfile/);
    expect(await isEnabled(df)).toBe(false);
    // A non-Kiln name is not an id: the glue is never asked to act on it.
    expect((await post(admin, '/api/admin/jobs/nightly-docs/disable')).status).toBe(404);
  });

  it('a job change the glue keeps refusing ends visibly on the jobs page', async () => {
    w.local.down = true;
    try {
      expect((await post(admin, '/api/admin/jobs/991/disable')).status).toBe(202);
      await until(
        async () =>
          await w.db('tasks').where({ kind: 'job.control', subject: 'job:991:disable', state: 'failed' }).first(),
      );
    } finally {
      w.local.down = false;
    }
    await w.local.backend.putJob(
      991,
      jobSpecSchema.parse({ owner: 'x', name: 'y', dockerfile: 'FROM debian:bookworm\n' }),
    );
    const j = ((await json(await admin.get('/api/admin/jobs'))).jobs as Json[]).find((x) => x.job === 991)!;
    expect(j.failed).toMatchObject({ op: 'disable', error: expect.stringContaining('backend_unavailable') });
  }, 120_000);

  it("the queue lists every owner's unfinished builds; an admin cancels any of them (audited)", async () => {
    const bob = await approvedUser('bob');
    const df = await bob.createDockerfile('held', 'FROM debian:bookworm\n# fake: gate admin-queue\nRUN true\n');
    const { id } = await bob.build(df);
    await w.waitForBuild(id, (b) => b.state === 'running');
    const q = await json(await admin.get('/api/admin/queue'));
    expect((q.builds as Json[]).find((b) => b.id === id)).toMatchObject({
      owner: 'bob',
      dockerfile: 'held',
      state: 'running',
    });
    expect(q.backend).toEqual(expect.any(Array));
    expect(await (await admin.get('/admin/queue')).text()).toContain(`/admin/queue/${id}/cancel`);
    const t = await admin.token('/admin/queue');
    expect((await admin.postForm(`/admin/queue/${id}/cancel`, { _csrf: t })).status).toBe(303);
    expect((await w.waitForBuild(id)).state).toBe('cancelled');
    expect((await audit(admin)).find((e) => e.target === `build:${id}`)).toMatchObject({
      action: 'build.cancel',
      actor: 'user:root',
    });
    // the owner cancelling their own build is not an admin action
    const { id: own } = await bob.build(df);
    await w.waitForBuild(own, (b) => b.state === 'running');
    expect((await post(bob, `/api/builds/${own}/cancel`)).status).toBeLessThan(300);
    await w.waitForBuild(own);
    expect((await audit(admin)).find((e) => e.target === `build:${own}`)).toBeUndefined();
    w.local.openGate('admin-queue');
  });

  it("health: the glue reachable, the backend's kind and version, the Docker engine, free space in the data directory", async () => {
    const h = await json(await admin.get('/api/admin/health'));
    expect(h.glue).toMatchObject({ reachable: true, latencyMs: expect.any(Number) });
    expect(h.backend).toMatchObject({
      kind: 'local',
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      reachable: true,
    });
    // The engine the fake SDK's machine has (the shared dockerd): reachable with its version; else a reason.
    if (existsSync(dockerSocketPath()))
      expect(h.docker).toMatchObject({
        reachable: true,
        version: expect.stringMatching(/^\d+\./),
        apiVersion: expect.any(String),
      });
    else expect(h.docker).toMatchObject({ reachable: false, error: expect.any(String) });
    expect((h.disk as Json).freeBytes).toBeGreaterThan(0);
    expect((h.disk as Json).totalBytes).toBeGreaterThanOrEqual((h.disk as Json).freeBytes as number);
    expect(h.database).toMatchObject({ client: 'SQLite', reachable: true });
    const page = await (await admin.get('/admin/health')).text();
    expect(page).toMatch(/free of/);
    w.local.down = true;
    try {
      const down = await json(await admin.get('/api/admin/health'));
      expect(down.glue).toMatchObject({ reachable: false, error: expect.stringMatching(/unreachable/) });
      expect(await (await admin.get('/admin/health')).text()).toContain('down');
    } finally {
      w.local.down = false;
    }
  });

  it('case 13: a non-admin gets 403 on every admin page and admin API route; role, is_admin or approved in any body (register, account, API) are ignored', async () => {
    const mal = w.client();
    const elevate = { role: 'admin', is_admin: true, isAdmin: true, admin: '1', approved: true, disabled: false };
    const t = await mal.token('/register');
    expect(
      (
        await mal.postForm('/register', {
          _csrf: t,
          username: 'mal',
          password: PW,
          password2: PW,
          role: 'admin',
          is_admin: 'true',
          approved: 'true',
        })
      ).status,
    ).toBe(201);
    const api = w.client();
    const reg = await post(api, '/api/register', { username: 'mal2', password: PW, ...elevate });
    expect(reg.status).toBe(201);
    expect((await json(reg)).user).toMatchObject({ role: 'user', approved: false });
    for (const name of ['mal', 'mal2'])
      expect(await findUserByName(w.db, name)).toMatchObject({ role: 'user', approved: false, disabled: false });
    // still waiting: the body's `approved` did not let it in
    expect((await mal.login('mal', PW)).status).toBe(403);
    const malId = (await findUserByName(w.db, 'mal'))!.id;
    await post(admin, `/api/admin/users/${malId}/approve`);
    expect((await mal.login('mal', PW, '/admin/users')).headers.get('location')).toBe('/admin/users');
    const routes = w.routes().filter((r) => /^\/(?:api\/)?admin(?:\/|$)|^\/metrics$/.test(r.path));
    expect(routes.length).toBeGreaterThan(30);
    const refused: string[] = [];
    for (const r of routes) {
      const p = r.path.replace(':id', String(malId));
      const res =
        r.method === 'GET' ? await mal.get(p) : await post(mal, p, { ...elevate, confirm: `kiln-job-${malId}` });
      if (res.status !== 403) refused.push(`${r.method} ${p} -> ${res.status}`);
    }
    expect(refused).toEqual([]);
    // the account routes take no role either
    const pw = await post(mal, '/api/account/password', { current: PW, password: `${PW}!`, ...elevate });
    expect(pw.status).toBe(200);
    expect(await findUserByName(w.db, 'mal')).toMatchObject({ role: 'user' });
    expect((await json(await mal.get('/api/me'))).user).toMatchObject({ role: 'user' });
    expect((await audit(admin)).filter((e) => e.target === `user:${malId}`).map((e) => e.action)).toEqual([
      'user.approve',
    ]);
  });

  it('the Docker engine probe says why an engine cannot be reached', async () => {
    const h = await probeDockerEngine(path.join(w.dir, 'no-such.sock'));
    expect(h).toEqual({ reachable: false, error: expect.stringContaining('ENOENT') });
  });

  it('/healthz answers load balancers without a login or secrets: 200 while the database answers, 503 when it does not', async () => {
    const anon = w.client();
    const r = await anon.get('/healthz');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'ok' });
    expect(r.headers.getSetCookie()).toEqual([]);
    // an instance whose database is gone
    const db = createDb({ client: 'sqlite', filename: path.join(w.dir, 'gone.sqlite') });
    await migrateLatest(db);
    const app = createApp({ config: w.config, db, glue: w.glue, logger: silentLogger, sessionSecret: 'x'.repeat(32) });
    const server = http.createServer(app).listen(0, '127.0.0.1');
    await new Promise((res) => server.once('listening', res));
    try {
      const port = (server.address() as AddressInfo).port;
      app.setListenPort(port);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      await db.destroy();
      const down = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(down.status).toBe(503);
      expect(await down.json()).toEqual({ status: 'unavailable' });
    } finally {
      server.close();
      await app.closeApp();
    }
  });

  it('/metrics: builds by state, queue depth and wait, glue call and HTTP latency histograms; admins only', async () => {
    const res = await admin.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^kiln_builds\{state="succeeded"\} [1-9]/m);
    expect(text).toMatch(/^kiln_builds\{state="cancelled"\} [1-9]/m);
    expect(text).toMatch(/^kiln_queue_depth \d+$/m);
    expect(text).toMatch(/^kiln_queue_oldest_wait_seconds [0-9.]+$/m);
    expect(text).toMatch(/^kiln_glue_call_seconds_bucket\{verb="build\.status",outcome="ok",le="0\.01"\} \d+$/m);
    expect(text).toMatch(/^kiln_glue_call_seconds_count\{verb="ping",outcome="backend_unavailable"\} [1-9]/m);
    expect(text).toMatch(
      /^kiln_http_request_seconds_bucket\{method="GET",route="\/api\/admin\/users",status="2xx",le="\+Inf"\} [1-9]/m,
    );
    // raw paths never become series (ids would make one each)
    expect(text).not.toMatch(/route="\/builds\/\d/);
    expect((await w.client().get('/metrics')).status).toBe(401);
    const u = await approvedUser('mallory');
    expect((await u.get('/metrics')).status).toBe(403);
  });
});

describe('/metrics for an allow-listed scraper', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { metricsAllow: ['10.9.0.0/16', '127.0.0.1'] } } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('an address in web.metricsAllow reads /metrics without logging in', async () => {
    const r = await w.client().get('/metrics');
    expect(r.status).toBe(200);
    expect(await r.text()).toMatch(/^kiln_queue_depth 0$/m);
  });
});
