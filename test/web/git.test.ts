/**
 * Dockerfiles from git over HTTP, with the worker running beside the web and the real glue, local backend and fake
 * SDK in-process: the form's "from git" choice, the worker's fetch, builds pinned to a commit (build record and the
 * source the SDK receives for its provenance), the push webhook fired by a real `git push` through git
 * http-backend (signed as GitHub, Gitea and GitLab sign), polling, Kiln's schedule skipping an unchanged commit,
 * and every refusal: never a 5xx.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LOGIN_LIMITS, PasswordHasher } from '../../src/core/index.js';
import { scheduleGitBuilds } from '../../src/core/git/schedule.js';
import { findDockerfile, getGitSource, type BuildRow } from '../../src/db/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startGitServers, type GitServers, type Repo } from '../helpers/git-server.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const DOCKERFILE = 'FROM debian:bookworm\nCOPY app /app\nRUN true\n';

describe('Dockerfiles from git', () => {
  let servers: GitServers;
  let w: TestWeb & { local: InProcessGlue };
  let alice: HttpClient;
  let bob: HttpClient;
  let seq = 0;

  beforeAll(async () => {
    servers = await startGitServers();
    w = await startTestWeb({
      config: {
        sdk: { formats: ['raw'] },
        // No polling here: a build of a pushed commit is the webhook's doing (the poll test has a web of its own).
        git: { allowHosts: ['127.0.0.1'], caFile: servers.caFile, pollSeconds: 0 },
        worker: { reconcileSeconds: 1 },
      },
    });
    alice = w.client();
    await alice.signUp('alice');
    bob = w.client();
    await bob.signUp('bobby');
  }, 60_000);
  afterAll(async () => {
    await w?.close();
    await servers?.close();
  });

  const newRepo = (): Repo => {
    const r = servers.repo(`r${++seq}`);
    r.commit({ Dockerfile: DOCKERFILE, 'app/run.sh': 'echo hi\n' });
    return r;
  };
  /** The new-Dockerfile form with "from git" chosen. */
  const gitForm = async (c: HttpClient, name: string, fields: Record<string, string>) => {
    const f = new FormData();
    f.set('_csrf', await c.token('/dockerfiles/new'));
    f.set('name', name);
    f.set('origin', 'git');
    for (const [k, v] of Object.entries(fields)) f.set(k, v);
    return c.postMultipart('/dockerfiles', f);
  };
  /** Creates a Dockerfile from git through the form; returns its id (once `db` shows it fetched, with `fetched`). */
  const fromGit = async (
    c: HttpClient,
    name: string,
    fields: Record<string, string>,
    o: { db?: TestWeb['db']; fetched?: boolean } = {},
  ) => {
    const r = await gitForm(c, name, fields);
    expect(r.status, await r.clone().text()).toBe(303);
    const id = Number(/\/dockerfiles\/(\d+)$/.exec(r.headers.get('location') ?? '')![1]);
    const db = o.db ?? w.db;
    if (o.fetched !== false) await until(async () => (await findDockerfile(db, id, null))?.current_version_id != null);
    return id;
  };
  const buildsOf = async (id: number): Promise<BuildRow[]> =>
    (await w.db('builds').where({ dockerfile_id: id }).orderBy('id')).map((r: Record<string, unknown>) => ({
      ...(r as unknown as BuildRow),
      id: Number(r.id),
      backend_build: r.backend_build == null ? null : Number(r.backend_build),
    }));
  const hookUrl = () => `${w.url}/api/v1/hooks/git`;
  const secretOf = async (id: number) => (await getGitSource(w.db, id))!.webhook_secret;
  const post = (body: string | Blob, headers: Record<string, string>) =>
    fetch(hookUrl(), { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const githubPush = (repo: Repo, before: string, after: string, ref = 'refs/heads/main') =>
    JSON.stringify({
      ref,
      before,
      after,
      deleted: /^0+$/.test(after),
      repository: { clone_url: repo.httpsUrl(), html_url: `https://127.0.0.1:${servers.httpsPort}/${repo.name}` },
    });
  const sign = (secret: string, body: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

  it('the form takes a repository; the worker fetches it; Build pins the commit in the build record and hands the source to the SDK for the provenance', async () => {
    const repo = newRepo();
    const id = await fromGit(alice, 'from-git', {
      gitUrl: repo.gitUrl,
      gitRef: 'main',
      gitPath: 'Dockerfile',
      gitContext: '',
    });
    const head = repo.head();
    const html = await (await alice.get(`/dockerfiles/${id}`)).text();
    expect(html).toContain(repo.gitUrl);
    expect(html).toContain(head);
    expect(html).toContain('COPY app /app');
    expect(html).toContain('app/run.sh');
    const api = (await (await alice.get(`/api/dockerfiles/${id}`)).json()) as { git: Record<string, unknown> };
    expect(api.git).toMatchObject({ url: repo.gitUrl, ref: 'main', commit: head, fetchError: null, pending: false });
    expect(api.git).not.toHaveProperty('webhookSecret');
    // A new commit after the fetch: Build builds what the branch is at now, not what the page showed.
    const next = repo.commit({ 'app/run.sh': 'echo two\n' });
    const { id: buildId } = await alice.build(id);
    const b = await w.waitForBuild(buildId);
    expect(b).toMatchObject({ state: 'succeeded', trigger: 'manual', git_commit: next });
    const archive = w.local.archive(id, b.backend_build!);
    expect(JSON.parse(readFileSync(path.join(archive, 'source.used'), 'utf8'))).toEqual({
      type: 'git',
      url: repo.gitUrl,
      ref: 'main',
      commit: next,
      path: 'Dockerfile',
      context: '',
    });
    expect(readFileSync(path.join(archive, 'argv.txt'), 'utf8')).toMatch(/--source\n[^\n]*source\.json\n/);
    expect(await (await alice.get(`/builds/${buildId}`)).text()).toContain(next);
    // The job holds no timer of its own and names the commit: Kiln runs a git Dockerfile's schedule.
    const job = JSON.parse(
      readFileSync(path.join(w.local.dataDir, 'glue', 'jobs', `kiln-job-${id}`, 'config.json'), 'utf8'),
    ) as Record<string, unknown>;
    expect(job).toMatchObject({ schedule: 'off', source: { commit: next } });
  });

  it('case 39: refused URLs keep nothing (ext::, -oProxyCommand, file:// without a mirror, credentials); loopback without the admin allow fails the fetch visibly', async () => {
    const before = Number((await w.db('dockerfiles').count({ n: '*' }))[0]!.n);
    for (const [url, re] of [
      ['ext::sh -c touch% /tmp/pwned', /Remote helpers|spaces/],
      ['-oProxyCommand=touch /tmp/pwned', /start with|spaces/],
      ['file:///etc/kiln.git', /no local mirror/],
      ['https://kiln:hunter2pw@git.example.com/x.git', /Credentials/],
    ] as const) {
      const r = await gitForm(alice, `refused-${++seq}`, { gitUrl: url });
      expect(r.status, url).toBe(422);
      const html = await r.text();
      expect(html, url).toMatch(re);
      expect(html).not.toContain('hunter2pw');
    }
    expect(Number((await w.db('dockerfiles').count({ n: '*' }))[0]!.n)).toBe(before);
    const strict = await startTestWeb({ config: { git: { timeoutSeconds: 30 } } });
    try {
      const c = strict.client();
      await c.signUp('carol');
      const id = await fromGit(c, 'loopback', { gitUrl: newRepo().gitUrl }, { db: strict.db, fetched: false });
      await until(async () => (await getGitSource(strict.db, id))?.fetch_error);
      const html = await (await c.get(`/dockerfiles/${id}`)).text();
      expect(html).toMatch(/The last fetch failed: .*127\.0\.0\.1.*KILN_GIT_ALLOW_HOSTS/);
      const page = await c.get(`/dockerfiles/${id}`);
      const token = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
      const build = await c.postForm(`/dockerfiles/${id}/builds`, { _csrf: token, key: 'k-loopback-build' });
      expect(build.status).toBe(409);
      expect((await strict.db('builds').count({ n: '*' }))[0]!.n).toBe(0);
    } finally {
      await strict.close();
    }
  });

  it('a real git push through git http-backend fires the webhook (signed as GitHub, Gitea and GitLab sign it): exactly one build per commit, redeliveries change nothing', async () => {
    const repo = newRepo();
    const id = await fromGit(alice, 'follows', {
      gitUrl: repo.httpsUrl(),
      gitRef: 'main',
      gitFollow: 'on',
    });
    // Another user tracks the same repository with a secret of their own; it signs none of these pushes.
    const other = await fromGit(bob, 'also-follows', { gitUrl: repo.gitUrl, gitRef: 'main', gitFollow: 'on' });
    const secret = await secretOf(id);
    expect(await (await alice.get(`/dockerfiles/${id}`)).text()).toContain(secret);
    for (const forge of ['github', 'gitea', 'gitlab'] as const) {
      repo.deliverPushesTo(hookUrl(), forge, secret);
      const before = repo.head();
      const after = await repo.commitAndPushHttps({ 'app/run.sh': `echo ${forge}\n` });
      const answer = repo.hookLog().at(-1)!;
      expect(answer, forge).toMatch(/^202 /);
      expect(JSON.parse(answer.slice(4)), forge).toMatchObject({
        status: 'accepted',
        branch: 'main',
        commit: after,
        dockerfiles: [{ dockerfile: id, outcome: 'build', created: true }],
      });
      const built = await until(async () => (await buildsOf(id)).filter((b) => b.git_commit === after));
      expect(built, forge).toHaveLength(1);
      expect(built[0]).toMatchObject({ trigger: 'push' });
      expect((await w.waitForBuild(built[0]!.id)).state, forge).toBe('succeeded');
      await repo.redeliver(before, after);
      expect(JSON.parse(repo.hookLog().at(-1)!.slice(4)), forge).toMatchObject({
        status: 'accepted',
        dockerfiles: [{ dockerfile: id, outcome: 'seen' }],
      });
      expect(
        (await buildsOf(id)).filter((b) => b.git_commit === after),
        forge,
      ).toHaveLength(1);
    }
    expect(await buildsOf(id)).toHaveLength(3);
    // Bob's Dockerfile tracks the same repository and branch, but none of these deliveries was signed with its secret.
    expect(await buildsOf(other)).toEqual([]);
  });

  it('a following Dockerfile polls its branch: a new commit is built once, and a push of the same commit afterwards builds nothing', async () => {
    const pw = await startTestWeb({
      config: {
        sdk: { formats: ['raw'] },
        git: { allowHosts: ['127.0.0.1'], pollSeconds: 1 },
        worker: { reconcileSeconds: 1 },
      },
    });
    try {
      const c = pw.client();
      await c.signUp('erin');
      const repo = newRepo();
      const id = await fromGit(
        c,
        'polls',
        { gitUrl: repo.gitUrl, gitRef: 'main', gitFollow: 'on' },
        { db: pw.db, fetched: false },
      );
      const builds = async () => pw.db('builds').where({ dockerfile_id: id }).orderBy('id');
      // Following starts where the branch was when it was set: nothing is built for that.
      await until(async () => (await getGitSource(pw.db, id))?.followed_commit);
      expect(await builds()).toEqual([]);
      const before = repo.head();
      const after = repo.commit({ 'app/run.sh': 'echo polled\n' });
      const [b] = await until(async () => {
        const l = await builds();
        return l.length ? l : undefined;
      });
      expect(b).toMatchObject({ trigger: 'push', git_commit: after });
      expect((await pw.waitForBuild(Number(b!.id))).state).toBe('succeeded');
      const body = githubPush(repo, before, after);
      const secret = (await getGitSource(pw.db, id))!.webhook_secret;
      const r = await fetch(`${pw.url}/api/v1/hooks/git`, {
        method: 'POST',
        body,
        headers: {
          'content-type': 'application/json',
          'x-github-event': 'push',
          'x-hub-signature-256': sign(secret, body),
        },
      });
      expect(r.status).toBe(202);
      expect(await r.json()).toMatchObject({ dockerfiles: [{ dockerfile: id, outcome: 'seen' }] });
      expect(await builds()).toHaveLength(1);
    } finally {
      await pw.close();
    }
  });

  it("Kiln's schedule of a git Dockerfile builds at each slot, and skips the slot whose commit has not changed since the last success (the reason on the list and the page)", async () => {
    // A web of its own whose clock the test moves a day at a time (no reconciliation pass of its own: the test runs
    // the schedule's step itself, with the same clock as the worker's, so tasks it enqueues are due for the worker).
    let offset = 0;
    const clock = () => Date.now() + offset;
    const sw = await startTestWeb({
      clock,
      config: {
        sdk: { formats: ['raw'] },
        git: { allowHosts: ['127.0.0.1'], pollSeconds: 0 },
        worker: { reconcileSeconds: 0 },
      },
    });
    try {
      const c = sw.client();
      await c.signUp('dora', 'correct horse battery staple');
      const repo = newRepo();
      const id = await fromGit(c, 'scheduled', { gitUrl: repo.gitUrl }, { db: sw.db });
      const hour = new Date(clock()).getUTCHours();
      const saved = await c.postForm(`/dockerfiles/${id}/job`, {
        _csrf: await c.token(`/dockerfiles/${id}`),
        schedule: 'daily',
        hour: String(hour),
        weekday: '1',
        formats: 'raw',
      });
      expect(saved.status).toBe(303);
      const deps = {
        config: sw.config,
        db: sw.db,
        glue: sw.glue,
        logger: silentLogger,
        hasher: new PasswordHasher(1),
        limits: DEFAULT_LOGIN_LIMITS,
        now: clock,
        onEnqueue: () => sw.worker?.wake(),
      };
      const all = async (): Promise<BuildRow[]> =>
        (await sw.db('builds').where({ dockerfile_id: id }).orderBy('id')).map((r: Record<string, unknown>) => ({
          ...(r as unknown as BuildRow),
          id: Number(r.id),
          backend_build: r.backend_build == null ? null : Number(r.backend_build),
        }));
      const nextDay = async () => {
        offset += 24 * 3600_000;
        return scheduleGitBuilds(deps);
      };
      // The schedule was just set: its current slot is not fired after the fact.
      expect(await scheduleGitBuilds(deps)).toBe(0);
      expect(await all()).toEqual([]);
      expect(await nextDay()).toBe(1);
      expect(await scheduleGitBuilds(deps)).toBe(0); // each slot once
      const [first] = await all();
      expect(first).toMatchObject({ trigger: 'schedule' });
      expect((await sw.waitForBuild(first!.id)).state).toBe('succeeded');
      const pinned = (await all())[0]!.git_commit!;
      expect(pinned).toBe(repo.head());
      expect(await nextDay()).toBe(1);
      const second = (await all())[1]!;
      const skipped = await sw.waitForBuild(second.id);
      expect(skipped).toMatchObject({ state: 'skipped', git_commit: pinned, backend_build: null });
      expect(skipped.reason).toBe(
        `Skipped: commit ${pinned.slice(0, 12)} has not changed since build #${first!.id}, which succeeded.`,
      );
      // Sessions end after a day: a new login, then the list and the build page say why.
      const again = sw.client();
      expect((await again.login('dora', 'correct horse battery staple')).status).toBe(303);
      const list = await (await again.get(`/dockerfiles/${id}/builds`)).text();
      expect(list).toContain('state-skipped');
      expect(list).toContain(`has not changed since build #${first!.id}`);
      expect(await (await again.get(`/builds/${second.id}`)).text()).toContain('Skipped: commit');
      const changed = repo.commit({ 'app/run.sh': 'echo changed\n' });
      expect(await nextDay()).toBe(1);
      const third = (await all())[2]!;
      expect(await sw.waitForBuild(third.id)).toMatchObject({ state: 'succeeded', git_commit: changed });
    } finally {
      await sw.close();
    }
  });

  it('a commit whose Dockerfile the policy refuses fails its build with the line, and the page says why', async () => {
    const repo = newRepo();
    const id = await fromGit(alice, 'policy', { gitUrl: repo.gitUrl, gitRef: 'main' });
    repo.commit({ Dockerfile: 'FROM evil.example/base:latest\nRUN true\n' });
    const { id: buildId } = await alice.build(id);
    const b = await w.waitForBuild(buildId);
    expect(b.state).toBe('failed');
    expect(b.reason).toMatch(/Kiln could not fetch the Dockerfile from git: Dockerfile at [0-9a-f]{12}: line 1: /);
    const html = await (await alice.get(`/dockerfiles/${id}`)).text();
    expect(html).toMatch(/The last fetch failed: Dockerfile at [0-9a-f]{12}: line 1/);
  });

  it('the webhook: unsigned or badly signed 401, unknown repository 202 with nothing done, malformed 400, too large 413, other events ignored; never a 5xx', async () => {
    const repo = newRepo();
    const id = await fromGit(alice, 'hooked', { gitUrl: repo.httpsUrl(), gitRef: 'main', gitFollow: 'on' });
    const secret = await secretOf(id);
    const before = repo.head();
    // A commit id the repository does not have: any delivery wrongly acted on would make a build of it.
    const after = 'f'.repeat(40);
    const body = githubPush(repo, before, after);
    const statuses: number[] = [];
    const expectStatus = async (r: Promise<Response>, status: number, what: string) => {
      const res = await r;
      statuses.push(res.status);
      expect(res.status, `${what}: ${await res.clone().text()}`).toBe(status);
      return res;
    };
    await expectStatus(post(body, { 'x-github-event': 'push' }), 401, 'unsigned');
    await expectStatus(post(body, { 'x-hub-signature-256': sign('wrong', body) }), 401, 'wrong secret');
    await expectStatus(post(body, { 'x-gitlab-token': 'wrong' }), 401, 'wrong token');
    await expectStatus(post(`${body} `, { 'x-hub-signature-256': sign(secret, body) }), 401, 'body changed');
    const unknown = JSON.stringify({
      ref: 'refs/heads/main',
      after,
      repository: { clone_url: 'https://git.example.com/nobody/nothing.git' },
    });
    const u = await expectStatus(post(unknown, { 'x-hub-signature-256': sign('any', unknown) }), 202, 'unknown');
    expect(await u.json()).toMatchObject({ status: 'unknown', dockerfiles: [] });
    await expectStatus(post('{not json', { 'x-hub-signature-256': sign(secret, '{not json') }), 400, 'malformed');
    await expectStatus(post('[]', {}), 400, 'not an object');
    await expectStatus(post('{"ref":"refs/heads/main"}', {}), 400, 'no repository');
    await expectStatus(post(new Blob([new Uint8Array([0xff, 0xfe])]), {}), 400, 'not UTF-8');
    await expectStatus(post(body, { 'content-type': 'text/plain' }), 400, 'not JSON');
    await expectStatus(post('x'.repeat(1024 * 1024 + 1), {}), 413, 'too large');
    await expectStatus(post(body, { 'content-encoding': 'gzip' }), 400, 'compressed');
    const ping = JSON.stringify({ zen: 'hi', hook_id: 1, repository: { clone_url: repo.httpsUrl() } });
    const p = await expectStatus(
      post(ping, { 'x-github-event': 'ping', 'x-hub-signature-256': sign(secret, ping) }),
      202,
      'ping',
    );
    expect(await p.json()).toMatchObject({ status: 'ignored' });
    const tag = githubPush(repo, before, after, 'refs/tags/v1');
    await expectStatus(post(tag, { 'x-hub-signature-256': sign(secret, tag) }), 202, 'tag');
    const gone = githubPush(repo, after, '0'.repeat(40));
    await expectStatus(post(gone, { 'x-hub-signature-256': sign(secret, gone) }), 202, 'deleted branch');
    const noCommit = JSON.stringify({ ref: 'refs/heads/main', repository: { clone_url: repo.httpsUrl() } });
    await expectStatus(post(noCommit, { 'x-hub-signature-256': sign(secret, noCommit) }), 400, 'no after');
    expect(await buildsOf(id)).toEqual([]);
    // GitHub's form encoding (payload=...) of a real push builds it (once, whether the poll saw it first or not).
    const real = repo.commit({ 'app/run.sh': 'echo hook\n' });
    const form = `payload=${encodeURIComponent(githubPush(repo, before, real))}`;
    await expectStatus(
      post(form, {
        'content-type': 'application/x-www-form-urlencoded',
        'x-github-event': 'push',
        'x-hub-signature-256': sign(secret, form),
      }),
      202,
      'form',
    );
    expect((await buildsOf(id)).map((b) => b.git_commit)).toEqual([real]);
    expect(statuses.every((s) => s < 500)).toBe(true);
  });
});
