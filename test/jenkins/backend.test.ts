/**
 * The jenkins backend against the Jenkins double, with a tiny fake SDK (a shell script set as
 * glue.jenkins.sdkCommand) so builds take a second, not minutes. The real SDK through the double is the lead's
 * full-path test.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Jenkins from 'jenkins';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createJenkinsBackend,
  JenkinsBackend,
  KEY_PARAM,
  versionAllowed,
} from '../../src/glue/backends/jenkins/index.js';
import { JenkinsApi } from '../../src/glue/backends/jenkins/client.js';
import type { Backend } from '../../src/glue/backends/types.js';
import { createBackend } from '../../src/glue/backend.js';
import { loadConfig } from '../../src/config/index.js';
import { jobSpecSchema, specSha256, type JobSpec } from '../../src/protocol/index.js';
import { isKilnError, type KilnError } from '../../src/shared/errors.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startJenkinsDouble, type JenkinsDouble } from '../jenkins-double/index.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const USER = { name: 'kiln-glue', token: 'glue-api-token-0123' };
let d: JenkinsDouble;
let backend: Backend;
let tmp: { dir: string; cleanup: () => void };
let sdk: string;
let raw: Jenkins;

const FAKE_SDK = `#!/bin/sh
# Stands in for \`kiln sdk build\`: same argv, same outputs, a second of work.
set -eu
df=""; out=""; formats=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dockerfile) df=$2; shift 2;;
    --out) out=$2; shift 2;;
    --format) formats=$2; shift 2;;
    --context|--build-arg|--base-name) shift 2;;
    *) echo "fake-sdk: unexpected argument $1" >&2; exit 2;;
  esac
done
echo '##kiln {"stage":"build","percent":10}'
s=$(sed -n 's/^# sleep //p' "$df"); [ -z "$s" ] || sleep "$s"
if grep -q '^# stages' "$df"; then
  echo '##kiln {"stage":"disk","percent":60,"message":"making the disk"}'; sleep 2
  printf '##kiln {"stage":"boot",'; sleep 1; echo '"percent":80}'; sleep 2
fi
if grep -q '^# fail' "$df"; then echo 'fake-sdk: failing as asked'; echo '{"ok":false,"error":{"code":"build_failed","message":"failing as asked"}}' > "$out/result.json"; exit 1; fi
if grep -q '^# killed' "$df"; then kill -9 $$; fi
printf 'IMAGE(%s)' "$formats" > "$out/image.raw"
head -c 300000 /dev/zero | tr '\\0' 'x' >> "$out/image.raw"
echo '{"ok":true}' > "$out/result.json"
echo 'sdk log' > "$out/build.log"
echo '##kiln {"stage":"done","percent":100}'
`;

const spec = (over: Partial<JobSpec> = {}): JobSpec =>
  jobSpecSchema.parse({ owner: 'alice <a@x>', name: 'web', dockerfile: 'FROM debian:bookworm\n', ...over });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return isKilnError(e) ? e.code : `not a KilnError: ${String(e)}`;
  }
}
function makeBackend(over: Record<string, unknown> = {}, url = d.url): Backend {
  const config = loadConfig(
    {},
    {
      glue: {
        backend: 'jenkins',
        jenkins: {
          url,
          user: USER.name,
          token: USER.token,
          sdkCommand: [sdk],
          timeoutSeconds: 120,
          requestTimeoutMs: 5000,
          ...over,
        },
      },
    },
  );
  return createJenkinsBackend({ config, logger: silentLogger, followTimeoutMs: 20_000, pollMs: 50 });
}
const configXml = (job: number) => raw.job.config(`kiln-job-${job}`);
const jobJson = (job: number) => raw.job.get(`kiln-job-${job}`);

beforeAll(async () => {
  tmp = tempDir('kiln-jenkins-');
  sdk = path.join(tmp.dir, 'fake-sdk');
  writeFileSync(sdk, FAKE_SDK);
  chmodSync(sdk, 0o755);
  d = await startJenkinsDouble({ users: [USER], dataDir: path.join(tmp.dir, 'jenkins'), quietPeriodSeconds: 5 });
  backend = makeBackend();
  await backend.start();
  raw = new Jenkins({
    baseUrl: d.url.replace('http://', `http://${USER.name}:${USER.token}@`).replace(/\/$/, ''),
    crumbIssuer: false,
  });
});
afterAll(async () => {
  await backend?.close();
  await d?.stop();
  tmp?.cleanup();
});

describe('jenkins backend: jobs', () => {
  it('putJob creates, then updates in place (idempotent); the description is escaped, the Dockerfile base64', async () => {
    expect(await backend.putJob(1, spec())).toEqual({ created: true });
    expect(await backend.putJob(1, spec())).toEqual({ created: false });
    expect(await backend.putJob(1, spec({ dockerfile: 'FROM debian:bookworm\nRUN echo 2\n' }))).toEqual({
      created: false,
    });
    const xml = await configXml(1);
    expect(xml).toContain(Buffer.from('FROM debian:bookworm\nRUN echo 2\n').toString('base64'));
    expect(xml).toContain('alice &lt;a@x&gt;');
    expect((await jobJson(1)).description).toContain('alice <a@x>');
    const jobs = await backend.listJobs();
    expect(jobs).toContainEqual(
      expect.objectContaining({ job: 1, backendName: 'kiln-job-1', managed: true, enabled: true }),
    );
  });

  it('enable/disable shows in config.xml and in buildable/color; both are idempotent; a disabled job refuses builds', async () => {
    await backend.setEnabled(1, false);
    await backend.setEnabled(1, false);
    expect(await configXml(1)).toContain('<disabled>true</disabled>');
    expect(await jobJson(1)).toMatchObject({ buildable: false, color: 'disabled' });
    expect(await code(backend.build(1, 'key-disabled-1'))).toBe('conflict');
    expect((await backend.listJobs()).find((j) => j.job === 1)?.enabled).toBe(false);
    await backend.setEnabled(1, true);
    await backend.setEnabled(1, true);
    expect(await configXml(1)).toContain('<disabled>false</disabled>');
    expect(await jobJson(1)).toMatchObject({ buildable: true, color: 'notbuilt' });
    // putJob carries the enabled flag too.
    await backend.putJob(1, spec({ enabled: false }));
    expect(await jobJson(1)).toMatchObject({ buildable: false });
    await backend.putJob(1, spec());
    expect(await jobJson(1)).toMatchObject({ buildable: true });
  });

  it('the daily toggle shows in the TimerTrigger, and the timer builds the stored Dockerfile', async () => {
    await backend.putJob(2, spec({ schedule: 'daily' }));
    expect(await configXml(2)).toMatch(/<hudson\.triggers\.TimerTrigger>\s*<spec>H H \* \* \*<\/spec>/);
    await backend.putJob(2, spec({ schedule: 'weekly' }));
    expect(await configXml(2)).toMatch(/<spec>H H \* \* H<\/spec>/);
    await backend.putJob(2, spec({ schedule: 'off' }));
    expect(await configXml(2)).not.toContain('TimerTrigger');
    expect(d.fireTimer('kiln-job-2')).toBeNull();
    await backend.putJob(2, spec({ schedule: 'daily', formats: ['qcow2'] }));
    const qid = d.fireTimer('kiln-job-2')!;
    expect(qid).toBeGreaterThan(0);
    const n = await until(
      async () => ((await raw.queue.item(qid)) as { executable: { number: number } | null }).executable?.number,
    );
    const st = await until(async () => {
      const s = await backend.status(2, n);
      return s.state !== 'running' && s;
    });
    expect(st.state).toBe('succeeded');
    const img = await backend.artifact(2, n, 'image.raw', 0);
    let head = '';
    for await (const c of img) {
      head += (c as Buffer).toString('latin1');
      if (head.length > 20) break;
    }
    img.destroy();
    expect(head.startsWith('IMAGE(qcow2)')).toBe(true);
  });

  it('deleteJob removes the job; deleting again says deleted:false', async () => {
    await backend.putJob(3, spec());
    expect(await backend.deleteJob(3)).toEqual({ deleted: true });
    expect(await raw.job.exists('kiln-job-3')).toBe(false);
    expect(await backend.deleteJob(3)).toEqual({ deleted: false });
    expect(await code(backend.setEnabled(3, true))).toBe('not_found');
  });
});

describe('jenkins backend: builds', () => {
  it('build follows the queue to the build number; status, progressive log and artifacts (whole and from an offset)', async () => {
    await backend.putJob(10, spec({ dockerfile: 'FROM debian:bookworm\n# sleep 1\n', formats: ['raw', 'qcow2'] }));
    const { build, created } = await backend.build(10, 'first-trigger-0001');
    expect(created).toBe(true);
    expect(build).toBe(1);
    expect((await backend.status(10, build)).state).toBe('running');
    let offset = 0;
    let text = '';
    for (;;) {
      const chunk = await backend.log(10, build, offset);
      expect(chunk.offset).toBe(offset);
      text += chunk.text;
      offset = chunk.nextOffset;
      if (!chunk.more) break;
      await sleep(200);
    }
    expect(text).toContain('##kiln {"stage":"build","percent":10}');
    expect(text).toContain('##kiln {"stage":"done","percent":100}');
    expect(text.endsWith('Finished: SUCCESS\n')).toBe(true);
    expect(offset).toBe(Buffer.byteLength(text));
    expect((await backend.log(10, build, offset)).text).toBe('');
    const st = await backend.status(10, build);
    expect(st).toMatchObject({ job: 10, build, state: 'succeeded' });
    expect(st.finishedAt! >= st.startedAt!).toBe(true);
    const names = st.artifacts.map((a) => a.name).sort();
    expect(names).toEqual(['build.log', 'image.raw', 'result.json']);
    const size = st.artifacts.find((a) => a.name === 'image.raw')!.size;
    expect(size).toBe('IMAGE(raw,qcow2)'.length + 300000);
    const whole = await collect(await backend.artifact(10, build, 'image.raw', 0));
    expect(whole.length).toBe(size);
    expect(whole.subarray(0, 16).toString()).toBe('IMAGE(raw,qcow2)');
    const tail = await collect(await backend.artifact(10, build, 'image.raw', 6));
    expect(tail.equals(whole.subarray(6))).toBe(true);
    expect((await collect(await backend.artifact(10, build, 'image.raw', size))).length).toBe(0);
    expect(await code(backend.artifact(10, build, 'image.qcow2', 0))).toBe('not_found');
    expect(await code(backend.status(10, 99))).toBe('not_found');
    expect(await code(backend.log(10, 99, 0))).toBe('not_found');
  });

  it("status of a running build carries the SDK's last progress event, read from the console as it grows", async () => {
    await backend.putJob(12, spec({ dockerfile: 'FROM debian:bookworm\n# sleep 1\n# stages\n' }));
    const { build } = await backend.build(12, 'progress-key-0001');
    const seen: string[] = [];
    await until(async () => {
      const st = await backend.status(12, build);
      if (st.progress) seen.push(`${st.progress.stage}:${st.progress.percent}`);
      return st.state !== 'running' && st.state !== 'queued' ? st : undefined;
    });
    // In order, each at least once; the boot event printed in two pieces counts only once it is whole (a torn
    // `boot:` would not parse and was never reported). The last event may be seen too, before the build ends.
    const order = [...new Set(seen)];
    expect(order.filter((x) => x !== 'done:100')).toEqual(['build:10', 'disk:60', 'boot:80']);
    expect((await backend.status(12, build)).progress).toBeUndefined();
  });

  it('a retried trigger with the same key never makes a second build, sequential or concurrent', async () => {
    const again = await backend.build(10, 'first-trigger-0001');
    expect(again).toEqual({ build: 1, created: false });
    await backend.putJob(11, spec({ dockerfile: 'FROM x\n# sleep 1\n' }));
    const results = await Promise.all([0, 1, 2].map(() => backend.build(11, 'same-key-concurrent')));
    expect(new Set(results.map((r) => r.build)).size).toBe(1);
    expect(results.filter((r) => r.created).length).toBeLessThanOrEqual(1);
    // Once nothing of the job is queued or building, count what ran.
    const j = await until(async () => {
      const x = await raw.job.get('kiln-job-11', {
        tree: 'inQueue,builds[number,building,actions[parameters[name,value]]]',
      });
      return !x.inQueue && x.builds.every((b: { building: boolean }) => !b.building) && x;
    });
    const withKey = j.builds.filter((b: { actions: Array<{ parameters?: Array<{ name: string; value: string }> }> }) =>
      b.actions.some((a) => a.parameters?.some((p) => p.name === KEY_PARAM && p.value === 'same-key-concurrent')),
    );
    expect(withKey).toHaveLength(1);
    expect(
      (await raw.queue.list()).filter((i: { task: { name: string } }) => i.task.name === 'kiln-job-11'),
    ).toHaveLength(0);
    // A different key is a different build.
    const other = await backend.build(11, 'another-key-00001');
    expect(other.created).toBe(true);
    expect(other.build).toBe(results[0]!.build + 1);
  });

  it('a retry that lands while the first item has left the queue but has no build yet (§6.4) withdraws itself', async () => {
    const engineOpts = d.engine.opts as { startDelayMs: number };
    engineOpts.startDelayMs = 500; // widen the LeftItem window the real Jenkins has for milliseconds
    try {
      await backend.putJob(15, spec({ dockerfile: 'FROM x\n# sleep 2\n' }));
      const first = backend.build(15, 'window-key-000001');
      await until(async () =>
        (await raw.queue.list()).some((i: { task: { name: string } }) => i.task.name === 'kiln-job-15'),
      );
      await until(
        async () => !(await raw.queue.list()).some((i: { task: { name: string } }) => i.task.name === 'kiln-job-15'),
      );
      expect((await jobJson(15)).builds).toHaveLength(0); // in the window: left the queue, no build yet
      const retry = await backend.build(15, 'window-key-000001');
      const original = await first;
      expect(retry).toEqual({ build: original.build, created: false });
      // Once nothing of the job is queued or building: one build, nothing left in the queue.
      const j = await until(async () => {
        const x = await raw.job.get('kiln-job-15', { tree: 'inQueue,builds[number,building]' });
        return !x.inQueue && x.builds.every((b: { building: boolean }) => !b.building) && x;
      });
      expect(j.builds).toHaveLength(1);
    } finally {
      engineOpts.startDelayMs = 50;
    }
  });

  it('a failing SDK ends failed with a reason; cancel stops a running build (cancelled), and is idempotent', async () => {
    await backend.putJob(12, spec({ dockerfile: 'FROM x\n# fail\n' }));
    const f = await backend.build(12, 'failing-build-001');
    const st = await until(async () => {
      const s = await backend.status(12, f.build);
      return s.state !== 'running' && s;
    });
    expect(st).toMatchObject({ state: 'failed', reason: expect.stringContaining('failed') });
    expect(
      await code(
        backend
          .status(12, f.build)
          .then(
            async () =>
              (await backend.log(12, f.build, 0)).text.includes('fake-sdk: failing as asked') ||
              Promise.reject(new Error('no log')),
          ),
      ),
    ).toBe('ok');

    await backend.putJob(13, spec({ dockerfile: 'FROM x\n# sleep 60\n' }));
    const r = await backend.build(13, 'cancel-running-01');
    await until(async () => (await backend.log(13, r.build, 0)).text.includes('"stage":"build"'));
    expect(await backend.cancel(13, r.build)).toEqual({ state: 'cancelled' });
    expect(await backend.status(13, r.build)).toMatchObject({ state: 'cancelled' });
    expect(await backend.cancel(13, r.build)).toEqual({ state: 'cancelled' });
    expect(await backend.cancel(12, f.build)).toEqual({ state: 'failed' });
  });

  it('an SDK killed outright (no result.json) ends lost, for the web to requeue, not failed as if the Dockerfile were at fault', async () => {
    await backend.putJob(24, spec({ dockerfile: 'FROM x\n# killed\n' }));
    const k = await backend.build(24, 'killed-sdk-00001');
    const st = await until(async () => {
      const s = await backend.status(24, k.build);
      return s.state !== 'running' && s;
    });
    expect(st).toMatchObject({ state: 'lost', reason: expect.stringMatching(/^interrupted: .*killed/) });
  });

  it('build.wait: holds a running build until Jenkins ends it (while a build started with it and sleeping 30 s still runs); at its deadline `running`; at once for an ended build; not_found for a build Jenkins does not have', async () => {
    await backend.putJob(16, spec({ dockerfile: 'FROM debian:bookworm\n# sleep 30\n' }));
    await backend.putJob(17, spec({ dockerfile: 'FROM debian:bookworm\n# sleep 2\n' }));
    const long = await backend.build(16, 'wait-long-0001');
    const { build } = await backend.build(17, 'wait-short-001');
    // At its deadline, the status then: the 30 s build's (the 2 s one could end within a second on a loaded machine).
    expect(await backend.wait(16, long.build, 'running', 1)).toMatchObject({ state: 'running' });
    const ended = await backend.wait(17, build, 'running', 60);
    expect(ended).toMatchObject({
      state: 'succeeded',
      artifacts: expect.arrayContaining([expect.objectContaining({ name: 'image.raw' })]),
    });
    // Had it answered at its deadline (60 s), the 30 s build would have ended by then.
    expect((await backend.status(16, long.build)).state).toBe('running');
    expect(await backend.wait(17, build, 'running', 60)).toEqual(ended);
    expect(await code(backend.wait(17, 99, 'running', 5))).toBe('not_found');
    await backend.cancel(16, long.build);
  }, 120_000);

  it('a queued item can be cancelled although Jenkins answers 204 (the wrapper confirms through the item)', async () => {
    const authorization = `Basic ${Buffer.from(`${USER.name}:${USER.token}`).toString('base64')}`;
    const api = new JenkinsApi(new Jenkins({ baseUrl: d.url.replace(/\/$/, ''), headers: { authorization } }), {
      baseUrl: d.url.replace(/\/$/, ''),
      authorization,
      timeoutMs: 5000,
    });
    await backend.putJob(14, spec());
    const t = await api.trigger('kiln-job-14', { [KEY_PARAM]: 'queued-cancel-01' }, '60sec');
    expect(t.created).toBe(true);
    const again = await api.trigger('kiln-job-14', { [KEY_PARAM]: 'queued-cancel-01' }, '60sec');
    expect(again).toEqual({ id: t.id, created: false }); // the 303 Location, not an error
    expect(await backend.listQueue()).toContainEqual(
      expect.objectContaining({
        id: t.id!,
        job: 14,
        backendName: 'kiln-job-14',
        why: expect.stringMatching(/quiet period/),
      }),
    );
    expect(await api.cancelQueueItem(t.id!)).toBe(true);
    expect((await backend.listQueue()).find((q) => q.id === t.id)).toBeUndefined();
    expect((await jobJson(14)).nextBuildNumber).toBe(1);
  });

  it('lists unmanaged jobs as managed:false and queue items of any job', async () => {
    await raw.job.create('someone-elses-job', '<project><disabled>false</disabled><builders/></project>');
    const jobs = await backend.listJobs();
    expect(jobs).toContainEqual({ backendName: 'someone-elses-job', managed: false, enabled: true });
    expect(jobs.find((j) => j.job === 10)).toMatchObject({ managed: true, lastBuild: 1 });
    await raw.job.build('someone-elses-job', { delay: '60sec' });
    expect(await backend.listQueue()).toContainEqual(expect.objectContaining({ backendName: 'someone-elses-job' }));
    expect((await backend.listQueue()).find((q) => q.backendName === 'someone-elses-job')?.job).toBeUndefined();
  });
});

describe('jenkins backend: failures', () => {
  it('case 31: job ids that are not Kiln job numbers (another folder, ../x) are refused before any request to Jenkins', async () => {
    const before = d.requests();
    for (const job of [0, -1, 1.5, Number.NaN, 1e13, Number.MAX_SAFE_INTEGER + 2]) {
      expect(await code(backend.putJob(job, spec())), String(job)).toBe('invalid_input');
      expect(await code(backend.setEnabled(job, true))).toBe('invalid_input');
      expect(await code(backend.deleteJob(job))).toBe('invalid_input');
      expect(await code(backend.build(job, 'some-valid-key'))).toBe('invalid_input');
      expect(await code(backend.status(job, 1))).toBe('invalid_input');
    }
    expect(await code(backend.status(10, 0))).toBe('invalid_input');
    expect(await code(backend.build(10, '../x; rm'))).toBe('invalid_input');
    expect(await code(backend.artifact(10, 1, '../config.xml' as never, 0))).toBe('invalid_input');
    expect(d.requests()).toBe(before);
    for (const folder of ['a/b', '..', 'http://evil/', 'x.', '']) {
      expect(() => makeBackend({ folder }), folder).toThrow(/folder/);
    }
    expect(() => makeBackend({}, d.url.replace('http://', 'http://u:p@'))).toThrow(/without credentials/);
    expect(() => makeBackend({ sdkCommand: ['/bin/kiln; id'] })).toThrow(/sdkCommand/);
    expect(d.requests()).toBe(before);
  });

  it('Jenkins unreachable → backend_unavailable; bad token → backend_unavailable, never a half-done build', async () => {
    const dead = makeBackend({}, 'http://127.0.0.1:9/');
    expect(await code(dead.putJob(1, spec()))).toBe('backend_unavailable');
    expect(await code(dead.build(1, 'unreachable-key-1'))).toBe('backend_unavailable');
    expect(await code(dead.status(1, 1))).toBe('backend_unavailable');
    expect(await code(dead.artifact(1, 1, 'image.raw', 0))).toBe('backend_unavailable');
    const wrong = makeBackend({ token: 'not-the-token' });
    const err = await wrong.listJobs().catch((e: KilnError) => e);
    expect(isKilnError(err, 'backend_unavailable') && /credentials/.test(err.message)).toBe(true);
  });

  it("case 47 (the glue's half): a hard restart of Jenkins mid-build: unavailable while down, then `lost` with a reason, nothing doubled", async () => {
    await backend.putJob(20, spec({ dockerfile: 'FROM x\n# sleep 60\n' }));
    const r = await backend.build(20, 'restart-key-00001');
    await until(async () => (await backend.log(20, r.build, 0)).text.includes('"stage":"build"'));
    await d.crash();
    expect(await code(backend.status(20, r.build))).toBe('backend_unavailable');
    expect(await code(backend.build(20, 'restart-key-00002'))).toBe('backend_unavailable');
    await d.start();
    const st = await backend.status(20, r.build);
    expect(st).toMatchObject({
      state: 'lost',
      reason: expect.stringMatching(/^interrupted: the build was cut off in Jenkins/),
    });
    // A retry of the first request finds its build; the refused second request was never queued.
    expect(await backend.build(20, 'restart-key-00001')).toEqual({ build: r.build, created: false });
    expect(
      (await raw.queue.list()).filter((i: { task: { name: string } }) => i.task.name === 'kiln-job-20'),
    ).toHaveLength(0);
    const next = await backend.build(20, 'restart-key-00002');
    expect(next).toEqual({ build: r.build + 1, created: true });
    expect(await backend.build(20, 'restart-key-00002')).toEqual({ build: r.build + 1, created: false });
    await backend.cancel(20, next.build);
  });

  it('takes the token from KILN_GLUE_JENKINS_TOKEN_FILE; a build stuck in the queue answers timeout and a retry with the same key finds it', async () => {
    const tokenFile = path.join(tmp.dir, 'jenkins-token');
    writeFileSync(tokenFile, `${USER.token}\n`, { mode: 0o600 });
    const config = loadConfig({
      KILN_GLUE_BACKEND: 'jenkins',
      KILN_GLUE_JENKINS_URL: d.url,
      KILN_GLUE_JENKINS_USER: USER.name,
      KILN_GLUE_JENKINS_TOKEN_FILE: tokenFile,
      KILN_GLUE_JENKINS_SDK_COMMAND: `${sdk}`,
    });
    const b = createJenkinsBackend({ config, logger: silentLogger, followTimeoutMs: 1500, pollMs: 50 });
    await b.putJob(30, spec({ dockerfile: 'FROM x\n# sleep 60\n' }));
    const first = await b.build(30, 'stuck-first-00001');
    expect(await code(b.build(30, 'stuck-second-0001'))).toBe('timeout'); // blocked behind the first build
    expect((await b.listQueue()).filter((q) => q.job === 30)).toHaveLength(1);
    await b.cancel(30, first.build);
    const second = await until(async () => b.build(30, 'stuck-second-0001').catch(() => undefined));
    expect(second).toEqual({ build: first.build + 1, created: false });
    await b.cancel(30, second.build);
  });

  it('survives the client returning NaN for a queue id (a Location without its trailing slash): it finds the item by key', async () => {
    const b = createJenkinsBackend({
      config: loadConfig(
        {},
        {
          glue: { backend: 'jenkins', jenkins: { url: d.url, user: USER.name, token: USER.token, sdkCommand: [sdk] } },
        },
      ),
      logger: silentLogger,
      pollMs: 50,
      jenkinsClientFactory: (opts) => {
        const c = new Jenkins(opts);
        const build = c.job.build.bind(c.job);
        c.job.build = (async (...args: Parameters<typeof build>) => {
          await build(...args);
          return Number.NaN;
        }) as typeof c.job.build;
        return c;
      },
    });
    await b.putJob(31, spec());
    const r = await b.build(31, 'nan-queue-id-0001');
    expect(r).toEqual({ build: 1, created: true });
    expect(await b.build(31, 'nan-queue-id-0001')).toEqual({ build: 1, created: false });
  });

  it('is what createBackend makes for glue.backend=jenkins (the local backend otherwise)', async () => {
    const jenkins = await createBackend(
      loadConfig({
        KILN_DATA_DIR: tmp.dir,
        KILN_GLUE_BACKEND: 'jenkins',
        KILN_GLUE_JENKINS_URL: d.url,
        KILN_GLUE_JENKINS_USER: USER.name,
        KILN_GLUE_JENKINS_TOKEN: USER.token,
      }),
      silentLogger,
      { runner: false },
    );
    expect(jenkins).toBeInstanceOf(JenkinsBackend);
    expect(jenkins.kind).toBe('jenkins');
    expect((await createBackend(loadConfig({ KILN_DATA_DIR: tmp.dir }), silentLogger, { runner: false })).kind).toBe(
      'local',
    );
  });
});

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(Buffer.from(c as Buffer));
  return Buffer.concat(parts);
}

describe('jenkins backend: agent labels', () => {
  it("case 34 (the glue's half): jobs carry glue.jenkins.label: they run on the node with that label and wait forever for a missing one", async () => {
    const labelled = await startJenkinsDouble({
      users: [USER],
      labels: ['kiln-builder', 'linux'],
      nodeName: 'builder-1',
    });
    try {
      const make = (label: string) =>
        createJenkinsBackend({
          config: loadConfig(
            {},
            {
              glue: {
                backend: 'jenkins',
                jenkins: { url: labelled.url, user: USER.name, token: USER.token, sdkCommand: [sdk], label },
              },
            },
          ),
          logger: silentLogger,
          followTimeoutMs: 2500,
          pollMs: 50,
        });
      const ok = make('kiln-builder');
      await ok.putJob(1, spec());
      const r = await ok.build(1, 'labelled-build-01');
      const st = await until(async () => {
        const s = await ok.status(1, r.build);
        return s.state !== 'running' && s;
      });
      expect(st.state).toBe('succeeded');
      expect((await ok.log(1, r.build, 0)).text).toContain(
        'Building remotely on builder-1 (kiln-builder linux) in workspace',
      );
      const gpu = make('gpu && linux');
      await gpu.putJob(2, spec());
      expect(await code(gpu.build(2, 'unlabelled-build'))).toBe('timeout');
      expect((await gpu.listQueue()).find((q) => q.job === 2)?.why).toBe(
        'There are no nodes with the label ‘gpu && linux’',
      );
    } finally {
      await labelled.stop();
    }
  });
});

describe('jenkins backend: exact build inputs (finding 11)', () => {
  const b64 = (t: string) => Buffer.from(t).toString('base64');
  const params = async (job: number, n: number) => {
    const b = (await raw.build.get(`kiln-job-${job}`, n)) as {
      actions: Array<{ parameters?: Array<{ name: string; value: string }> }>;
    };
    return Object.fromEntries(b.actions.flatMap((a) => a.parameters ?? []).map((p) => [p.name, p.value]));
  };

  it('put A, put B, build for A: conflict and nothing queued; a checked build carries its inputs, so a later put cannot change it', async () => {
    const A = 'FROM debian:bookworm\nRUN echo version-A\n';
    const B = 'FROM debian:bookworm\nRUN echo version-B\n';
    await backend.putJob(40, spec({ dockerfile: A }));
    await backend.putJob(40, spec({ dockerfile: B }));
    expect(await code(backend.build(40, 'exact-build-for-a', specSha256(A)))).toBe('conflict');
    expect(
      (await raw.queue.list()).filter((i: { task: { name: string } }) => i.task.name === 'kiln-job-40'),
    ).toHaveLength(0);
    // Put A and trigger for A, then B lands while the trigger waits in its quiet period: the build still runs A.
    await backend.putJob(40, spec({ dockerfile: A }));
    const built = backend.build(40, 'exact-build-for-a', specSha256(A));
    await until(async () =>
      (await raw.queue.list()).some((i: { task: { name: string } }) => i.task.name === 'kiln-job-40'),
    );
    await backend.putJob(40, spec({ dockerfile: B }));
    const { build } = await built;
    expect((await params(40, build)).DOCKERFILE_B64).toBe(b64(A));
    expect(await backend.build(40, 'exact-build-for-b', specSha256(B))).toMatchObject({ created: true });
    expect((await params(40, build + 1)).DOCKERFILE_B64).toBe(b64(B));
    const ctx = Buffer.from('tar bytes');
    await backend.putJob(40, spec({ dockerfile: A, contextTarBase64: ctx.toString('base64') }));
    expect(await code(backend.build(40, 'exact-build-for-a2', specSha256(A)))).toBe('conflict');
    const withCtx = await backend.build(40, 'exact-build-for-a3', specSha256(A, ctx));
    expect((await params(40, withCtx.build)).CONTEXT_B64).toBe(ctx.toString('base64'));
    await until(async () => {
      const st = await backend.status(40, withCtx.build);
      return st.state !== 'running' && st;
    });
  }, 90_000);
});

describe('jenkins backend: which Jenkins the glue accepts (cases 35 and 36)', () => {
  it('case 35: versionAllowed reads LTS floors per line and weekly floors onwards', () => {
    const floors = ['2.555.3', '2.568'];
    for (const v of ['2.555.3', '2.555.4', '2.568', '2.568.1', '2.568.2', '2.579', '2.600.1', '3.1'])
      expect(versionAllowed(v, floors), v).toBe(true);
    for (const v of ['2.555.2', '2.555', '2.556', '2.567', '2.560.1', '2.442', '1.650', '', 'weird', '2'])
      expect(versionAllowed(v, floors), v).toBe(false);
    expect(versionAllowed('2.579-SNAPSHOT (private)', floors)).toBe(true);
  });

  it.each([
    ['2.555.2', 'refused'],
    ['2.560', 'refused'],
    ['2.567', 'refused'],
    ['2.555.3', 'accepted'],
    ['2.568', 'accepted'],
    ['2.600.1', 'accepted'],
  ])("case 35: a Jenkins reporting X-Jenkins %s is %s at the glue's start", async (version, outcome) => {
    const accepted = outcome === 'accepted';
    const dj = await startJenkinsDouble({ users: [USER], version });
    try {
      const b = makeBackend({}, dj.url);
      const err = await b.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      if (accepted) {
        expect(err).toBeUndefined();
        expect(await b.listJobs()).toEqual([]);
      } else {
        expect(isKilnError(err, 'backend_unavailable')).toBe(true);
        expect((err as Error).message).toContain(`Jenkins ${version} is older than the minimum this glue accepts`);
        expect(await code(b.putJob(1, spec()))).toBe('backend_unavailable');
        const job = await fetch(new URL('/job/kiln-job-1/api/json', dj.url), {
          headers: { authorization: `Basic ${Buffer.from(`${USER.name}:${USER.token}`).toString('base64')}` },
        });
        expect(job.status).toBe(404); // refused before anything was made
      }
    } finally {
      await dj.stop();
    }
  });

  it('case 35: glue.jenkins.minVersion (KILN_GLUE_JENKINS_MIN_VERSION) sets the floor', async () => {
    const dj = await startJenkinsDouble({ users: [USER], version: '2.568.2' });
    try {
      await expect(makeBackend({ minVersion: ['2.600'] }, dj.url).start()).rejects.toThrow(
        /Jenkins 2\.568\.2 is older/,
      );
      await makeBackend({ minVersion: ['2.500'] }, dj.url).start();
      expect(loadConfig({ KILN_GLUE_JENKINS_MIN_VERSION: '2.555.3,2.568' }).glue.jenkins.minVersion).toEqual([
        '2.555.3',
        '2.568',
      ]);
      expect(() => loadConfig({ KILN_GLUE_JENKINS_MIN_VERSION: 'latest' })).toThrow(/KILN_GLUE_JENKINS_MIN_VERSION/);
    } finally {
      await dj.stop();
    }
  });

  it('case 36: the glue refuses a token with Overall/Administer (through GET /script); its own token gets 403 there', async () => {
    const admin = { name: 'kiln-admin', token: 'admin-token-0001', admin: true };
    const dj = await startJenkinsDouble({ users: [USER, admin] });
    try {
      const script = await fetch(new URL('/script', dj.url), {
        headers: { authorization: `Basic ${Buffer.from(`${USER.name}:${USER.token}`).toString('base64')}` },
      });
      expect(script.status).toBe(403);
      await makeBackend({}, dj.url).start();
      const asAdmin = makeBackend({ user: admin.name, token: admin.token }, dj.url);
      const err = await asAdmin.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isKilnError(err, 'backend_unavailable')).toBe(true);
      expect((err as Error).message).toMatch(/has Overall\/Administer/);
      const before = dj.requests();
      expect(await code(asAdmin.putJob(1, spec()))).toBe('backend_unavailable');
      // Each refused call asks the two check endpoints again and nothing else (no job is made).
      expect(dj.requests() - before).toBe(2);
    } finally {
      await dj.stop();
    }
  });

  it("cases 35/36 at first use: a Jenkins that was down at the glue's start is checked at the first call", async () => {
    const port = await (await import('../helpers/glue.js')).freePort();
    const b = makeBackend({}, `http://127.0.0.1:${port}/`);
    await b.start(); // unreachable: not fatal, checked later
    expect(await code(b.listJobs())).toBe('backend_unavailable');
    const dj = await startJenkinsDouble({ users: [USER], version: '2.555.1', port });
    try {
      const err = await b.listJobs().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((err as Error).message).toMatch(/Jenkins 2\.555\.1 is older/);
    } finally {
      await dj.stop();
    }
  });
});

describe("the glue's front doors against a Jenkins it refuses", () => {
  it('case 35: kiln glue-server does not start against an old Jenkins, and kiln glue answers every request with the reason', async () => {
    // Asynchronously: the double answers from this very process.
    const { execFile } = await import('node:child_process');
    const run = (args: string[], env: NodeJS.ProcessEnv) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(kiln, args, { env, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
          resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
        );
      });
    const { kilnSnapshot, freePort } = await import('../helpers/glue.js');
    const { glueEnv } = await import('../jenkins-double/index.js');
    const kiln = await kilnSnapshot(tmp.dir);
    const old = await startJenkinsDouble({ users: [USER], version: '2.555.2' });
    try {
      const env = {
        PATH: process.env.PATH,
        KILN_DATA_DIR: path.join(tmp.dir, 'refused'),
        KILN_SSH_PORT: String(await freePort()),
        ...glueEnv(old, USER, [sdk]),
      };
      const server = await run(['glue-server'], env);
      expect(server.status).toBe(5);
      expect(server.stderr).toContain('kiln glue-server: Jenkins 2.555.2 is older than the minimum this glue accepts');
      const one = await run(['glue'], { ...env, SSH_ORIGINAL_COMMAND: 'jobs.list' });
      expect(one.status).toBe(5);
      expect(JSON.parse(one.stderr)).toEqual({
        error: { code: 'backend_unavailable', message: expect.stringContaining('Jenkins 2.555.2 is older') },
      });
      expect(one.stdout).toBe('');
    } finally {
      await old.stop();
    }
  }, 120_000);
});
