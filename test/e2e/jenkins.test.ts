/**
 * Issue 4's full path: web -> SSH -> glue -> Jenkins (the double, spoken to by the real `jenkins` client) -> the
 * job's shell step running the real `kiln sdk build` -> archived artifacts -> download through the glue. The web
 * reaches the glue through the built-in door (`kiln serve` with the jenkins backend); afterwards the same build is
 * read through the OpenSSH door (sshd forced command `kiln glue`), which must give the same bytes.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startJenkinsDouble, glueEnv, type JenkinsDouble } from '../jenkins-double/index.js';
import { defaultKeyPaths, ensureKeyPair } from '../../src/shared/ssh-keys.js';
import { verifyText } from '../../src/shared/sshsig.js';
import { startOpenSshGlue, type OpenSshGlue } from '../helpers/glue.js';
import { buildAsNewUser, startKilnServe, type KilnServe } from '../helpers/serve.js';
import { HttpClient } from '../helpers/web.js';
import { tempDir } from '../helpers/tmp.js';

const repo = path.resolve(import.meta.dirname, '../..');
const dockerfile = readFileSync(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');
const user = { name: 'kiln-glue', token: '11aa22bb33cc44dd55ee66ff77aa88bb99' };

describe('full path through Jenkins: web, SSH, glue, Jenkins double, real SDK', () => {
  const tmp = tempDir('kiln-e2e-jenkins-');
  const dataDir = path.join(tmp.dir, 'data');
  let double: JenkinsDouble;
  let serve: KilnServe;
  let openssh: OpenSshGlue | undefined;
  let url = '';

  beforeAll(async () => {
    double = await startJenkinsDouble({
      users: [user],
      labels: ['kiln-builder'],
      quietPeriodSeconds: 1,
      dataDir: path.join(tmp.dir, 'jenkins'),
    });
    serve = await startKilnServe(tmp.dir, {
      ...glueEnv(double, user, [path.join(repo, 'bin/kiln'), 'sdk', 'build']),
      KILN_DATA_DIR: dataDir,
      // One format keeps this second real build short; formats are covered by the SDK's own tests.
      KILN_SDK_FORMATS: 'raw',
    });
    url = serve.url;
  });

  afterAll(async () => {
    await openssh?.cleanup();
    await serve?.stop();
    await double?.stop();
    tmp.cleanup();
  });

  it(
    'builds in a Jenkins job and serves the same boot-tested bytes through both SSH doors',
    async () => {
      const alice = new HttpClient(url);
      const { dfId, build, log, pressed } = await buildAsNewUser(alice, 'alice', dockerfile);
      const { id } = build;
      expect(build.state, `${build.reason}\n${log.slice(-3000)}`).toBe('succeeded');
      // The log is Jenkins' console as people read it: the shell step's trace and the SDK's own lines, its machine
      // lines (progress events) taken out.
      expect(log).toMatch(/\[kiln\] build succeeded/);
      expect(log).not.toContain('##kiln ');
      expect(log).toMatch(/Finished: SUCCESS/);

      // Jenkins holds exactly one job for this Dockerfile and exactly one build of it.
      const job = (await (
        await fetch(new URL(`job/kiln-job-${dfId}/api/json`, double.url), {
          headers: { authorization: `Basic ${Buffer.from(`${user.name}:${user.token}`).toString('base64')}` },
        })
      ).json()) as { builds: Array<{ number: number }>; buildable: boolean };
      expect(job.builds.map((b) => b.number)).toEqual([build.backendBuild]);
      expect(job.buildable).toBe(true);

      const result = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/result.json`)).text()) as {
        artifacts: Array<{ name: string; sha256: string; size: number }>;
        bootTests: Array<{ artifact: string; passed: boolean }>;
      };
      const raw = result.artifacts.find((a) => a.name === 'image.raw')!;
      expect(result.bootTests.find((b) => b.artifact === 'image.raw')?.passed).toBe(true);

      const res = await alice.get(`/builds/${id}/artifacts/image.raw`);
      expect(res.status).toBe(200);
      const viaWeb = createHash('sha256');
      for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) viaWeb.update(c);
      expect(viaWeb.digest('hex')).toBe(raw.sha256);
      // Signed by the web whatever the backend: the agent held no key, the web hashed what Jenkins archived.
      const shown = ((await (await alice.get(`/api/builds/${id}`)).json()) as { build: { imageSha256: string } }).build
        .imageSha256;
      expect(shown).toBe(raw.sha256);
      const sums = await (await alice.get(`/builds/${id}/artifacts/SHA256SUMS`)).text();
      expect(sums).toContain(`${raw.sha256}  image.raw\n`);
      const sig = await (await alice.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).text();
      const key = await (await fetch(`${url}/.well-known/kiln-signing-key`)).text();
      expect((await verifyText(sums, sig, key)).ok).toBe(true);
      console.log(`e2e jenkins: build-to-download ${((Date.now() - pressed) / 1000).toFixed(1)} s`);

      // The OpenSSH door, same Jenkins: status and the artifact's bytes agree.
      const clientKey = await ensureKeyPair(defaultKeyPaths(dataDir).client, 'kiln-web');
      openssh = await startOpenSshGlue({
        dataDir: path.join(tmp.dir, 'openssh-glue'),
        clientKey,
        env: glueEnv(double, user, [path.join(repo, 'bin/kiln'), 'sdk', 'build']),
      });
      const status = await openssh.client.call('build.status', [dfId, build.backendBuild!]);
      expect(status.state).toBe('succeeded');
      const viaOpenSsh = createHash('sha256');
      for await (const c of await openssh.client.artifact(dfId, build.backendBuild!, 'image.raw'))
        viaOpenSsh.update(c as Buffer);
      expect(viaOpenSsh.digest('hex')).toBe(raw.sha256);
    },
    25 * 60_000,
  );
});
