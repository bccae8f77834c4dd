/**
 * The Jenkins double, checked through the real `jenkins` client (and raw HTTP where the client hides the wire).
 * Each test names the JENKINS-REST.md section it checks.
 */
import Jenkins, { type JenkinsError } from 'jenkins';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labelMatches } from './engine.js';
import { startJenkinsDouble, type JenkinsDouble } from './index.js';
import { until } from '../helpers/wait.js';

const USER = { name: 'glue', token: 'tok-123', password: 'pw-456' };
let d: JenkinsDouble;
let jenkins: Jenkins;

const auth = (u = USER.name, p = USER.token) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
const raw = (path: string, init: RequestInit & { headers?: Record<string, string> } = {}) =>
  fetch(new URL(path, d.url), { redirect: 'manual', ...init, headers: { authorization: auth(), ...init.headers } });
const clientFor = (user = USER.name, secret = USER.token, crumbIssuer = true) =>
  new Jenkins({ baseUrl: d.url.replace('http://', `http://${user}:${secret}@`).replace(/\/$/, ''), crumbIssuer });

function jobXml(
  o: {
    script?: string;
    params?: Array<[string, string]>;
    disabled?: boolean;
    artifacts?: string;
    allowEmpty?: boolean;
    timer?: string;
    quiet?: number;
  } = {},
): string {
  const params = o.params?.length
    ? `<hudson.model.ParametersDefinitionProperty><parameterDefinitions>${o.params
        .map(
          ([n, v]) =>
            `<hudson.model.StringParameterDefinition><name>${n}</name><description/><defaultValue>${v}</defaultValue><trim>false</trim></hudson.model.StringParameterDefinition>`,
        )
        .join('')}</parameterDefinitions></hudson.model.ParametersDefinitionProperty>`
    : '';
  return `<?xml version='1.1' encoding='UTF-8'?>
<project><description>test</description><keepDependencies>false</keepDependencies><properties>${params}</properties>
<scm class="hudson.scm.NullSCM"/><canRoam>true</canRoam><disabled>${o.disabled ? 'true' : 'false'}</disabled>
${o.quiet !== undefined ? `<quietPeriod>${o.quiet}</quietPeriod>` : ''}
<triggers>${o.timer ? `<hudson.triggers.TimerTrigger><spec>${o.timer}</spec></hudson.triggers.TimerTrigger>` : ''}</triggers><concurrentBuild>false</concurrentBuild>
<builders><hudson.tasks.Shell><command>${o.script ?? 'mkdir -p out; echo "$GREETING" &gt; out/greeting.txt'}</command></hudson.tasks.Shell>
<jenkins.tasks.DoesNotExist><x/></jenkins.tasks.DoesNotExist></builders>
<publishers>${o.artifacts !== undefined ? `<hudson.tasks.ArtifactArchiver><artifacts>${o.artifacts}</artifacts><allowEmptyArchive>${o.allowEmpty ? 'true' : 'false'}</allowEmptyArchive><onlyIfSuccessful>false</onlyIfSuccessful></hudson.tasks.ArtifactArchiver>` : ''}</publishers>
<buildWrappers/></project>`;
}

const waitFor = <T>(fn: () => Promise<T | undefined | null | false>): Promise<T> => until(fn, 60_000, 50);

async function followQueue(id: number): Promise<number> {
  return waitFor(
    async () => ((await jenkins.queue.item(id)) as { executable: { number: number } | null }).executable?.number,
  );
}
async function finished(name: string, n: number) {
  return waitFor(async () => {
    const b = await jenkins.build.get(name, n);
    return b.building === false && b.result !== null ? b : undefined;
  });
}

beforeAll(async () => {
  d = await startJenkinsDouble({ users: [USER], quietPeriodSeconds: 1 });
  jenkins = clientFor();
});
afterAll(async () => {
  await d?.stop();
});

describe('Jenkins double: auth and crumbs', () => {
  it('§2.1: bad token → 401 with the Basic challenge; anonymous → 403 with X-You-Are-Authenticated-As', async () => {
    const bad = await raw('/api/json', { headers: { authorization: auth(USER.name, 'wrong') } });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toBe('Basic realm="Jenkins"');
    const anon = await fetch(new URL('/api/json', d.url));
    expect(anon.status).toBe(403);
    expect(anon.headers.get('x-you-are-authenticated-as')).toBe('anonymous');
    await expect(clientFor(USER.name, 'wrong').info()).rejects.toMatchObject({ res: { statusCode: 401 } });
  });

  it('§2.2: password POSTs need a session-bound crumb; API-token POSTs are exempt; node-jenkins sends crumb + cookie', async () => {
    const noCrumb = await raw('/createItem?name=crumbless', {
      method: 'POST',
      headers: { authorization: auth(USER.name, USER.password), 'content-type': 'text/xml' },
      body: jobXml(),
    });
    expect(noCrumb.status).toBe(403);
    expect(await noCrumb.text()).toContain('No valid crumb');
    const crumbRes = await raw('/crumbIssuer/api/json', { headers: { authorization: auth(USER.name, USER.password) } });
    const crumb = (await crumbRes.json()) as { _class: string; crumb: string; crumbRequestField: string };
    expect(crumb._class).toBe('hudson.security.csrf.DefaultCrumbIssuer');
    expect(crumb.crumbRequestField).toBe('Jenkins-Crumb');
    expect(crumb.crumb).toMatch(/^[0-9a-f]{64}$/);
    const cookie = crumbRes.headers.get('set-cookie')!.split(';')[0]!;
    expect(cookie).toMatch(/^JSESSIONID\.[0-9a-f]{8}=/);
    // The crumb alone, without its session, is refused.
    const noSession = await raw('/createItem?name=crumbless', {
      method: 'POST',
      headers: {
        authorization: auth(USER.name, USER.password),
        'content-type': 'text/xml',
        'Jenkins-Crumb': crumb.crumb,
      },
      body: jobXml(),
    });
    expect(noSession.status).toBe(403);
    await clientFor(USER.name, USER.password, true).job.create('with-password', jobXml());
    await clientFor(USER.name, USER.token, false).job.create('with-token', jobXml());
    expect(await jenkins.job.exists('with-password')).toBe(true);
    expect(await jenkins.job.exists('with-token')).toBe(true);
  });
});

describe('Jenkins double: version and permissions (what the glue checks, cases 35 and 36)', () => {
  it('§2.5: X-Jenkins carries the configured version on api/json and on layout pages; whoAmI answers anonymous and users', async () => {
    const old = await startJenkinsDouble({ users: [USER], version: '2.555.2' });
    try {
      const r = await fetch(new URL('/whoAmI/api/json', old.url), { headers: { authorization: auth() } });
      expect(r.headers.get('x-jenkins')).toBe('2.555.2');
      expect(r.headers.get('content-type')).toBe('application/json;charset=UTF-8');
      // J hudson/security/WhoAmI.java: name, authenticated, anonymous, authorities (groups, not permissions).
      expect(await r.json()).toEqual({
        _class: 'hudson.security.WhoAmI',
        anonymous: false,
        authenticated: true,
        authorities: ['authenticated'],
        name: USER.name,
      });
      const anon = await fetch(new URL('/whoAmI/api/json', old.url));
      expect(anon.status).toBe(200); // an UnprotectedRootAction
      expect(await anon.json()).toMatchObject({ anonymous: true, name: 'anonymous' });
      // §2.1: bad credentials are refused before any route, whoAmI included.
      expect(
        (await fetch(new URL('/whoAmI/api/json', old.url), { headers: { authorization: auth(USER.name, 'wrong') } }))
          .status,
      ).toBe(401);
      expect(
        (await fetch(new URL('/', old.url), { headers: { authorization: auth() } })).headers.get('x-jenkins'),
      ).toBe('2.555.2');
    } finally {
      await old.stop();
    }
    expect((await raw('/api/json')).headers.get('x-jenkins')).toBe('2.568.2');
  });

  it('case 36 (§2.1): GET /script is 403 with X-Required-Permission Administer without Overall/Administer, 200 with it', async () => {
    const admin = { name: 'root', token: 'root-token-1', admin: true };
    const both = await startJenkinsDouble({ users: [USER, admin] });
    try {
      const denied = await fetch(new URL('/script', both.url), {
        headers: { authorization: auth() },
        redirect: 'manual',
      });
      expect(denied.status).toBe(403);
      expect(denied.headers.get('x-required-permission')).toBe('hudson.model.Hudson.Administer');
      expect(denied.headers.get('x-you-are-authenticated-as')).toBe(USER.name);
      expect(denied.headers.get('x-jenkins')).toBe('2.568.2');
      const post = await fetch(new URL('/script', both.url), {
        method: 'POST',
        headers: { authorization: auth() },
        body: new URLSearchParams({ script: 'println 1' }),
      });
      expect(post.status).toBe(403);
      const allowed = await fetch(new URL('/script', both.url), {
        headers: { authorization: auth(admin.name, admin.token) },
      });
      expect(allowed.status).toBe(200);
      expect(await allowed.text()).toContain('Script Console');
    } finally {
      await both.stop();
    }
  });
});

describe('Jenkins double: jobs', () => {
  it('§3.3, §2.7, §8.8: create → 200; same name in another case → 400 X-Error; unsafe name → 400; bad XML → 500 and no job', async () => {
    const ok = await raw('/createItem?name=Alpha', {
      method: 'POST',
      headers: { 'content-type': 'text/xml' },
      body: jobXml(),
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('location')).toBeNull();
    await expect(jenkins.job.create('alpha', jobXml())).rejects.toThrow(
      'jenkins: job.create: A job already exists with the name "alpha"',
    );
    const dup = await raw('/createItem?name=ALPHA', {
      method: 'POST',
      headers: { 'content-type': 'text/xml' },
      body: jobXml(),
    });
    expect(dup.status).toBe(400);
    expect(dup.headers.get('x-error')).toBe('A job already exists with the name ?ALPHA?');
    const unsafe = await raw('/createItem?name=a%3Bb', {
      method: 'POST',
      headers: { 'content-type': 'text/xml' },
      body: jobXml(),
    });
    expect(unsafe.status).toBe(400);
    expect(unsafe.headers.get('x-error')).toBe('?;? is an unsafe character');
    const noType = await raw('/createItem?name=beta', { method: 'POST', body: jobXml() });
    expect(noType.status).toBe(400);
    await expect(jenkins.job.create('broken', '<project><description>')).rejects.toMatchObject({
      res: { statusCode: 500 },
    });
    expect(await jenkins.job.exists('broken')).toBe(false);
    await expect(jenkins.job.create('folder', '<com.cloudbees.hudson.plugins.folder.Folder/>')).rejects.toMatchObject({
      res: { statusCode: 500 },
    });
    // §2.7: lookups are case-insensitive.
    expect((await jenkins.job.get('ALPHA')).name).toBe('Alpha');
  });

  it('§3.6, §8.9-10: config.xml GET is application/xml, XML 1.1, re-serialised with unknown builders dropped; POST → 200', async () => {
    const res = await raw('/job/Alpha/config.xml');
    expect(res.headers.get('content-type')).toBe('application/xml');
    const xml = await res.text();
    expect(xml.startsWith("<?xml version='1.1' encoding='UTF-8'?>")).toBe(true);
    expect(xml).toContain('hudson.tasks.Shell');
    expect(xml).not.toContain('DoesNotExist');
    await jenkins.job.config('Alpha', jobXml({ script: 'echo updated' }));
    expect(await jenkins.job.config('Alpha')).toContain('echo updated');
    await expect(jenkins.job.config('Alpha', '<project>')).rejects.toMatchObject({ res: { statusCode: 500 } });
  });

  it('§3.8, §5.1-5.2: enable/disable answer 302 and show in config.xml, buildable, color and disabled; build → 409', async () => {
    await jenkins.job.disable('Alpha');
    await jenkins.job.disable('Alpha'); // idempotent
    let j = await jenkins.job.get('Alpha');
    expect(j).toMatchObject({
      _class: 'hudson.model.FreeStyleProject',
      buildable: false,
      color: 'disabled',
      disabled: true,
      inQueue: false,
      nextBuildNumber: 1,
      lastBuild: null,
      healthReport: [],
    });
    expect(await jenkins.job.config('Alpha')).toContain('<disabled>true</disabled>');
    const r = await raw('/job/Alpha/build', { method: 'POST' });
    expect(r.status).toBe(409);
    await jenkins.job.enable('Alpha');
    j = await jenkins.job.get('Alpha');
    expect(j).toMatchObject({ buildable: true, color: 'notbuilt', disabled: false });
    expect(await jenkins.job.config('Alpha')).toContain('<disabled>false</disabled>');
    const e = await raw('/job/Alpha/enable', { method: 'POST' });
    expect(e.status).toBe(302);
    expect(e.headers.get('location')).toBe(`${d.url}job/Alpha/`);
  });

  it('§2.3, §8.17: GET on POST-only endpoints → 405 + Allow: POST; HEAD on api/json works; §3.13 term → 404', async () => {
    for (const p of [
      '/job/Alpha/enable',
      '/job/Alpha/disable',
      '/job/Alpha/doDelete',
      '/job/Alpha/build',
      '/job/Alpha/buildWithParameters',
      '/createItem?name=x',
      '/queue/cancelItem?id=1',
    ]) {
      const r = await raw(p);
      expect(r.status, p).toBe(405);
      expect(r.headers.get('allow'), p).toBe('POST');
    }
    expect((await raw('/job/Alpha/api/json', { method: 'HEAD' })).status).toBe(200);
    expect((await raw('/job/nope/api/json', { method: 'HEAD' })).status).toBe(404);
    expect(await jenkins.job.exists('nope')).toBe(false);
  });

  it('§3.1, §2.5, §8.20: api/json root lists jobs sorted case-insensitively with application/json and version headers', async () => {
    const r = await raw('/api/json');
    expect(r.headers.get('content-type')).toBe('application/json;charset=UTF-8');
    expect(r.headers.get('x-jenkins')).toBeTruthy();
    const names = (await jenkins.job.list()).map((j: { name: string }) => j.name);
    expect(names).toEqual([...names].sort((a: string, b: string) => a.toLowerCase().localeCompare(b.toLowerCase())));
    expect((await jenkins.job.list())[0]).toMatchObject({
      _class: 'hudson.model.FreeStyleProject',
      color: expect.any(String),
      url: expect.stringMatching(/^http:\/\//),
    });
  });
});

describe('Jenkins double: builds and queue', () => {
  it('§3.10-3.11, §6, §8.1-4: 201 + absolute Location with trailing slash; quiet period merges; 303 for identical parameters; /build on a parameterised job → 400', async () => {
    await jenkins.job.create(
      'params',
      jobXml({
        params: [
          ['GREETING', 'hello'],
          ['Other', 'x'],
        ],
        artifacts: 'out/*.txt',
        quiet: 1,
      }),
    );
    expect((await raw('/job/params/build', { method: 'POST' })).status).toBe(400);
    const first = await raw('/job/params/buildWithParameters', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'GREETING=hi',
    });
    expect(first.status).toBe(201);
    const loc = first.headers.get('location')!;
    expect(loc).toMatch(new RegExp(`^${d.url}queue/item/[0-9]+/$`));
    const id = Number(loc.split('/').at(-2));
    const again = await raw('/job/params/buildWithParameters', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'GREETING=hi',
    });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe(loc);
    await expect(jenkins.job.build('params', { parameters: { GREETING: 'hi' } })).rejects.toThrow(
      'jenkins: job.build: see other',
    );
    const item = await jenkins.queue.item(id);
    expect(item).toMatchObject({
      _class: 'hudson.model.Queue$WaitingItem',
      id,
      url: `queue/item/${id}/`,
      why: expect.stringMatching(/^In the quiet period/),
    });
    expect((await jenkins.queue.list()).map((i: { id: number }) => i.id)).toContain(id);
    expect((await jenkins.job.get('params')).inQueue).toBe(true);
    const n = await followQueue(id);
    const b = await finished('params', n);
    expect(b).toMatchObject({
      _class: 'hudson.model.FreeStyleBuild',
      id: String(n),
      number: n,
      queueId: id,
      result: 'SUCCESS',
      building: false,
      inProgress: false,
      artifacts: [{ displayPath: 'greeting.txt', fileName: 'greeting.txt', relativePath: 'out/greeting.txt' }],
    });
    expect(b.duration).toBeGreaterThan(0);
    expect(b.actions[0].parameters).toEqual([
      { _class: 'hudson.model.StringParameterValue', name: 'GREETING', value: 'hi' },
      { _class: 'hudson.model.StringParameterValue', name: 'Other', value: 'x' },
    ]);
    const art = await raw(`/job/params/${n}/artifact/out/greeting.txt`);
    expect(await art.text()).toBe('hi\n');
    const left = await jenkins.queue.item(id);
    expect(left).toMatchObject({ _class: 'hudson.model.Queue$LeftItem', cancelled: false, executable: { number: n } });
  });

  it('§6.4-5, §3.15, §8.14: build 404 until it exists; progressiveText byte offsets, X-Text-Size, X-More-Data only while running', async () => {
    await jenkins.job.create('slow', jobXml({ script: 'echo start; sleep 1.5; echo end', quiet: 0 }));
    const id = await jenkins.job.build('slow');
    expect(Number.isInteger(id)).toBe(true);
    await expect(jenkins.build.get('slow', 1)).rejects.toMatchObject({ notFound: true });
    const n = await followQueue(id);
    const running = await jenkins.build.get('slow', n);
    expect(running).toMatchObject({ building: true, result: null, duration: 0 });
    expect((await jenkins.job.get('slow')).color).toBe('notbuilt_anime');
    const first = await jenkins.build.log('slow', n, { meta: true });
    expect(first.more).toBe(true);
    await finished('slow', n);
    const all = await jenkins.build.log('slow', n, { meta: true });
    expect(all.more).toBe(false);
    expect(all.text).toMatch(/^Started by user glue\n/);
    expect(all.text).toContain('$ /bin/sh -xe ');
    expect(all.text).toContain('+ echo start\nstart\n');
    expect(all.text.endsWith('Finished: SUCCESS\n')).toBe(true);
    const size = Number(all.size);
    expect(size).toBe(Buffer.byteLength(all.text));
    const tail = await jenkins.build.log('slow', n, { start: size - 18, meta: true });
    expect(tail.text).toBe('Finished: SUCCESS\n');
    const r = await raw(`/job/slow/${n}/logText/progressiveText`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `start=${size + 100}`,
    });
    expect(r.headers.get('content-type')).toBe('text/plain;charset=UTF-8');
    expect(r.headers.get('x-more-data')).toBeNull();
    expect(await r.text()).toBe(all.text); // start beyond the end restarts at 0
    expect((await jenkins.job.get('slow')).color).toBe('blue');
    await expect(jenkins.build.term('slow', n)).rejects.toThrow(/not found/);
  });

  it('§3.18, §8.12: cancelQueue answers 204, so node-jenkins throws, but the item is cancelled', async () => {
    await jenkins.job.create('cancel-me', jobXml({ script: 'true', quiet: 30 }));
    const id = await jenkins.job.build('cancel-me');
    const err = (await jenkins.queue.cancel(id).catch((e: JenkinsError) => e)) as JenkinsError;
    // require302 builds its own Error after the response hook, so there is not even err.res to look at.
    expect(err.message).toBe(`jenkins: queue.cancel: failed to cancel: ${id}`);
    const wire = await raw(`/queue/item/${id}/cancelQueue`, { method: 'POST' });
    expect(wire.status).toBe(204);
    expect(await jenkins.queue.item(id)).toMatchObject({
      _class: 'hudson.model.Queue$LeftItem',
      cancelled: true,
      executable: null,
    });
    expect((await raw('/queue/cancelItem?id=999999', { method: 'POST' })).status).toBe(404);
    expect((await jenkins.job.get('cancel-me')).nextBuildNumber).toBe(1);
  });

  it('§3.12: stop a running build → 302 to the Referer, ABORTED; stop again → 302', async () => {
    await jenkins.job.create('stop-me', jobXml({ script: 'echo started; sleep 30', quiet: 0 }));
    const n = await followQueue(await jenkins.job.build('stop-me'));
    await waitFor(async () => ((await jenkins.build.log('stop-me', n)) as string).includes('started'));
    await jenkins.build.stop('stop-me', n);
    const b = await finished('stop-me', n);
    expect(b.result).toBe('ABORTED');
    expect(await jenkins.build.log('stop-me', n)).toContain('Aborted by glue');
    await jenkins.build.stop('stop-me', n);
    expect((await jenkins.job.get('stop-me')).color).toBe('aborted');
  });

  it('§4, §8.21-22: a failing shell step → FAILURE (publishers still run); no artifacts matched → FAILURE', async () => {
    await jenkins.job.create(
      'fails',
      jobXml({ script: 'mkdir -p out; echo x > out/a.txt; exit 3', artifacts: 'out/*.txt', quiet: 0 }),
    );
    const n = await followQueue(await jenkins.job.build('fails'));
    const b = await finished('fails', n);
    expect(b.result).toBe('FAILURE');
    expect(b.artifacts).toHaveLength(1);
    const log = (await jenkins.build.log('fails', n)) as string;
    expect(log).toContain("Build step 'Execute shell' marked build as failure");
    expect(log.endsWith('Finished: FAILURE\n')).toBe(true);
    await jenkins.job.create('empty', jobXml({ script: 'true', artifacts: 'out/*.bin', quiet: 0 }));
    const m = await followQueue(await jenkins.job.build('empty'));
    expect((await finished('empty', m)).result).toBe('FAILURE');
    expect(await jenkins.build.log('empty', m)).toContain(
      'ERROR: No artifacts found that match the file pattern "out/*.bin". Configuration error?',
    );
  });

  it('ProcessTreeKiller: what a build step leaves running is killed when the step ends', async () => {
    // Otherwise a process left by one build (a killed shell's child) writes into the next build's workspace.
    await jenkins.job.create(
      'leaves-a-child',
      jobXml({ script: 'sleep 300 &amp; echo $! &gt; "$WORKSPACE/child.pid"', quiet: 0 }),
    );
    const n = await followQueue(await jenkins.job.build('leaves-a-child'));
    expect((await finished('leaves-a-child', n)).result).toBe('SUCCESS');
    const { readFileSync } = await import('node:fs');
    const pid = Number(readFileSync(`${d.dataDir}/workspace/leaves-a-child/child.pid`, 'utf8'));
    expect(pid).toBeGreaterThan(0);
    await waitFor(async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
  });

  it('§7: parameters reach the shell as NAME and upper-case NAME; the timer builds with defaults, "Started by timer", not when disabled', async () => {
    await jenkins.job.create(
      'env',
      jobXml({
        script: 'mkdir -p out; printf "%s|%s|%s" "$Other" "$OTHER" "$BUILD_NUMBER" > out/env.txt',
        params: [['Other', 'dflt']],
        artifacts: 'out/*',
        timer: 'H H * * *',
      }),
    );
    const qid = d.fireTimer('env')!;
    expect(qid).toBeGreaterThan(0);
    const n = await followQueue(qid);
    const b = await finished('env', n);
    expect(b.actions[1].causes[0]).toMatchObject({
      _class: 'hudson.triggers.TimerTrigger$TimerTriggerCause',
      shortDescription: 'Started by timer',
    });
    expect(await (await raw(`/job/env/${n}/artifact/out/env.txt`)).text()).toBe(`dflt|dflt|${n}`);
    await jenkins.job.disable('env');
    expect(d.fireTimer('env')).toBeNull();
    expect(d.fireTimer('params')).toBeNull(); // no TimerTrigger
  });

  it('§3.19: artifacts download whole or from a byte offset (Range → 206), missing → 404', async () => {
    const whole = await raw('/job/env/1/artifact/out/env.txt');
    expect(whole.status).toBe(200);
    const part = await raw('/job/env/1/artifact/out/env.txt', { headers: { range: 'bytes=5-' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 5-10/11');
    expect(await part.text()).toBe('dflt|1');
    expect((await raw('/job/env/1/artifact/out/nope.txt')).status).toBe(404);
    expect((await raw('/job/env/1/artifact/out%2f..%2f..%2f..%2fconfig.xml')).status).toBe(404);
  });

  it('§3.9: deleting a job with a running build interrupts it and leaves nothing behind', async () => {
    await jenkins.job.create(
      'doomed',
      jobXml({ script: 'mkdir -p out; echo x > out/a.txt; echo going; sleep 30', artifacts: 'out/*', quiet: 0 }),
    );
    const n = await followQueue(await jenkins.job.build('doomed'));
    await waitFor(async () => ((await jenkins.build.log('doomed', n)) as string).includes('going'));
    await jenkins.job.destroy('doomed');
    expect(await jenkins.job.exists('doomed')).toBe(false);
    const { existsSync } = await import('node:fs');
    await waitFor(async () => !existsSync(`${d.dataDir}/jobs/doomed`));
  });

  it('§3.9: doDelete → 302, the job and its builds are gone; deleting again → 404', async () => {
    const r = await raw('/job/env/doDelete', { method: 'POST' });
    expect(r.status).toBe(302);
    expect(await jenkins.job.exists('env')).toBe(false);
    expect((await raw('/job/env/1/api/json')).status).toBe(404);
    await expect(jenkins.job.destroy('env')).rejects.toMatchObject({ notFound: true });
  });

  it('§6 + SECURITY-CHECKLIST 5.1: a hard restart mid-build leaves the build ABORTED and keeps jobs, numbers and queued items', async () => {
    await jenkins.job.create('restart', jobXml({ script: 'echo going; sleep 30', quiet: 0 }));
    const n = await followQueue(await jenkins.job.build('restart'));
    await waitFor(async () => ((await jenkins.build.log('restart', n)) as string).includes('going'));
    await jenkins.job.create('queued', jobXml({ script: 'true', quiet: 60 }));
    const qid = await jenkins.job.build('queued');
    await d.crash();
    await expect(jenkins.job.get('restart')).rejects.toThrow();
    await expect(fetch(new URL('/api/json', d.url))).rejects.toThrow();
    await d.start();
    const b = await jenkins.build.get('restart', n);
    expect(b).toMatchObject({ building: false, result: 'ABORTED' });
    expect((await jenkins.job.get('restart')).nextBuildNumber).toBe(n + 1);
    expect(await jenkins.queue.item(qid)).toMatchObject({ id: qid, _class: 'hudson.model.Queue$WaitingItem' });
    const again = await jenkins.job.build('restart');
    expect(again).toBeGreaterThan(qid);
  });
});

describe('Jenkins double: labels (Jenkins behaviour beyond JENKINS-REST.md)', () => {
  it('evaluates label expressions like Jenkins: names, !, &&, ||, parentheses; no expression runs anywhere', () => {
    const node = ['kiln-builder', 'linux'];
    expect(labelMatches(null, node)).toBe(true);
    expect(labelMatches('kiln-builder', node)).toBe(true);
    expect(labelMatches('gpu', node)).toBe(false);
    expect(labelMatches('kiln-builder && linux', node)).toBe(true);
    expect(labelMatches('kiln-builder && !linux', node)).toBe(false);
    expect(labelMatches('gpu || (linux && kiln-builder)', node)).toBe(true);
  });
});
