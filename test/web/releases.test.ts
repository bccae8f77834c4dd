/**
 * Releases and retention through the site's front doors, against the real web, worker and glue in this process
 * (local backend, fake SDK): `kiln keys generate` makes the signing key the site then uses (as KILN_WEB_SIGNING_KEY_FILE),
 * the build page's Promote and Pin buttons, the release page, the REST API, and the compiled `kiln client release
 * create|download` and `kiln verify` (real processes) checking a release against /.well-known/kiln-signing-key;
 * tampering with a release's files or signature is caught with the shared exit statuses; the pin limit is refused
 * with a clear error; the build page says when a build's artifacts expired.
 */
import { existsSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { enqueue } from '../../src/core/tasks/queue.js';
import { findBuild } from '../../src/db/index.js';
import { EXIT } from '../../src/shared/exit-status.js';
import { ciEnv, runKiln } from '../helpers/client.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { ApiClient, addToken, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const DOCKERFILE = 'FROM debian:bookworm\n# fake-packages: a=1 b=2\nRUN true\n';
type Json = Record<string, unknown>;
type Release = { id: number; name: string; state: string; files: Array<{ name: string; url: string }> };

describe('releases and retention through the web, the REST API, kiln client and kiln verify', () => {
  const tmp = tempDir('kiln-web-releases-');
  const keyFile = path.join(tmp.dir, 'secrets', 'kiln-signing-key');
  let generated: string;
  let w: TestWeb;
  let alice: HttpClient;
  let bob: HttpClient;
  let api: ApiClient;
  let env: Record<string, string>;
  let bobEnv: Record<string, string>;
  let df: number;
  const builds: number[] = [];

  const form = async (c: HttpClient, p: string, fields: Record<string, string> = {}) =>
    c.postForm(p, { _csrf: await c.token(`/builds/${builds[0]}`), ...fields });
  const releaseOf = async (id: number): Promise<Release> =>
    ((await (await api.get(`/releases/${id}`)).json()) as { release: Release }).release;
  const verify = (dir: string, ...extra: string[]) =>
    runKiln(['verify', dir, '--key-url', `${w.url}/.well-known/kiln-signing-key`, '--skip-sbom', ...extra], ciEnv({}));
  const flip = (file: string, at: number) => {
    const b = readFileSync(file);
    b[at] = b[at]! ^ 0x01;
    writeFileSync(file, b);
  };

  beforeAll(async () => {
    // The operator makes the key before the first start and hands it in as a file.
    const made = await runKiln(['keys', 'generate', '--out', keyFile], ciEnv({}));
    expect(made.stderr).toContain(keyFile);
    expect(made.code).toBe(EXIT.succeeded);
    generated = made.stdout.trim();
    expect(generated).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=* kiln-signing$/);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(loadConfig({ KILN_WEB_SIGNING_KEY_FILE: keyFile }).web.signingKeyFile).toBe(keyFile);
    w = await startTestWeb({
      config: {
        web: { signingKeyFile: keyFile },
        retention: { keepBuilds: 2, keepDays: 0, pinsPerUser: 1 },
        // Retention runs when a test asks for it, not with the reconciliation passes of a slow run.
        worker: { reconcileSeconds: 0 },
      },
    });
    alice = w.client();
    await alice.signUp('alice');
    bob = w.client();
    await bob.signUp('bob');
    const token = await addToken(w, 'alice', ['read', 'build']);
    api = new ApiClient(w.url, token);
    env = ciEnv({ KILN_URL: w.url, KILN_TOKEN: token });
    bobEnv = ciEnv({ KILN_URL: w.url, KILN_TOKEN: await addToken(w, 'bob', ['read', 'build']) });
    df = await alice.createDockerfile('appliance', DOCKERFILE);
    for (let i = 0; i < 3; i++) {
      const { id } = await alice.build(df);
      expect((await w.waitForBuild(id)).state).toBe('succeeded');
      builds.push(id);
    }
  }, 180_000);
  afterAll(async () => {
    await w?.close();
    tmp.cleanup();
  });

  it('kiln keys generate made the key the site publishes, and never replaces one', async () => {
    expect((await (await w.client().get('/.well-known/kiln-signing-key')).text()).trim()).toBe(generated);
    const before = readFileSync(keyFile);
    const again = await runKiln(['keys', 'generate', '--out', keyFile], ciEnv({}));
    expect(again.code).toBe(EXIT.refused);
    expect(again.stderr).toMatch(/exists already; it is not replaced/);
    expect(readFileSync(keyFile)).toEqual(before);
  });

  it('promote from the build page, then kiln client release download and kiln verify accept the release against /.well-known/kiln-signing-key', async () => {
    const page = await (await alice.get(`/builds/${builds[0]}`)).text();
    expect(page).toContain(`action="/builds/${builds[0]}/release"`);
    expect(page).toContain(`action="/builds/${builds[0]}/pin"`);
    const res = await form(alice, `/builds/${builds[0]}/release`, { name: 'v1.0' });
    expect(res.status).toBe(303);
    const rid = Number(/^\/releases\/(\d+)$/.exec(res.headers.get('location') ?? '')![1]);
    await until(async () => (await releaseOf(rid)).state === 'ready');
    const releasePage = await (await alice.get(`/releases/${rid}`)).text();
    expect(releasePage).toContain(`href="/releases/${rid}/files/release.json"`);
    expect(releasePage).toContain('kiln client release download v1.0 --to DIR');
    expect(await (await alice.get(`/builds/${builds[0]}`)).text()).toContain(`href="/releases/${rid}"`);
    // A file from the page, whole and ranged.
    const part = await alice.get(`/releases/${rid}/files/image.raw`, { range: 'bytes=4-' });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe('IMAGE-BYTES');

    const dir = path.join(tmp.dir, 'v1.0');
    const got = await runKiln(['client', 'release', 'download', 'v1.0', '--to', dir], env);
    expect(got.stderr).toMatch(/downloaded release v1\.0 \(6 files\).*signature and name verified/);
    expect(got.code).toBe(EXIT.succeeded);
    expect(readdirSync(dir).sort()).toEqual([
      'SHA256SUMS',
      'SHA256SUMS.sig',
      'image.raw',
      'manifest.json',
      'release.json',
      'sbom.spdx.json',
    ]);
    const ok = await verify(dir, '--release', 'v1.0');
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(EXIT.succeeded);
    expect((JSON.parse(ok.stdout) as { checks: Array<{ name: string }> }).checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['signature', 'release', 'sha256 image.raw', 'sha256 release.json']),
    );
    expect(JSON.parse(readFileSync(path.join(dir, 'release.json'), 'utf8'))).toMatchObject({
      name: 'v1.0',
      build: { id: builds[0], signedBy: generated },
      promotedBy: 'alice',
    });
  }, 120_000);

  it('case 52: tampering with a release file, its signature, its name or its file set fails kiln verify (exit 6)', async () => {
    const dir = path.join(tmp.dir, 'v1.0');
    const image = path.join(dir, 'image.raw');
    flip(image, 3);
    const bad = await verify(dir);
    flip(image, 3);
    expect(bad.code).toBe(EXIT.verification);
    expect(bad.stderr).toMatch(/FAILED sha256 image\.raw: mismatch/);

    const provenance = path.join(dir, 'release.json');
    const text = readFileSync(provenance, 'utf8');
    writeFileSync(provenance, text.replace('"promotedBy": "alice"', '"promotedBy": "mallory"'));
    const forged = await verify(dir);
    writeFileSync(provenance, text);
    expect(forged.code).toBe(EXIT.verification);
    expect(forged.stderr).toMatch(/FAILED sha256 release\.json: mismatch/);

    const sums = path.join(dir, 'SHA256SUMS');
    flip(sums, 10);
    const badSig = await verify(dir);
    flip(sums, 10);
    expect(badSig.code).toBe(EXIT.verification);
    expect(badSig.stderr).toMatch(/FAILED signature/);

    const sig = path.join(dir, 'SHA256SUMS.sig');
    const sigText = readFileSync(sig, 'utf8');
    writeFileSync(
      sig,
      sigText.replace(/(\n[A-Za-z0-9+/]{10})([A-Za-z0-9])/, (_m, a: string, c: string) => a + (c === 'A' ? 'B' : 'A')),
    );
    const badSig2 = await verify(dir);
    expect(badSig2.code).toBe(EXIT.verification);
    expect(badSig2.stderr).toMatch(/FAILED signature/);
    unlinkSync(sig);
    const unsigned = await verify(dir);
    writeFileSync(sig, sigText);
    expect(unsigned.code).toBe(EXIT.verification);
    expect(unsigned.stderr).toMatch(/FAILED signature: SHA256SUMS\.sig is missing/);

    expect((await verify(dir, '--release', 'v2.0')).stderr).toMatch(
      /FAILED release: it is release "v1\.0", not "v2\.0"/,
    );
    writeFileSync(path.join(dir, 'extra.sh'), 'echo pwned\n');
    const extra = await verify(dir);
    unlinkSync(path.join(dir, 'extra.sh'));
    expect(extra.code).toBe(EXIT.verification);
    expect(extra.stderr).toMatch(/FAILED release: SHA256SUMS does not list extra\.sh/);
    expect((await verify(dir, '--release', 'v1.0')).code).toBe(EXIT.succeeded);
  }, 120_000);

  it('a release changed in the store is refused by kiln client release download (exit 6), and its directory gets nothing', async () => {
    const { releases } = (await (await api.get('/releases?name=v1.0')).json()) as { releases: Release[] };
    const stored = path.join(w.dir, 'releases', String(releases[0]!.id), 'manifest.json');
    const original = readFileSync(stored);
    flip(stored, 2);
    try {
      const dir = path.join(tmp.dir, 'tampered');
      const r = await runKiln(['client', 'release', 'download', 'v1.0', '--to', dir], env);
      expect(r.code).toBe(EXIT.verification);
      expect(r.stderr).toMatch(/manifest\.json does not match Kiln's sha256|failed verification/);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      writeFileSync(stored, original);
    }
  }, 60_000);

  it('kiln client release create: waits until made; the same name for another build is refused (409, exit 5); another user sees nothing', async () => {
    const taken = await runKiln(['client', 'release', 'create', String(builds[1]), 'v1.0'], env);
    expect(taken.code).toBe(EXIT.refused);
    expect(taken.stderr).toMatch(/already has a release v1\.0 .*another name\. \(HTTP 409 conflict\)/);
    const made = await runKiln(['client', 'release', 'create', String(builds[1]), 'v1.1', '--json'], env);
    expect(made.code).toBe(EXIT.succeeded);
    expect(JSON.parse(made.stdout)).toMatchObject({ name: 'v1.1', state: 'ready', build: builds[1] });
    const again = await runKiln(['client', 'release', 'create', String(builds[1]), 'v1.1'], env);
    expect(again.code).toBe(EXIT.succeeded);
    expect(again.stderr).toMatch(/already has release v1\.1/);
    expect((await runKiln(['client', 'release', 'create', String(builds[1]), '../x'], env)).code).toBe(EXIT.usage);
    // The API checks the name too.
    const badName = await api.post(`/builds/${builds[1]}/release`, { name: '..' });
    expect(badName.status).toBe(422);
    // bob: no such build to promote, no such release to see or download.
    const bobs = await runKiln(['client', 'release', 'create', String(builds[1]), 'mine'], bobEnv);
    expect(bobs.code).toBe(EXIT.refused);
    const none = await runKiln(['client', 'release', 'download', 'v1.1', '--to', path.join(tmp.dir, 'bob')], bobEnv);
    expect(none.code).toBe(EXIT.refused);
    expect(none.stderr).toMatch(/no release v1\.1/);
    const id = (JSON.parse(made.stdout) as { id: number }).id;
    expect((await bob.get(`/releases/${id}`)).status).toBe(404);
    expect((await bob.get(`/releases/${id}/files/image.raw`)).status).toBe(404);
  }, 120_000);

  it('pins: one within the limit; the next is refused with a clear error on the page and in the API (409 quota_exceeded)', async () => {
    expect((await form(alice, `/builds/${builds[0]}/pin`)).status).toBe(303);
    expect(await (await alice.get(`/builds/${builds[0]}`)).text()).toContain('Pinned: retention keeps');
    const refused = await form(alice, `/builds/${builds[1]}/pin`);
    expect(refused.status).toBe(409);
    expect(await refused.text()).toContain('1 builds are pinned already, the most one user may pin');
    const viaApi = await api.post(`/builds/${builds[1]}/pin`);
    expect(viaApi.status).toBe(409);
    expect(((await viaApi.json()) as { error: Json }).error).toMatchObject({
      code: 'quota_exceeded',
      message: expect.stringMatching(/retention\.pinsPerUser = 1.*unpin one first/),
    });
    expect((await bob.postForm(`/builds/${builds[1]}/pin`, { _csrf: await bob.token('/dockerfiles') })).status).toBe(
      404,
    );
    const pinned = ((await (await api.get(`/builds/${builds[0]}`)).json()) as { build: Json }).build;
    expect(pinned).toMatchObject({ pinned: true, artifactsExpiredAt: null });
  });

  it('retention expires the oldest unpinned build; the build page says its artifacts expired, downloads refuse, releases stay', async () => {
    const { id } = await alice.build(df);
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
    builds.push(id);
    // Four builds, keepBuilds 2: builds[2] and [3] are the newest, [0] is pinned, [1] goes.
    await enqueue(w.db, { config: w.config }, 'retention', '');
    w.worker!.wake();
    const gone = await w.waitForBuild(builds[1]!, (b) => b.artifacts_expired_at !== null);
    for (const b of [builds[0]!, builds[2]!, builds[3]!])
      expect((await findBuild(w.db, b, null))!.artifacts_expired_at).toBeNull();
    const page = await (await alice.get(`/builds/${gone.id}`)).text();
    expect(page).toMatch(
      /The artifacts of this build expired on <time>[^<]+<\/time>: retention \(it keeps the artifacts of each Dockerfile&#39;s newest 2 builds\) discarded them/,
    );
    expect(page).toContain('the releases below keep their own copies');
    expect(page).not.toContain(`href="/builds/${gone.id}/artifacts/`);
    expect(page).not.toContain('action="/builds/' + gone.id + '/pin"');
    expect(await (await alice.get(`/dockerfiles/${df}/builds`)).text()).toContain('artifacts expired');
    const dl = await alice.get(`/builds/${gone.id}/artifacts/image.raw`);
    expect(dl.status).toBe(404);
    expect(await dl.text()).toMatch(/expired on/);
    const asJson = ((await (await api.get(`/builds/${gone.id}`)).json()) as { build: Json }).build;
    expect(asJson).toMatchObject({ artifacts: [], artifactsExpiredAt: expect.any(String), pinned: false });
    const downloadCmd = await runKiln(['client', 'download', String(gone.id), path.join(tmp.dir, 'old')], env);
    expect(downloadCmd.code).toBe(EXIT.refused);
    expect(downloadCmd.stderr).toMatch(/artifacts expired/);
    // Its files are gone from the backend, its release v1.1 is whole in the store.
    await until(
      async () =>
        !existsSync(path.join(w.dir, 'glue-data', 'glue', 'jobs', `kiln-job-${df}`, 'builds', '2', 'archive')),
    );
    const dir = path.join(tmp.dir, 'v1.1');
    expect((await runKiln(['client', 'release', 'download', 'v1.1', '--to', dir], env)).code).toBe(EXIT.succeeded);
    expect((await verify(dir, '--release', 'v1.1')).code).toBe(EXIT.succeeded);
  }, 120_000);
});
