/**
 * Finding 2: the web, not the builder, hashes and signs. A build the backend calls succeeded is `verifying` until
 * the web has streamed every artifact through the glue into sha256, checked the builder's SHA256SUMS against its own
 * digests and signed its own SHA256SUMS with a key only the web holds.
 *
 * The builds run on the real glue and local backend with the fake SDK, whose `# fake-claim:` lines make the
 * builder's claim lie in each way a builder could. A worker that dispatches and refreshes but never verifies
 * (`build.attest` at concurrency 0) carries builds to `verifying`; each test then runs the verification itself.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/core/index.js';
import { attestBuild, attestTask } from '../../src/core/builds/attest.js';
import { signingKey } from '../../src/core/signing.js';
import { findBuild, listTasksOf } from '../../src/db/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { verifyText } from '../../src/shared/sshsig.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

type BuildJson = {
  id: number;
  state: string;
  final: boolean;
  reason: string | null;
  imageSha256: string | null;
  artifacts: Array<{ name: string; size: number; sha256: string | null }>;
};
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const IMAGE = Buffer.from('RAW-IMAGE-BYTES');

describe('attestation: the web re-hashes and signs; builders hold no key', () => {
  let w: TestWeb & { local: InProcessGlue };
  let builder: Worker;
  let a: HttpClient;
  let seq = 0;

  beforeAll(async () => {
    w = await startTestWeb({ worker: false });
    builder = w.newWorker({ 'build.attest': { ...attestTask, concurrency: 0 } }).start();
    a = w.client();
    await a.signUp('alice');
  });
  afterAll(async () => {
    await builder?.stop();
    await w?.close();
  });

  /** A build the backend finished, waiting for the web's verification; `lines` shape what the fake builder does. */
  async function finishedBuild(...lines: string[]): Promise<{ id: number; dfId: number; bn: number }> {
    const dfId = await a.createDockerfile(`img${++seq}`, ['FROM debian:bookworm', ...lines, 'RUN true', ''].join('\n'));
    const { id } = await a.build(dfId);
    const row = await w.waitForBuild(id, (r) => r.state === 'verifying' || r.state === 'failed');
    expect(row.state, row.reason ?? '').toBe('verifying');
    return { id, dfId, bn: row.backend_build! };
  }
  const verify = () => w.newWorker().drain();
  const get = async (id: number): Promise<BuildJson> =>
    ((await (await a.get(`/api/builds/${id}`)).json()) as { build: BuildJson }).build;
  const publicKey = async (): Promise<string> => await (await w.client().get('/.well-known/kiln-signing-key')).text();

  it("GET /.well-known/kiln-signing-key serves the web's public key as text/plain, without login; the key was made on first start, 0600", async () => {
    const r = await w.client().get('/.well-known/kiln-signing-key');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    const text = await r.text();
    expect(text).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+={0,2} kiln-signing\n$/);
    const key = path.join(w.dir, 'keys', 'signing_ed25519');
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(key)).mode & 0o777).toBe(0o700);
  });

  it('a finished build is "verifying artifacts" until the web has hashed it; then every digest shown is the web\'s, not result.json\'s claim', async () => {
    // The builder's result.json claims another digest for the image; SHA256SUMS is right.
    const { id, dfId, bn } = await finishedBuild('# fake-claim: result-lies');
    const claimed = 'f'.repeat(64);
    let b = await get(id);
    expect(b.state).toBe('verifying');
    expect(b.final).toBe(false);
    expect(b.imageSha256).toBeNull();
    const page = await (await a.get(`/builds/${id}`)).text();
    expect(page).toContain('verifying artifacts');
    // Until it is signed, neither the builder's SHA256SUMS nor a signature is served.
    expect(b.artifacts.map((x) => x.name)).not.toContain('SHA256SUMS');
    expect((await a.get(`/builds/${id}/artifacts/SHA256SUMS`)).status).toBe(404);
    expect((await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).status).toBe(404);

    await verify();
    b = await get(id);
    expect(b.state).toBe('succeeded');
    expect(b.imageSha256).toBe(sha256(IMAGE));
    expect(b.imageSha256).not.toBe(claimed);
    expect(b.artifacts.find((x) => x.name === 'image.raw')!).toMatchObject({
      size: IMAGE.length,
      sha256: sha256(IMAGE),
    });
    const result = readFileSync(path.join(w.local.archive(dfId, bn), 'result.json'));
    expect(result.toString()).toContain(claimed);
    expect(b.artifacts.find((x) => x.name === 'result.json')!.sha256).toBe(sha256(result));
    const html = await (await a.get(`/builds/${id}`)).text();
    expect(html).toContain(`sha256 ${sha256(IMAGE)}`);
    expect(html).not.toContain(claimed);
    expect(html).not.toContain('verifying artifacts');
  });

  it('the web serves its own SHA256SUMS and a signature that verifies against the well-known key; a flipped byte does not verify', async () => {
    const { id } = await finishedBuild();
    await verify();
    const sums = await (await a.get(`/builds/${id}/artifacts/SHA256SUMS`)).text();
    expect(sums).toBe(`${sha256(IMAGE)}  image.raw\n`);
    const sigRes = await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`);
    expect(sigRes.status).toBe(200);
    expect(sigRes.headers.get('content-disposition')).toBe(`attachment; filename="kiln-${id}-SHA256SUMS.sig"`);
    const sig = await sigRes.text();
    expect(sig).toMatch(/^-----BEGIN SSH SIGNATURE-----\n/);
    const b = await get(id);
    expect(b.artifacts.find((x) => x.name === 'SHA256SUMS')).toMatchObject({
      size: Buffer.byteLength(sums),
      sha256: sha256(sums),
    });
    const key = await publicKey();
    expect((await verifyText(sums, sig, key)).ok).toBe(true);
    const flipped = Buffer.from(sums);
    flipped[3] = flipped[3]! ^ 0x01;
    expect((await verifyText(flipped, sig, key)).ok).toBe(false);
    // Range works on the web's own documents too.
    const part = await a.get(`/builds/${id}/artifacts/SHA256SUMS`, { range: 'bytes=0-63' });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe(sha256(IMAGE));
  });

  it("bytes that differ from the builder's SHA256SUMS fail the build with a clear reason; nothing is signed, the image is not offered", async () => {
    const { id } = await finishedBuild('# fake-claim: wrong');
    await verify();
    const b = await get(id);
    expect(b.state).toBe('failed');
    expect(b.reason).toBe(
      `The build's artifacts could not be verified: image.raw does not match the builder's SHA256SUMS: the web received sha256 ${sha256(IMAGE)}, the builder claimed ${'0'.repeat(64)}.`,
    );
    expect(b.artifacts.map((x) => x.name)).toEqual(['result.json']);
    expect((await a.get(`/builds/${id}/artifacts/image.raw`)).status).toBe(404);
    expect((await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).status).toBe(404);
    expect(await w.db('build_attestations').where({ build_id: id }).first()).toBeUndefined();
  });

  it("a builder's SHA256SUMS that is missing, lists a file it did not send, or leaves an image out fails the build", async () => {
    const cases: Array<[string, RegExp]> = [
      ['none', /the builder sent no SHA256SUMS\.$/],
      ['extra', /lists "image.qcow2", which is not an artifact of this build/],
      ['records', /lists "result.json", which is not an artifact/],
      ['empty', /lists no file/],
      ['garbage', /malformed/],
      ['unlisted', /image.qcow2 is not listed in the builder's SHA256SUMS/],
    ];
    for (const [claim, reason] of cases) {
      const { id } = await finishedBuild(`# fake-claim: ${claim}`);
      await verify();
      const b = await get(id);
      expect(b.state, claim).toBe('failed');
      expect(b.reason, claim).toMatch(reason);
    }
  });

  it("a stream dropped mid-way leaves the build verifying with nothing signed or half-shown; the task's next run redoes it", async () => {
    const { id } = await finishedBuild('# fake: big 1');
    w.local.cutStream('image.raw', 100_000);
    await verify();
    const task = (await listTasksOf(w.db, `build:${id}`)).find((t) => t.kind === 'build.attest')!;
    expect(task).toMatchObject({
      state: 'pending',
      attempts: 1,
      last_error: expect.stringContaining('backend_unavailable'),
    });
    let b = await get(id);
    expect(b.state).toBe('verifying');
    expect(b.imageSha256).toBeNull();
    expect(b.artifacts.every((x) => x.sha256 === null)).toBe(true);
    expect(await w.db('build_attestations').where({ build_id: id }).first()).toBeUndefined();
    await until(async () => {
      await verify();
      return (await findBuild(w.db, id, null))!.state === 'succeeded';
    });
    b = await get(id);
    expect(b.imageSha256).toBe(sha256(Buffer.alloc(1024 * 1024)));
  });

  it('the glue away: the build stays verifying and is verified once the glue is back', async () => {
    const { id } = await finishedBuild();
    w.local.down = true;
    try {
      await verify();
      expect((await get(id)).state).toBe('verifying');
    } finally {
      w.local.down = false;
    }
    await until(async () => {
      await verify();
      return (await findBuild(w.db, id, null))!.state === 'succeeded';
    });
  });

  it('concurrent verifiers (two web instances) end with one result and one attestation row', async () => {
    const { id } = await finishedBuild();
    const row = (await findBuild(w.db, id, null))!;
    const deps = { db: w.db, glue: w.glue, config: w.config, logger: silentLogger };
    const key = await signingKey(w.config);
    const outcomes = await Promise.all([
      attestBuild(deps, row, key),
      attestBuild(deps, row, key),
      attestBuild(deps, row, key),
    ]);
    expect(outcomes.filter((o) => o === 'succeeded')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'elsewhere')).toHaveLength(2);
    expect((await get(id)).state).toBe('succeeded');
    expect(await w.db('build_attestations').where({ build_id: id }).count({ n: '*' })).toEqual([{ n: 1 }]);
    // Its task, run by three workers at once, is claimed by one and finds nothing left to do.
    await Promise.all([verify(), verify(), verify()]);
    expect((await listTasksOf(w.db, `build:${id}`)).filter((t) => t.kind === 'build.attest')).toEqual([
      expect.objectContaining({ state: 'done', attempts: 1 }),
    ]);
  });

  it('cancelling a build that is being verified changes nothing', async () => {
    const { id } = await finishedBuild();
    const r = await a.postJson(`/api/builds/${id}/cancel`, {}, { 'x-csrf-token': await a.apiToken() });
    expect(r.status).toBe(200);
    expect((await get(id)).state).toBe('verifying');
    await verify();
    expect((await get(id)).state).toBe('succeeded');
  });
});
