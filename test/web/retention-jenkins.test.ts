/**
 * Retention through the Jenkins build discarder (the Jenkins double, behaving as Jenkins' LogRotator does, reached
 * by the real glue's Jenkins backend in-process; the fake SDK runs as the job's build step): the discarder in the
 * job's config.xml comes from the web's retention config (sent with every job.put, over the glue's own), a pin
 * becomes Jenkins' "keep this build forever" which the discarder skips, and the web marks what Jenkins dropped as
 * expired, on a clock both move instead of waiting days.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { enqueue } from '../../src/core/tasks/queue.js';
import { findBuild } from '../../src/db/index.js';
import { createJenkinsBackend } from '../../src/glue/backends/jenkins/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startJenkinsDouble, type JenkinsDouble } from '../jenkins-double/index.js';
import { writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const USER = { name: 'kiln-glue', token: 'glue-api-token-0123' };
const DAY = 86_400_000;

describe('retention through the Jenkins build discarder', () => {
  const tmp = tempDir('kiln-retention-jenkins-');
  let shift = 0;
  const now = () => Date.now() + shift;
  let d: JenkinsDouble;
  let w: TestWeb;
  let alice: HttpClient;
  let df: number;
  const ids: number[] = [];

  const job = () => d.engine.getJob(`kiln-job-${df}`)!;
  /** The double's build behind web build `id`. */
  const jenkinsBuild = async (id: number) => {
    const n = (await findBuild(w.db, id, null))!.backend_build!;
    return job().builds.find((b) => b.number === n)!;
  };
  const expiredIds = async () => {
    const out: number[] = [];
    for (const id of ids) if ((await findBuild(w.db, id, null))!.artifacts_expired_at) out.push(id);
    return out;
  };
  const retention = async () => {
    await enqueue(w.db, { config: w.config, now }, 'retention', '');
    w.worker!.wake();
  };
  const form = async (p: string) => alice.postForm(p, { _csrf: await alice.token(`/dockerfiles/${df}`) });
  const build = async () => {
    const { id } = await alice.build(df);
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
    ids.push(id);
    return id;
  };

  beforeAll(async () => {
    d = await startJenkinsDouble({
      users: [USER],
      dataDir: path.join(tmp.dir, 'jenkins'),
      quietPeriodSeconds: 1,
      now,
    });
    // The glue's own retention differs from the web's: the web's, sent with job.put, is the one that applies.
    const glueConfig = loadConfig(
      {},
      {
        glue: {
          backend: 'jenkins',
          jenkins: {
            url: d.url,
            user: USER.name,
            token: USER.token,
            requestTimeoutMs: 5000,
            sdkCommand: writeFakeSdk(tmp.dir),
          },
        },
        retention: { keepBuilds: 7, keepDays: 99 },
      },
    );
    w = await startTestWeb({
      backend: createJenkinsBackend({ config: glueConfig, logger: silentLogger, pollMs: 50 }),
      clock: now,
      // Retention runs when the test asks for it, not with the reconciliation passes of a slow run.
      config: { retention: { keepBuilds: 2, keepDays: 10, pinsPerUser: 5 }, worker: { reconcileSeconds: 0 } },
    });
    alice = w.client();
    await alice.signUp('alice');
    df = await alice.createDockerfile('appliance', 'FROM debian:bookworm\nRUN true\n');
  }, 120_000);
  afterAll(async () => {
    await w?.close();
    await d?.stop();
    tmp.cleanup();
  });

  it("the job's discarder is the web's retention; a pin is Jenkins' keepLog; what Jenkins discards, the web marks expired", async () => {
    const b1 = await build();
    const b2 = await build();
    const xml = await (
      await fetch(`${d.url}job/kiln-job-${df}/config.xml`, {
        headers: { authorization: `Basic ${Buffer.from(`${USER.name}:${USER.token}`).toString('base64')}` },
      })
    ).text();
    expect(xml).toMatch(
      /<jenkins\.model\.BuildDiscarderProperty>\s*<strategy class="hudson\.tasks\.LogRotator">\s*<daysToKeep>-1<\/daysToKeep>\s*<numToKeep>100<\/numToKeep>\s*<artifactDaysToKeep>10<\/artifactDaysToKeep>\s*<artifactNumToKeep>2<\/artifactNumToKeep>/,
    );

    // Pinned from the build page: the glue sets keepLog in Jenkins.
    expect((await form(`/builds/${b1}/pin`)).status).toBe(303);
    await until(async () => (await jenkinsBuild(b1)).keepLog === true);
    const b3 = await build();
    const b4 = await build();
    // Jenkins' discarder ran as each build ended: #2 lost its artifacts (beyond 2), #1 is kept forever.
    expect((await jenkinsBuild(b2)).artifacts).toEqual([]);
    expect((await jenkinsBuild(b1)).artifacts.length).toBeGreaterThan(0);
    expect((await jenkinsBuild(b3)).artifacts.length).toBeGreaterThan(0);

    // The web applies the same rule: #2 expired, its page says so; the discard finds Jenkins already did it.
    await retention();
    await until(async () => (await expiredIds()).length === 1);
    expect(await expiredIds()).toEqual([b2]);
    expect(await (await alice.get(`/builds/${b2}`)).text()).toContain('The artifacts of this build expired on');

    // Eleven days on, both clocks: Jenkins' periodic pass and the web's drop #3 (older than 10 days); #4 is the
    // last success, #1 pinned.
    shift += 11 * DAY;
    // (Sessions end on the same clock: a new browser logs in again.)
    alice = w.client();
    expect((await alice.login('alice', 'correct horse battery staple')).status).toBe(303);
    d.engine.logRotate(job());
    await retention();
    await until(async () => (await expiredIds()).length === 2);
    expect(await expiredIds()).toEqual([b2, b3]);
    expect((await jenkinsBuild(b3)).artifacts).toEqual([]);
    expect((await jenkinsBuild(b4)).artifacts.length).toBeGreaterThan(0);
    expect((await jenkinsBuild(b1)).artifacts.length).toBeGreaterThan(0);

    // Unpinned: keepLog goes, the web expires it at once, Jenkins' discarder drops its files on its next pass.
    expect((await form(`/builds/${b1}/unpin`)).status).toBe(303);
    await until(async () => (await jenkinsBuild(b1)).keepLog === false);
    await until(async () => (await expiredIds()).length === 3);
    expect(await expiredIds()).toEqual([b1, b2, b3]);
    d.engine.logRotate(job());
    expect((await jenkinsBuild(b1)).artifacts).toEqual([]);
    expect((await jenkinsBuild(b4)).artifacts.length).toBeGreaterThan(0);
  }, 240_000);
});
