/**
 * Issue 4's reconciliation against Jenkins (the double), through the real chain web -> core tasks (worker) -> SSH ->
 * glue -> jenkins client. The SDK is the fake one (a second per build): this is about state, not images.
 *   - a build that finished in Jenkins while nobody watched its page ends `succeeded` in the web (the worker);
 *   - a job deleted in Jenkins is recreated from the stored Dockerfile (a reconciliation pass);
 *   - Jenkins down: a pressed build stays `requested` while its dispatch task retries, and after the restart exactly
 *     one Jenkins build exists for it, however many workers ran.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import type { RunningGlue } from '../../src/glue/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { sshGlueClientFromConfig } from '../../src/glue-client/ssh.js';
import type { GluePort } from '../../src/core/ports.js';
import { reconcileJobs } from '../../src/core/tasks/reconcile.js';
import { enqueue } from '../../src/core/tasks/queue.js';
import { findBuild, listTasksOf } from '../../src/db/index.js';
import { glueKey } from '../../src/core/builds/requeue.js';
import { glueEnv, startJenkinsDouble, type JenkinsDouble } from '../jenkins-double/index.js';
import { freePort, kilnSnapshot, writeFakeSdk } from '../helpers/glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';
import { tempDir } from '../helpers/tmp.js';
import { startJenkinsChain } from '../helpers/jenkins-chain.js';
import { createHash } from 'node:crypto';
import { verifyText } from '../../src/shared/sshsig.js';

const user = { name: 'kiln-glue', token: 'aa11bb22cc33dd44ee55ff66aa77bb88' };
const auth = { authorization: `Basic ${Buffer.from(`${user.name}:${user.token}`).toString('base64')}` };

describe('reconciliation with a Jenkins backend', () => {
  const tmp = tempDir('kiln-reconcile-');
  let double: JenkinsDouble;
  let glue: RunningGlue;
  let client: GluePort;
  let web: TestWeb;
  let alice: HttpClient;
  let dfId: number;

  const jenkins = (p: string, init: RequestInit = {}) =>
    fetch(new URL(p, double.url), {
      redirect: 'manual',
      ...init,
      headers: { ...auth, ...(init.headers as Record<string, string>) },
    });
  const jenkinsBuilds = async (job: number) =>
    ((await (await jenkins(`job/kiln-job-${job}/api/json`)).json()) as { builds: Array<{ number: number }> }).builds
      .map((b) => b.number)
      .sort();
  const recreate = () => reconcileJobs({ db: web.db, glue: client, config: web.config, logger: silentLogger });
  const state = async (id: number) => (await findBuild(web.db, id, null))!.state;

  beforeAll(async () => {
    ({ double, glue, client, web } = await startChain(tmp.dir));
    alice = web.client();
    await alice.signUp('alice');
    dfId = await alice.createDockerfile('demo', 'FROM debian:bookworm\nRUN true\n');
  }, 120_000);

  afterAll(async () => {
    await web?.close();
    await client?.close();
    await glue?.close();
    await double?.stop();
    tmp.cleanup();
  });

  it('a build Jenkins finished while nobody looked ends succeeded through the worker alone', async () => {
    const { id } = await alice.build(dfId);
    expect((await web.waitForBuild(id)).state).toBe('succeeded');
    expect(await jenkinsBuilds(dfId)).toEqual([1]);
    // Jenkins path of finding 2: the web, not the agent, hashed what Jenkins archived and signed its own SHA256SUMS.
    const image = Buffer.from(await (await jenkins(`job/kiln-job-${dfId}/1/artifact/out/image.raw`)).arrayBuffer());
    const row = (await findBuild(web.db, id, null))!;
    expect(row.artifacts.find((a) => a.name === 'image.raw')?.sha256).toBe(
      createHash('sha256').update(image).digest('hex'),
    );
    const sums = await (await alice.get(`/builds/${id}/artifacts/SHA256SUMS`)).text();
    const sig = await (await alice.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).text();
    expect((await verifyText(sums, sig, await (await alice.get('/.well-known/kiln-signing-key')).text())).ok).toBe(
      true,
    );
  }, 120_000);

  it('recreates a job deleted in Jenkins from the stored Dockerfile', async () => {
    expect((await jenkins(`job/kiln-job-${dfId}/doDelete`, { method: 'POST' })).status).toBe(302);
    expect((await jenkins(`job/kiln-job-${dfId}/api/json`)).status).toBe(404);
    expect(await recreate()).toEqual([dfId]);
    const xml = await (await jenkins(`job/kiln-job-${dfId}/config.xml`)).text();
    expect(xml).toContain(Buffer.from('FROM debian:bookworm\nRUN true\n').toString('base64'));
    // A second pass finds nothing to do.
    expect(await recreate()).toEqual([]);
  }, 120_000);

  it('Jenkins down: the build waits as requested while its dispatch retries, then exactly one Jenkins build runs after the restart', async () => {
    const before = await jenkinsBuilds(dfId).catch(() => []);
    await double.crash();
    // Two more workers on the same database, as two more web instances would run them.
    const others = [web.newWorker().start(), web.newWorker().start()];
    try {
      const { id } = await alice.build(dfId);
      await until(async () =>
        (await listTasksOf(web.db, `build:${id}`)).find((t) => t.kind === 'build.dispatch' && t.attempts >= 3),
      );
      expect(await state(id)).toBe('requested');
      await expect(recreate()).rejects.toMatchObject({ code: 'backend_unavailable' });
      await double.start();
      expect((await web.waitForBuild(id)).state).toBe('succeeded');
    } finally {
      await Promise.all(others.map((w) => w.stop()));
    }
    const after = await jenkinsBuilds(dfId);
    expect(after.length).toBe(before.length + 1);
  }, 180_000);
});

const startChain = startJenkinsChain;

async function stopChain(chain: Awaited<ReturnType<typeof startChain>> | undefined): Promise<void> {
  await chain?.web.close();
  await chain?.client.close();
  await chain?.glue.close();
  await chain?.double.stop();
}

describe('cancelling a build whose trigger still waits in the Jenkins queue', () => {
  const tmp = tempDir('kiln-withdraw-');
  let chain: Awaited<ReturnType<typeof startChain>>;
  afterAll(async () => {
    await stopChain(chain);
    tmp.cleanup();
  });

  it('withdraws the queue item by its idempotency key, so no build ever runs', async () => {
    // No node carries the job's label: the trigger is queued and never starts, and job.build's follow times out.
    chain = await startChain(tmp.dir, ['not-a-builder']);
    const alice = chain.web.client();
    await alice.signUp('alice');
    const dfId = await alice.createDockerfile('stuck', 'FROM debian:bookworm\nRUN true\n');
    const { id, token } = await alice.build(dfId);
    const q = async () =>
      (
        (await (await fetch(new URL('queue/api/json', chain.double.url), { headers: auth })).json()) as {
          items: unknown[];
        }
      ).items.length;
    await until(async () => (await q()) === 1);
    const row = (await findBuild(chain.web.db, id, null))!;
    expect(row.state).toBe('requested');
    expect(row.dispatch_attempts).toBeGreaterThan(0);

    const r = await alice.postForm(`/builds/${id}/cancel`, { _csrf: token });
    expect(r.status).toBe(303);
    expect((await findBuild(chain.web.db, id, null))!.state).toBe('cancelled');
    // The withdraw task waits for the dispatch in flight to end, then takes the trigger back by its key.
    await until(async () => (await q()) === 0);
    await until(async () =>
      (await listTasksOf(chain.web.db, `build:${id}`)).some((t) => t.kind === 'build.withdraw' && t.state === 'done'),
    );
    // Reconciliation leaves a cancelled build alone: nothing is triggered again.
    await enqueue(chain.web.db, { config: chain.web.config }, 'reconcile', '');
    await chain.web.newWorker().drain();
    expect(await q()).toBe(0);
    expect(
      (
        (await (await fetch(new URL(`job/kiln-job-${dfId}/api/json`, chain.double.url), { headers: auth })).json()) as {
          builds: unknown[];
        }
      ).builds,
    ).toEqual([]);
  }, 120_000);
});

describe('case 47: hard-restart Jenkins mid-build', () => {
  const tmp = tempDir('kiln-jenkins-restart-');
  let chain: Awaited<ReturnType<typeof startChain>>;
  afterAll(async () => {
    await stopChain(chain);
    tmp.cleanup();
  });

  it('the build is lost, requeued once and succeeds, the user sees it; one job, no orphan, no duplicate; a second restart fails it', async () => {
    chain = await startChain(tmp.dir);
    const { double, web } = chain;
    const alice = web.client();
    await alice.signUp('alice');
    const dfId = await alice.createDockerfile('restarted', 'FROM debian:bookworm\n# fake: sleep 4\n');
    const jenkins = (p: string) => fetch(new URL(p, double.url), { headers: auth });
    type Job = {
      builds: Array<{
        number: number;
        result: string | null;
        building: boolean;
        actions: Array<{ parameters?: Array<{ name: string; value: string }> }>;
      }>;
    };
    // The worker puts the job a moment after Build is pressed: until then Jenkins has no such job (404).
    const job = async (): Promise<Job> => {
      const r = await jenkins(
        `job/kiln-job-${dfId}/api/json?tree=builds[number,result,building,actions[parameters[name,value]]]`,
      );
      return r.status === 404 ? { builds: [] } : ((await r.json()) as Job);
    };
    const api = async (id: number) =>
      ((await (await alice.get(`/api/builds/${id}`)).json()) as { build: Record<string, unknown> }).build;

    const { id } = await alice.build(dfId);
    await until(async () => (await job()).builds.some((b) => b.building));
    await double.restart();
    const done = await until(async () => {
      const b = await api(id);
      return b.final && b;
    });
    expect(done).toMatchObject({
      state: 'succeeded',
      requeues: 1,
      requeueReason: expect.stringMatching(/^interrupted: the build was cut off in Jenkins/),
    });
    expect(await (await alice.get(`/builds/${id}`)).text()).toContain('Requeued after an interruption');
    const builds = (await job()).builds.sort((a, b) => a.number - b.number);
    expect(builds.map((b) => b.result)).toEqual(['ABORTED', 'SUCCESS']);
    const key = (b: (typeof builds)[number]) =>
      b.actions.flatMap((a) => a.parameters ?? []).find((p) => p.name === 'KILN_BUILD_KEY')?.value;
    const row = (await findBuild(web.db, id, null))!;
    expect(key(builds[0]!)).toBe(row.idempotency_key);
    expect(key(builds[1]!)).toBe(glueKey(row));
    const all = (await (await jenkins('api/json?tree=jobs[name]')).json()) as { jobs: Array<{ name: string }> };
    expect(all.jobs.map((j) => j.name)).toEqual([`kiln-job-${dfId}`]);
    expect(((await (await jenkins('queue/api/json')).json()) as { items: unknown[] }).items).toEqual([]);
    // More work changes nothing: no third build.
    await enqueue(web.db, { config: web.config }, 'reconcile', '');
    await web.newWorker().drain();
    expect((await job()).builds).toHaveLength(2);

    // Interrupted again after its requeue: failed, with a reason that says whose fault it was.
    const second = await alice.build(dfId);
    await until(async () => (await job()).builds.some((b) => b.building && b.number === 3));
    await double.restart();
    await until(async () => (await findBuild(web.db, second.id, null))!.requeues === 1);
    await until(async () => (await job()).builds.some((b) => b.building && b.number === 4));
    await double.restart();
    const failed = await until(async () => {
      const b = await api(second.id);
      return b.final && b;
    });
    expect(failed).toMatchObject({
      state: 'failed',
      reason: expect.stringMatching(/interrupted twice by a fault of the build service, not by your Dockerfile/),
    });
    await enqueue(web.db, { config: web.config }, 'reconcile', '');
    await web.newWorker().drain();
    expect((await job()).builds).toHaveLength(4);
  }, 240_000);
});

describe("case 46: the glue killed between Jenkins' create and its reply", () => {
  const tmp = tempDir('kiln-glue-killed-');
  const procs: ChildProcess[] = [];
  let double: JenkinsDouble | undefined;
  let web: TestWeb | undefined;
  let client: GluePort | undefined;
  afterAll(async () => {
    await web?.close();
    await client?.close();
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await double?.stop();
    tmp.cleanup();
  });

  it("the web's retry finds the job: exactly one job and one build; a re-sent create is a no-op", async () => {
    double = await startJenkinsDouble({ users: [user], quietPeriodSeconds: 1, dataDir: path.join(tmp.dir, 'jenkins') });
    const kiln = await kilnSnapshot(tmp.dir);
    const port = await freePort();
    const dataDir = path.join(tmp.dir, 'glue');
    const env = {
      PATH: process.env.PATH,
      KILN_DATA_DIR: dataDir,
      KILN_SSH_PORT: String(port),
      KILN_LOG_LEVEL: 'warn',
      ...glueEnv(double, user, writeFakeSdk(tmp.dir)),
      KILN_GLUE_JENKINS_REQUEST_TIMEOUT_MS: '3000',
    };
    /** `kiln glue-server` as its own process (what gets killed), with its host key fingerprint. */
    const startGlue = async (): Promise<{ proc: ChildProcess; fingerprint: string }> => {
      const proc = spawn(kiln, ['glue-server'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(proc);
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        proc.stdout!.on('data', (c: Buffer) => {
          out += c;
          if (out.includes('\n')) resolve(out);
        });
        proc.once('exit', (c) => reject(new Error(`glue-server exited ${c}`)));
      });
      return { proc, fingerprint: /host key SHA256:([A-Za-z0-9+/]+)/.exec(line)![1]! };
    };
    let glue = await startGlue();
    client = await sshGlueClientFromConfig(
      loadConfig({ KILN_DATA_DIR: dataDir, KILN_SSH_PORT: String(port), KILN_SSH_TIMEOUT_MS: '20000' }),
      { hostFingerprint: glue.fingerprint },
    );
    web = await startTestWeb({ glue: client, config: { sdk: { formats: ['raw'] }, worker: { maxAttempts: 1000 } } });
    const alice = web.client();
    await alice.signUp('alice');
    const dfId = await alice.createDockerfile('created-once', 'FROM debian:bookworm\nRUN true\n');

    // Jenkins makes the job; before its answer leaves, the glue process dies.
    let killed = false;
    double.afterCreateItem = async () => {
      if (killed) return;
      killed = true;
      const exited = new Promise((r) => glue.proc.once('exit', r));
      glue.proc.kill('SIGKILL');
      await exited;
    };
    const { id } = await alice.build(dfId);
    await until(() => killed);
    const jobs = async () =>
      (
        (await (await fetch(new URL('api/json?tree=jobs[name]', double!.url), { headers: auth })).json()) as {
          jobs: Array<{ name: string }>;
        }
      ).jobs.map((j) => j.name);
    expect(await jobs()).toEqual([`kiln-job-${dfId}`]); // Jenkins made it; the web never heard
    expect((await findBuild(web.db, id, null))!).toMatchObject({ state: 'requested', backend_build: null });

    glue = await startGlue();
    expect((await web.waitForBuild(id)).state).toBe('succeeded');
    expect(await jobs()).toEqual([`kiln-job-${dfId}`]);
    const builds = (
      (await (
        await fetch(new URL(`job/kiln-job-${dfId}/api/json?tree=builds[number]`, double.url), { headers: auth })
      ).json()) as { builds: unknown[] }
    ).builds;
    expect(builds).toHaveLength(1);
    // The create the glue never answered, sent again: create-or-update, nothing new.
    const xml = await (await fetch(new URL(`job/kiln-job-${dfId}/config.xml`, double.url), { headers: auth })).text();
    const spec = {
      owner: 'alice',
      name: 'created-once',
      dockerfile: 'FROM debian:bookworm\nRUN true\n',
      formats: ['raw'],
    };
    expect(await client.call('job.put', [dfId], JSON.stringify(spec))).toEqual({ job: dfId, created: false });
    expect(await jobs()).toEqual([`kiln-job-${dfId}`]);
    expect(await (await fetch(new URL(`job/kiln-job-${dfId}/config.xml`, double.url), { headers: auth })).text()).toBe(
      xml,
    );
    glue.proc.kill('SIGTERM');
  }, 240_000);
});
