/**
 * Jobs and deletion over HTTP (pages and JSON API), with the worker running beside the web and the real glue and
 * local backend in-process: what a user sees and what reaches the backend. Authorisation of every route (anonymous,
 * another user, owner, admin) is in authz-matrix.test.ts; here the owner's and the admin's paths.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findDockerfile } from '../../src/db/index.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';
import { addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

describe('jobs from the web', () => {
  let w: TestWeb & { local: InProcessGlue };
  let alice: HttpClient;
  let admin: HttpClient;
  const configFile = (id: number) => path.join(w.local.dataDir, 'glue', 'jobs', `kiln-job-${id}`, 'config.json');
  const jobConfig = (id: number) => JSON.parse(readFileSync(configFile(id), 'utf8')) as Record<string, unknown>;
  const page = async (c: HttpClient, id: number) => (await c.get(`/dockerfiles/${id}`)).text();
  const apiJob = async (c: HttpClient, id: number) =>
    (
      (await (await c.get(`/api/dockerfiles/${id}/job`)).json()) as {
        job: { pending: boolean; drift: string[]; backend: Record<string, unknown> | null };
      }
    ).job;

  beforeAll(async () => {
    w = await startTestWeb({ config: { sdk: { formats: ['raw'] } } });
    alice = w.client();
    await alice.signUp('alice');
    const root = await addUser(w.db, 'root', 'admin');
    admin = w.client();
    await admin.login(root.username, root.password);
  });
  afterAll(async () => {
    await w?.close();
  });

  it('the settings form puts a daily schedule in the job; the page shows it as the backend has it; Build keeps it; each build shows its trigger', async () => {
    const id = await alice.createDockerfile('nightly', 'FROM debian:bookworm\nRUN true\n');
    const token = await alice.token(`/dockerfiles/${id}`);
    const r = await alice.postForm(`/dockerfiles/${id}/job`, {
      _csrf: token,
      schedule: 'daily',
      hour: '5',
      weekday: '1',
      formats: 'raw',
      buildArgs: 'GREETING=hello\n',
    });
    expect(r.status).toBe(303);
    await until(async () => !(await apiJob(alice, id)).pending);
    expect(jobConfig(id)).toMatchObject({
      schedule: 'daily',
      scheduleHour: 5,
      buildArgs: { GREETING: 'hello' },
      enabled: true,
    });
    const html = await page(alice, id);
    expect(html).toMatch(/<dt>Schedule<\/dt><dd>daily at 05:00 UTC<\/dd>/);
    expect(html).not.toContain('id="job-drift"');
    const { id: b1 } = await alice.build(id);
    expect((await w.waitForBuild(b1)).state).toBe('succeeded');
    expect(jobConfig(id)).toMatchObject({ schedule: 'daily', scheduleHour: 5, enabled: true });
    const api = await alice.postJson(
      `/api/dockerfiles/${id}/builds`,
      { key: 'api-build-key-0001' },
      { 'x-csrf-token': await alice.apiToken() },
    );
    const b2 = ((await api.json()) as { build: { id: number; trigger: string } }).build;
    expect(b2.trigger).toBe('api');
    expect(await (await alice.get(`/builds/${b1}`)).text()).toMatch(/<dd id="trigger">manual<\/dd>/);
    expect(await page(alice, id)).toMatch(/<td class="trigger">api<\/td>[\s\S]*<td class="trigger">manual<\/td>/);
  }, 120_000);

  it('a bad setting comes back on the page with the message and changes nothing', async () => {
    const id = await alice.createDockerfile('badset', 'FROM debian:bookworm\n');
    const r = await alice.postForm(`/dockerfiles/${id}/job`, {
      _csrf: await alice.token(`/dockerfiles/${id}`),
      schedule: 'daily',
      hour: '25',
      formats: 'raw',
      buildArgs: '',
    });
    expect(r.status).toBe(422);
    expect(await r.text()).toContain('The hour must be a whole number from 0 to 23.');
    expect(await w.db('job_settings').where({ dockerfile_id: id }).first()).toBeUndefined();
  });

  it("the switch and the API reach the backend; a change made behind Kiln's back shows as drift until saved again", async () => {
    const id = await alice.createDockerfile('toggled', 'FROM debian:bookworm\n');
    const from = w.local.commands.length;
    expect(
      (await alice.postForm(`/dockerfiles/${id}/job/disable`, { _csrf: await alice.token(`/dockerfiles/${id}`) }))
        .status,
    ).toBe(303);
    await until(() => w.local.commands.slice(from).includes(`job.disable ${id}`));
    await until(async () => !(await apiJob(alice, id)).pending);
    expect(await page(alice, id)).toMatch(/Build<\/button>/);
    expect(await page(alice, id)).toContain('disabled title="The job is switched off"');
    const on = await admin.postJson(
      `/api/dockerfiles/${id}/job/enable`,
      {},
      { 'x-csrf-token': await admin.apiToken() },
    );
    expect(on.status).toBe(200);
    await until(async () => (await apiJob(alice, id)).backend?.enabled === true);
    writeFileSync(configFile(id), JSON.stringify({ ...jobConfig(id), enabled: false, schedule: 'weekly' }));
    expect((await apiJob(alice, id)).drift).toEqual([
      'Switched on in Kiln, off in the build service.',
      'Schedule: off in Kiln, weekly on a day the build service picks at an hour the build service picks in the build service.',
    ]);
    expect(await page(alice, id)).toContain('id="job-drift"');
    const saved = await alice.postJson(`/api/dockerfiles/${id}/job`, {}, { 'x-csrf-token': await alice.apiToken() });
    expect(saved.status).toBe(200);
    await until(async () => (await apiJob(alice, id)).drift.length === 0);
  }, 120_000);

  it("delete asks for the name first, then the Dockerfile, its job and builds go; an admin may delete another's through the API", async () => {
    const id = await alice.createDockerfile('doomed', 'FROM debian:bookworm\n');
    const { id: b } = await alice.build(id);
    await w.waitForBuild(b);
    const confirm = await (await alice.get(`/dockerfiles/${id}/delete`)).text();
    expect(confirm).toContain('Type its name, <code>doomed</code>, to confirm');
    const token = await alice.token(`/dockerfiles/${id}/delete`);
    const wrong = await alice.postForm(`/dockerfiles/${id}/delete`, { _csrf: token, confirm: 'nope' });
    expect(wrong.status).toBe(422);
    expect((await findDockerfile(w.db, id, null))!.deleting_at).toBeNull();
    const ok = await alice.postForm(`/dockerfiles/${id}/delete`, { _csrf: token, confirm: 'doomed' });
    expect(ok.status).toBe(303);
    await until(async () => !(await findDockerfile(w.db, id, null)));
    expect((await alice.get(`/dockerfiles/${id}`)).status).toBe(404);
    expect((await alice.get(`/builds/${b}`)).status).toBe(404);
    expect(w.local.commands).toContain(`job.delete ${id}`);

    const other = await alice.createDockerfile('admins', 'FROM debian:bookworm\n');
    w.local.down = true;
    try {
      const r = await admin.postJson(
        `/api/dockerfiles/${other}/delete`,
        { confirm: 'admins' },
        { 'x-csrf-token': await admin.apiToken() },
      );
      expect(r.status).toBe(202);
      expect(await page(alice, other)).toContain('id="deletion-pending"');
      expect(await alice.get('/dockerfiles').then((x) => x.text())).toContain('deletion pending');
    } finally {
      w.local.down = false;
    }
    await until(async () => !(await findDockerfile(w.db, other, null)));
  }, 120_000);
});

describe('a Dockerfile being deleted', () => {
  let w: TestWeb & { local: InProcessGlue };
  afterAll(async () => {
    await w?.close();
  });

  it('frees its place in the quota at once; its name stays taken, with a reason, until it is gone', async () => {
    w = await startTestWeb({ config: { web: { quotaDockerfiles: 1 } } });
    const bob = w.client();
    await bob.signUp('bob');
    const old = await bob.createDockerfile('app', 'FROM debian:bookworm\n');
    const t = await bob.apiToken();
    const create = (name: string) =>
      bob.postJson('/api/dockerfiles', { name, content: 'FROM debian:bookworm\n' }, { 'x-csrf-token': t });
    const full = await create('app2');
    expect(full.status).toBe(409);
    expect(await full.text()).toMatch(/limit of 1 Dockerfiles/);

    // The glue is away: the deletion stays pending.
    w.local.down = true;
    try {
      const del = await bob.postJson(`/api/dockerfiles/${old}/delete`, { confirm: 'app' }, { 'x-csrf-token': t });
      expect(del.status).toBe(202);
      const same = await create('app');
      expect(same.status).toBe(409);
      expect(((await same.json()) as { error: { message: string } }).error.message).toMatch(
        /"app" is still being deleted/,
      );
      const other = await create('app2');
      expect(other.status).toBe(201);
      // The quota holds for what is not being deleted.
      expect((await create('app3')).status).toBe(409);
    } finally {
      w.local.down = false;
    }
    await until(async () => !(await findDockerfile(w.db, old, null)));
    expect((await w.db('dockerfiles').select('name')).map((r) => r.name)).toEqual(['app2']);
  }, 120_000);
});
