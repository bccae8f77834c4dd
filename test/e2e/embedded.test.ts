/**
 * The walking skeleton, end to end, as a user meets it: the real `kiln serve` process (web + built-in SSH glue +
 * local backend + the real SDK with dockerd and QEMU), driven over HTTP. One real image build.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAsNewUser, startKilnServe, waitForBuild, type KilnServe } from '../helpers/serve.js';
import { EXIT } from '../../src/shared/exit-status.js';
import { run } from '../../src/shared/subprocess.js';
import { verifyText } from '../../src/shared/sshsig.js';
import { parseDpkgStatus } from '../../src/sdk/manifest.js';
import { dpkgStatusFromRaw } from '../../src/sdk/verify.js';
import { HttpClient } from '../helpers/web.js';
import { tempDir } from '../helpers/tmp.js';
import { ciEnv } from '../helpers/client.js';
import { kiln, kilnRun } from '../helpers/kiln.js';

const repo = path.resolve(import.meta.dirname, '../..');
const dockerfile = readFileSync(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');

async function fileSha(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

describe('embedded default: register, upload, build, download a booting image', () => {
  const tmp = tempDir('kiln-e2e-');
  /** Where a user's downloads of the first build go (image, SBOM, provenance, SHA256SUMS, signature). */
  const dl = path.join(tmp.dir, 'download');
  let serve: KilnServe;
  let url = '';
  let verified: { client: HttpClient; id: number } | undefined;

  beforeAll(async () => {
    // One format keeps CI short; every format is built and boot-tested by the SDK's own tests.
    mkdirSync(dl);
    serve = await startKilnServe(tmp.dir, { KILN_DATA_DIR: path.join(tmp.dir, 'data'), KILN_SDK_FORMATS: 'raw' });
    url = serve.url;
  });

  afterAll(async () => {
    await serve?.stop();
    tmp.cleanup();
  });

  it('prints a one-time password for the first admin, which logs in', async () => {
    const m = /First admin: user "([^"]+)", one-time password "([^"]+)"/.exec(serve.output());
    expect(m).not.toBeNull();
    const admin = new HttpClient(url);
    expect((await admin.login(m![1]!, m![2]!)).status).toBe(303);
    const me = (await (await admin.get('/api/me')).json()) as { user: { role: string } };
    expect(me.user.role).toBe('admin');
  });

  it(
    'takes a new user from registration to a downloaded image whose bytes were boot-tested',
    async () => {
      const alice = new HttpClient(url);
      const { dfId, build, log, pressed } = await buildAsNewUser(alice, 'alice', dockerfile);
      const { id } = build;
      expect(build.state, `build failed: ${build.reason}\n${log.slice(-3000)}`).toBe('succeeded');
      // The human log: the SDK's lines without its machine lines (progress events).
      expect(log).toMatch(/\[kiln\] build succeeded/);
      expect(log).not.toContain('##kiln ');

      const names = build.artifacts.map((a) => a.name);
      expect(names).toEqual(expect.arrayContaining(['image.raw', 'result.json', 'build.log']));

      const result = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/result.json`)).text()) as {
        ok: boolean;
        artifacts: Array<{ name: string; sha256: string; size: number }>;
        bootTests: Array<{ artifact: string; passed: boolean; seconds: number }>;
        stages: Array<{ name: string; seconds: number }>;
      };
      expect(result.ok).toBe(true);
      const raw = result.artifacts.find((a) => a.name === 'image.raw')!;
      expect(result.bootTests.find((b) => b.artifact === 'image.raw')?.passed).toBe(true);

      const res = await alice.get(`/builds/${id}/artifacts/image.raw`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="/);
      await pipeline(Readable.fromWeb(res.body as never), createWriteStream(path.join(dl, 'image.raw')));
      const downloaded = Date.now();
      expect(statSync(path.join(dl, 'image.raw')).size).toBe(raw.size);
      expect(await fileSha(path.join(dl, 'image.raw'))).toBe(raw.sha256);
      // The digest the page shows is the one the web computed from the bytes it received (here equal to the SDK's).
      expect(
        ((await (await alice.get(`/api/builds/${id}`)).json()) as { build: { imageSha256: string } }).build.imageSha256,
      ).toBe(raw.sha256);
      verified = { client: alice, id };
      // The note's number: Build pressed -> image downloaded, and the SDK's own stage times.
      console.log(
        `e2e: build-to-download ${((downloaded - pressed) / 1000).toFixed(1)} s; stages ${result.stages.map((s) => `${s.name}=${s.seconds.toFixed(1)}`).join(' ')}`,
      );

      // Another user sees none of it.
      const bob = new HttpClient(url);
      await bob.signUp('bobby');
      for (const p of [
        `/dockerfiles/${dfId}`,
        `/dockerfiles/${dfId}/raw`,
        `/builds/${id}`,
        `/builds/${id}/artifacts/image.raw`,
        `/api/dockerfiles/${dfId}`,
        `/api/builds/${id}`,
        `/api/builds/${id}/log?offset=0`,
        `/api/builds/${id}/artifacts/result.json`,
      ]) {
        expect((await bob.get(p)).status, p).toBe(404);
      }
      const t = await bob.apiToken();
      const r = await bob.postJson(
        `/api/dockerfiles/${dfId}/builds`,
        { key: 'bob-tries-a-build-1' },
        { 'x-csrf-token': t },
      );
      expect(r.status).toBe(404);
    },
    25 * 60_000,
  );

  /** A file of the image's root filesystem, read with debugfs (nothing mounted); '' when it is not there. */
  async function catInImage(raw: string, guestPath: string): Promise<string> {
    const pt = JSON.parse((await run('sfdisk', ['-J', raw], { timeoutMs: 30_000 })).stdout) as {
      partitiontable: { partitions: { start: number; name?: string }[] };
    };
    const start = pt.partitiontable.partitions.find((p) => p.name === 'root')!.start;
    return (await run('debugfs', ['-R', `cat ${guestPath}`, `${raw}?offset=${start * 512}`], { timeoutMs: 30_000 }))
      .stdout;
  }

  /** Downloads the build's other published files next to image.raw, as a user would for `kiln verify`. */
  async function downloadSet(): Promise<void> {
    for (const name of ['manifest.json', 'sbom.spdx.json', 'provenance.json', 'SHA256SUMS', 'SHA256SUMS.sig']) {
      const r = await verified!.client.get(`/builds/${verified!.id}/artifacts/${name}`);
      expect(r.status, name).toBe(200);
      writeFileSync(path.join(dl, name), Buffer.from(await r.arrayBuffer()));
    }
  }
  const verify = (...extra: string[]) =>
    run(
      path.join(repo, 'bin/kiln'),
      ['verify', dl, '--key-url', `${url}/.well-known/kiln-signing-key`, '--require-signature', ...extra],
      { timeoutMs: 10 * 60_000 },
    );
  const flip = (file: string, at: number) => {
    const b = readFileSync(file);
    b[at] = b[at]! ^ 0xff;
    writeFileSync(file, b);
  };

  it(
    'case 52: image + SHA256SUMS + signature downloaded from the web pass `kiln verify` against the key from /.well-known; one flipped byte fails',
    async () => {
      expect(verified, 'the build above must have succeeded').toBeDefined();
      await downloadSet();
      const ok = await verify();
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      const report = JSON.parse(ok.stdout) as { checks: Array<{ name: string; ok: boolean }> };
      expect(report.checks.filter((c) => c.ok).map((c) => c.name)).toEqual(
        expect.arrayContaining(['signature', 'sha256 image.raw', 'sha256 sbom.spdx.json', 'sbom']),
      );

      const image = path.join(dl, 'image.raw');
      flip(image, 2 * 2 ** 20 + 17);
      const bad = await verify();
      flip(image, 2 * 2 ** 20 + 17);
      expect(bad.code).toBe(EXIT.verification);
      expect(bad.stderr).toMatch(/FAILED sha256 image.raw: mismatch/);
      const sums = path.join(dl, 'SHA256SUMS');
      flip(sums, 5);
      const badSig = await verify();
      flip(sums, 5);
      expect(badSig.code).toBe(EXIT.verification);
      expect(badSig.stderr).toMatch(/FAILED signature/);
    },
    15 * 60_000,
  );

  it("case 53: the provenance subject digest equals the downloaded image's sha256; resolvedDependencies carry the base image digest", async () => {
    expect(verified).toBeDefined();
    const prov = JSON.parse(readFileSync(path.join(dl, 'provenance.json'), 'utf8')) as {
      predicateType: string;
      subject: Array<{ name: string; digest: { sha256: string } }>;
      predicate: { buildDefinition: { resolvedDependencies: Array<{ uri: string; digest: { sha256: string } }> } };
    };
    expect(prov.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(prov.subject.find((x) => x.name === 'image.raw')?.digest.sha256).toBe(
      await fileSha(path.join(dl, 'image.raw')),
    );
    expect(prov.subject.find((x) => x.name === 'sbom.spdx.json')?.digest.sha256).toBe(
      await fileSha(path.join(dl, 'sbom.spdx.json')),
    );
    const manifest = JSON.parse(readFileSync(path.join(dl, 'manifest.json'), 'utf8')) as {
      baseImages: Array<{ name: string; id: string }>;
    };
    const deps = prov.predicate.buildDefinition.resolvedDependencies;
    expect(deps.length).toBeGreaterThan(0);
    expect(deps[0]!.digest.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(`sha256:${deps[0]!.digest.sha256}`).toBe(manifest.baseImages[0]!.id);
    // The digest is the base image the engine really built from.
    const inspect = await run(
      'docker',
      ['image', 'inspect', '--format', '{{.Id}}', `sha256:${deps[0]!.digest.sha256}`],
      { timeoutMs: 60_000 },
    );
    expect(inspect.stdout.trim()).toBe(`sha256:${deps[0]!.digest.sha256}`);
  });

  it('case 54: the SBOM lists exactly the packages of the dpkg database inside the downloaded image, and its digest is in the signed SHA256SUMS', async () => {
    expect(verified).toBeDefined();
    const sbom = JSON.parse(readFileSync(path.join(dl, 'sbom.spdx.json'), 'utf8')) as {
      packages: Array<{ SPDXID: string; name: string; versionInfo: string }>;
    };
    const inSbom = sbom.packages
      .filter((p) => p.SPDXID !== 'SPDXRef-Image')
      .map((p) => `${p.name} ${p.versionInfo}`)
      .sort();
    const inImage = parseDpkgStatus(await dpkgStatusFromRaw(path.join(dl, 'image.raw')))
      .map((p) => `${p.name} ${p.version}`)
      .sort();
    expect(inImage.length).toBeGreaterThan(50);
    expect(inSbom).toEqual(inImage);
    const sums = readFileSync(path.join(dl, 'SHA256SUMS'), 'utf8');
    expect(sums).toContain(`${await fileSha(path.join(dl, 'sbom.spdx.json'))}  sbom.spdx.json\n`);
    const key = await (await fetch(`${url}/.well-known/kiln-signing-key`)).text();
    expect((await verifyText(sums, readFileSync(path.join(dl, 'SHA256SUMS.sig')), key)).ok).toBe(true);
  });

  it(
    'builds a Dockerfile with an uploaded build context: COPY and ADD land in the image, .dockerignore applies',
    async () => {
      const carol = new HttpClient(url);
      await carol.signUp('carol');
      // The context as a CI checkout has it: the files next to the Dockerfile, tarred (argv only, no shell).
      const ctx = execFileSync('tar', [
        '-C',
        path.join(repo, 'dockerfiles/copy-context'),
        '-cf',
        '-',
        '.dockerignore',
        'files',
      ]);
      const content = readFileSync(path.join(repo, 'dockerfiles/copy-context/Dockerfile'), 'utf8');
      const made = await carol.postJson(
        '/api/dockerfiles',
        { name: 'copy-context', content, contextTarBase64: ctx.toString('base64') },
        { 'x-csrf-token': await carol.apiToken() },
      );
      expect(made.status).toBe(201);
      const dfId = ((await made.json()) as { dockerfile: { id: number } }).dockerfile.id;
      const built = await carol.postJson(
        `/api/dockerfiles/${dfId}/builds`,
        { key: 'carol-context-build-1' },
        { 'x-csrf-token': await carol.apiToken() },
      );
      expect(built.status).toBe(201);
      const build = await waitForBuild(carol, ((await built.json()) as { build: { id: number } }).build.id);
      expect(build.state, `build failed: ${build.reason}`).toBe('succeeded');

      const raw = path.join(tmp.dir, 'carol.raw');
      const res = await carol.get(`/builds/${build.id}/artifacts/image.raw`);
      expect(res.status).toBe(200);
      await pipeline(Readable.fromWeb(res.body as never), createWriteStream(raw));
      const cat = (guestPath: string) => catInImage(raw, guestPath);
      expect(await cat('/etc/kiln-demo.conf')).toBe('greeting = "copied from the build context"\n');
      expect(await cat('/opt/demo/etc/kiln-demo.conf')).toContain('copied from the build context');
      expect(await cat('/opt/demo/ignored.secret')).toBe('');
    },
    25 * 60_000,
  );

  it(
    "the README's CI job with the real SDK: kiln client build --context --wait --download, then kiln verify with the SBOM check",
    async () => {
      // The pipeline's token, made on the server's machine as the README says.
      const server = { KILN_DATA_DIR: path.join(tmp.dir, 'data'), KILN_LOG_LEVEL: 'silent' };
      expect((await kilnRun(['user', 'add', 'ci-bot'], server)).code).toBe(0);
      const token = await kilnRun(['user', 'token', 'ci-bot', '--scope', 'build'], server);
      expect(token.code, token.stderr).toBe(0);
      const out = path.join(tmp.dir, 'ci-out');
      const ctx = path.join(repo, 'dockerfiles/copy-context');
      const job = await run(
        'bash',
        [path.join(repo, 'test/cmd/ci-job.sh'), kiln, 'copy-context', path.join(ctx, 'Dockerfile'), ctx, out],
        {
          timeoutMs: 25 * 60_000,
          maxOutputBytes: 16 << 20,
          env: ciEnv({ KILN_URL: url, KILN_TOKEN: token.stdout.trim(), CI_JOB_ID: '1' }),
        },
      );
      expect(job.code, `${job.stderr}\n${job.stdout.slice(-3000)}`).toBe(0);
      expect(job.stdout).toContain('[kiln] build succeeded');
      expect(job.stderr).toMatch(/1 left out by \.dockerignore/);
      const report = JSON.parse(job.stdout.slice(job.stdout.lastIndexOf('\n{\n') + 1)) as {
        ok: boolean;
        checks: Array<{ name: string; ok: boolean }>;
      };
      expect(report.ok).toBe(true);
      expect(report.checks.filter((c) => c.ok).map((c) => c.name)).toEqual(
        expect.arrayContaining(['signature', 'sha256 image.raw', 'sbom']),
      );
      // The context the client packed reached the image, minus what .dockerignore keeps out.
      const raw = path.join(out, 'image.raw');
      expect(await catInImage(raw, '/etc/kiln-demo.conf')).toBe('greeting = "copied from the build context"\n');
      expect(await catInImage(raw, '/opt/demo/ignored.secret')).toBe('');
    },
    25 * 60_000,
  );
});
