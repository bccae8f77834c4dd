/**
 * The admin console over a Jenkins backend (the Jenkins double, reached by the real glue dispatcher in-process):
 * Jenkins' version from its X-Jenkins header on the health page, and jobs made directly in Jenkins (not by Kiln)
 * listed, disabled and deleted through the glue.
 */
import path from 'node:path';
import Jenkins from 'jenkins';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { createJenkinsBackend } from '../../src/glue/backends/jenkins/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startJenkinsDouble, type JenkinsDouble } from '../jenkins-double/index.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const USER = { name: 'kiln-glue', token: 'glue-api-token-0123' };
type Json = Record<string, unknown>;

describe('admin console over Jenkins', () => {
  let tmp: { dir: string; cleanup: () => void };
  let d: JenkinsDouble;
  let w: TestWeb;
  let raw: Jenkins;
  let admin: HttpClient;
  const post = async (p: string, body: Json = {}) =>
    admin.postJson(p, body, { 'x-csrf-token': await admin.apiToken() });

  beforeAll(async () => {
    tmp = tempDir('kiln-admin-jenkins-');
    d = await startJenkinsDouble({ users: [USER], dataDir: path.join(tmp.dir, 'jenkins'), version: '2.568.7' });
    const config = loadConfig(
      {},
      {
        glue: {
          backend: 'jenkins',
          jenkins: { url: d.url, user: USER.name, token: USER.token, requestTimeoutMs: 5000 },
        },
      },
    );
    w = await startTestWeb({ backend: createJenkinsBackend({ config, logger: silentLogger, pollMs: 50 }) });
    raw = new Jenkins({
      baseUrl: d.url.replace('http://', `http://${USER.name}:${USER.token}@`).replace(/\/$/, ''),
      crumbIssuer: false,
    });
    const root = await addUser(w.db, 'root', 'admin');
    admin = w.client();
    await admin.login(root.username, root.password);
  });
  afterAll(async () => {
    await w?.close();
    await d?.stop();
    tmp?.cleanup();
  });

  it("health shows Jenkins' version from its X-Jenkins header; the agents' Docker engines are said to be out of sight", async () => {
    const h = (await (await admin.get('/api/admin/health')).json()) as Json;
    expect(h.backend).toEqual({ kind: 'jenkins', version: '2.568.7', reachable: true });
    expect(h.docker).toMatchObject({ seen: false, why: expect.stringMatching(/Jenkins agents/) });
    const page = await (await admin.get('/admin/health')).text();
    expect(page).toContain('<code>2.568.7</code>');
    await d.crash();
    try {
      const down = (await (await admin.get('/api/admin/health')).json()) as Json;
      expect(down.glue).toMatchObject({ reachable: true });
      expect(down.backend).toMatchObject({ kind: 'jenkins', reachable: false, error: expect.any(String) });
    } finally {
      await d.start();
    }
  });

  it('jobs made directly in Jenkins are listed; a kiln-named one is disabled, enabled and deleted through the glue', async () => {
    await raw.job.create('kiln-job-55', '<project><disabled>false</disabled><builders/></project>');
    await raw.job.create('someone-elses-job', '<project><disabled>false</disabled><builders/></project>');
    const jobs = ((await (await admin.get('/api/admin/jobs')).json()) as { jobs: Json[] }).jobs;
    expect(jobs).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ backendName: 'kiln-job-55', job: 55, enabled: true, dockerfile: null }),
        expect.objectContaining({ backendName: 'someone-elses-job', enabled: true, dockerfile: null }),
      ]),
    );
    const enabled = async () => ((await raw.job.get('kiln-job-55')) as { buildable?: boolean }).buildable;
    expect((await post('/api/admin/jobs/55/disable')).status).toBe(202);
    await until(async () => (await enabled()) === false);
    const t = await admin.token('/admin/jobs');
    expect((await admin.postForm('/admin/jobs/55/enable', { _csrf: t })).status).toBe(303);
    await until(async () => (await enabled()) === true);
    expect((await post('/api/admin/jobs/55/delete', { confirm: 'kiln-job-55' })).status).toBe(202);
    await until(async () => !(await raw.job.exists('kiln-job-55')));
    expect(await raw.job.exists('someone-elses-job')).toBe(true);
  });
});
