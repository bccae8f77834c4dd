/**
 * Jobs from the web against Jenkins (the double), through the real chain web -> core tasks -> SSH -> glue -> jenkins
 * client: a schedule set in Kiln becomes the job's TimerTrigger, the switch reaches Jenkins' enable/disable
 * endpoints, a change made in Jenkins directly shows as drift, and a build Jenkins' timer started appears in the
 * web with trigger `schedule`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/core/tasks/queue.js';
import { findBuild } from '../../src/db/index.js';
import { DOUBLE_AUTH, startJenkinsChain } from '../helpers/jenkins-chain.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import type { HttpClient } from '../helpers/web.js';

describe('jobs and schedules with a Jenkins backend', () => {
  const tmp = tempDir('kiln-jobs-jenkins-');
  let chain: Awaited<ReturnType<typeof startJenkinsChain>>;
  let alice: HttpClient;
  let id: number;
  const jenkins = (p: string, init: RequestInit = {}) =>
    fetch(new URL(p, chain.double.url), {
      redirect: 'manual',
      ...init,
      headers: { ...DOUBLE_AUTH, ...(init.headers as Record<string, string>) },
    });
  const configXml = async () => (await jenkins(`job/kiln-job-${id}/config.xml`)).text();
  const job = async () =>
    (
      (await (await alice.get(`/api/dockerfiles/${id}/job`)).json()) as {
        job: { pending: boolean; drift: string[]; backend: { enabled: boolean } | null };
      }
    ).job;
  const api = async (p: string, body: unknown = {}) =>
    alice.postJson(p, body, { 'x-csrf-token': await alice.apiToken() });

  beforeAll(async () => {
    chain = await startJenkinsChain(tmp.dir);
    alice = chain.web.client();
    await alice.signUp('alice');
    id = await alice.createDockerfile('nightly', 'FROM debian:bookworm\nRUN true\n');
  }, 120_000);
  afterAll(async () => {
    await chain?.stop();
    tmp.cleanup();
  });

  it("a daily schedule set in Kiln becomes a timer trigger in config.xml; the switch reaches Jenkins' disable and enable endpoints", async () => {
    expect(
      (await api(`/api/dockerfiles/${id}/job`, { schedule: 'daily', hour: 4, bootFirmware: ['uefi'] })).status,
    ).toBe(200);
    await until(async () => !(await job()).pending);
    const xml = await configXml();
    expect(xml).toMatch(/<hudson\.triggers\.TimerTrigger>\s*<spec>TZ=UTC\nH 4 \* \* \*<\/spec>/);
    expect(xml).toMatch(/<name>BOOT_FIRMWARE<\/name>[\s\S]*?<defaultValue>uefi<\/defaultValue>/);
    expect((await job()).drift).toEqual([]);

    expect((await api(`/api/dockerfiles/${id}/job/disable`)).status).toBe(200);
    await until(() => chain.double.requestLog().includes(`POST /job/kiln-job-${id}/disable`));
    await until(async () => !(await job()).pending);
    expect(await configXml()).toContain('<disabled>true</disabled>');
    expect((await api(`/api/dockerfiles/${id}/job/enable`)).status).toBe(200);
    await until(() => chain.double.requestLog().includes(`POST /job/kiln-job-${id}/enable`));
    await until(async () => (await job()).backend?.enabled === true);
    expect(await configXml()).toContain('<disabled>false</disabled>');
  }, 120_000);

  it("a job changed in Jenkins behind Kiln's back (disabled, another timer) shows as drift until Kiln's settings are saved again", async () => {
    expect((await jenkins(`job/kiln-job-${id}/disable`, { method: 'POST' })).status).toBe(302);
    const edited = (await configXml()).replace(/<spec>[^<]*<\/spec>/, '<spec>H/15 * * * *</spec>');
    expect(
      (
        await jenkins(`job/kiln-job-${id}/config.xml`, {
          method: 'POST',
          body: edited,
          headers: { 'content-type': 'application/xml' },
        })
      ).status,
    ).toBe(200);
    expect((await job()).drift).toEqual([
      'Switched on in Kiln, off in the build service.',
      'Schedule: daily at 04:00 UTC in Kiln, a timer Kiln did not set (H/15 * * * *) in the build service.',
    ]);
    expect(await (await alice.get(`/dockerfiles/${id}`)).text()).toContain(
      "The job in the build service differs from Kiln's settings",
    );
    await api(`/api/dockerfiles/${id}/job`, {});
    await until(async () => {
      const j = await job();
      return !j.pending && j.drift.length === 0;
    });
  }, 120_000);

  it("a build Jenkins' timer started appears in the web with trigger schedule and ends verified", async () => {
    expect(chain.double.fireTimer(`kiln-job-${id}`)).not.toBeNull();
    await until(async () => {
      const r = await jenkins(`job/kiln-job-${id}/api/json?tree=lastBuild[number]`);
      return ((await r.json()) as { lastBuild?: { number: number } | null }).lastBuild?.number;
    });
    const row = await until(async () => {
      await enqueue(chain.web.db, { config: chain.web.config }, 'reconcile', '');
      chain.web.worker?.wake();
      return (await chain.web.db('builds').where({ dockerfile_id: id, trigger: 'schedule' }).first()) as
        { id: number } | undefined;
    });
    const b = await chain.web.waitForBuild(row.id);
    expect(b).toMatchObject({ state: 'succeeded', trigger: 'schedule' });
    expect(await (await alice.get(`/builds/${row.id}`)).text()).toMatch(/<dd id="trigger">schedule<\/dd>/);
    expect((await findBuild(chain.web.db, row.id, null))!.artifacts.some((a) => a.name === 'image.raw')).toBe(true);
  }, 120_000);
});
