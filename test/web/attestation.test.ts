/**
 * Finding 2: the web, not the builder, hashes and signs. A build the backend calls succeeded is `verifying` until
 * the web has streamed every artifact through the glue into sha256, checked the builder's SHA256SUMS against its own
 * digests and signed its own SHA256SUMS with a key only the web holds.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArtifactName } from '../../src/protocol/index.js';
import { KilnError } from '../../src/shared/errors.js';
import { silentLogger } from '../../src/shared/logger.js';
import { verifyText } from '../../src/shared/sshsig.js';
import { reconcileOnce } from '../../src/core/tasks/reconcile.js';
import { attestBuilds } from '../../src/core/builds/attest.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

type BuildJson = { id: number; state: string; final: boolean; reason: string | null; imageSha256: string | null; artifacts: Array<{ name: string; size: number; sha256: string | null }> };
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('attestation: the web re-hashes and signs; builders hold no key', () => {
  let w: TestWeb;
  let a: HttpClient;
  let dfId: number;
  const deps = () => ({ db: w.db, glue: w.glue, config: w.config, logger: silentLogger });

  beforeAll(async () => {
    w = await startTestWeb();
    a = w.client();
    await a.signUp('alice');
    dfId = await a.createDockerfile('img', 'FROM debian:bookworm\nRUN true\n');
  });
  afterAll(async () => { await w?.close(); });

  async function finishedBuild(image: Buffer, o: { claim?: string | null } = {}): Promise<{ id: number; bn: number }> {
    const { id } = await a.build(dfId);
    const bn = Number((await w.db('builds').where({ id }).first()).backend_build);
    w.glue.start(dfId, bn);
    w.glue.succeed(dfId, bn, image, o);
    return { id, bn };
  }
  const get = async (id: number): Promise<BuildJson> => ((await (await a.get(`/api/builds/${id}`)).json()) as { build: BuildJson }).build;
  const publicKey = async (): Promise<string> => (await (await w.client().get('/.well-known/kiln-signing-key')).text());

  it('GET /.well-known/kiln-signing-key serves the web\'s public key as text/plain, without login; the key was made on first start, 0600', async () => {
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
    const image = Buffer.from('the bytes the web received\n'.repeat(5000));
    const { id, bn } = await finishedBuild(image);
    // The builder's result.json claims another digest for the image; SHA256SUMS is right.
    const claimed = 'f'.repeat(64);
    w.glue.jobs.get(dfId)!.builds.get(bn)!.artifacts.set('result.json', Buffer.from(JSON.stringify({ ok: true, artifacts: [{ name: 'image.raw', format: 'raw', size: image.length, allocated: 0, sha256: claimed }] })));
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

    expect((await reconcileOnce(w.db, w.glue, w.config)).attested).toBe(1);
    b = await get(id);
    expect(b.state).toBe('succeeded');
    expect(b.imageSha256).toBe(sha256(image));
    expect(b.imageSha256).not.toBe(claimed);
    const raw = b.artifacts.find((x) => x.name === 'image.raw')!;
    expect(raw).toMatchObject({ size: image.length, sha256: sha256(image) });
    const result = w.glue.jobs.get(dfId)!.builds.get(bn)!.artifacts.get('result.json')!;
    expect(b.artifacts.find((x) => x.name === 'result.json')!.sha256).toBe(sha256(result));
    const html = await (await a.get(`/builds/${id}`)).text();
    expect(html).toContain(`sha256 ${sha256(image)}`);
    expect(html).not.toContain(claimed);
    expect(html).not.toContain('verifying artifacts');
  });

  it('the web serves its own SHA256SUMS and a signature that verifies against the well-known key; a flipped byte does not verify', async () => {
    const image = Buffer.from('signed image\n');
    const { id } = await finishedBuild(image);
    await reconcileOnce(w.db, w.glue, w.config);
    const sums = await (await a.get(`/builds/${id}/artifacts/SHA256SUMS`)).text();
    expect(sums).toBe(`${sha256(image)}  image.raw\n`);
    const sigRes = await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`);
    expect(sigRes.status).toBe(200);
    expect(sigRes.headers.get('content-disposition')).toBe(`attachment; filename="kiln-${id}-SHA256SUMS.sig"`);
    const sig = await sigRes.text();
    expect(sig).toMatch(/^-----BEGIN SSH SIGNATURE-----\n/);
    const b = await get(id);
    expect(b.artifacts.find((x) => x.name === 'SHA256SUMS')).toMatchObject({ size: Buffer.byteLength(sums), sha256: sha256(sums) });
    const key = await publicKey();
    expect((await verifyText(sums, sig, key)).ok).toBe(true);
    const flipped = Buffer.from(sums);
    flipped[3] = flipped[3]! ^ 0x01;
    expect((await verifyText(flipped, sig, key)).ok).toBe(false);
    // Range works on the web's own documents too.
    const part = await a.get(`/builds/${id}/artifacts/SHA256SUMS`, { range: 'bytes=0-63' });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe(sha256(image));
  });

  it('bytes that differ from the builder\'s SHA256SUMS fail the build with a clear reason; nothing is signed, the image is not offered', async () => {
    const image = Buffer.from('tampered on the way\n');
    const { id } = await finishedBuild(image, { claim: `${'0'.repeat(64)}  image.raw\n` });
    await reconcileOnce(w.db, w.glue, w.config);
    const b = await get(id);
    expect(b.state).toBe('failed');
    expect(b.reason).toBe(`The build's artifacts could not be verified: image.raw does not match the builder's SHA256SUMS: the web received sha256 ${sha256(image)}, the builder claimed ${'0'.repeat(64)}.`);
    expect(b.artifacts.map((x) => x.name)).toEqual(['result.json']);
    expect((await a.get(`/builds/${id}/artifacts/image.raw`)).status).toBe(404);
    expect((await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).status).toBe(404);
    expect(await w.db('build_attestations').where({ build_id: id }).first()).toBeUndefined();
  });

  it('a builder\'s SHA256SUMS that is missing, lists a file it did not send, or leaves an image out fails the build', async () => {
    const image = Buffer.from('img\n');
    const cases: Array<[string | null, RegExp]> = [
      [null, /the builder sent no SHA256SUMS\.$/],
      [`${sha256(image)}  image.raw\n${'1'.repeat(64)}  image.qcow2\n`, /lists "image.qcow2", which is not an artifact of this build/],
      [`${sha256('x')}  result.json\n`, /lists "result.json", which is not an artifact/],
      ['', /lists no file/],
      ['garbage\n', /malformed/],
    ];
    for (const [claim, reason] of cases) {
      const { id } = await finishedBuild(image, { claim });
      await reconcileOnce(w.db, w.glue, w.config);
      const b = await get(id);
      expect(b.state, String(claim)).toBe('failed');
      expect(b.reason, String(claim)).toMatch(reason);
    }
    // An image the claim leaves out.
    const { id, bn } = await finishedBuild(image);
    w.glue.jobs.get(dfId)!.builds.get(bn)!.artifacts.set('image.qcow2', Buffer.from('unlisted'));
    await reconcileOnce(w.db, w.glue, w.config);
    expect((await get(id)).reason).toMatch(/image.qcow2 is not listed in the builder's SHA256SUMS/);
  });

  it('a stream dropped mid-way leaves the build verifying with nothing signed or half-shown; the next pass redoes it', async () => {
    const image = Buffer.alloc(300_000, 7);
    const { id } = await finishedBuild(image);
    const orig = w.glue.artifact.bind(w.glue);
    let broken = 0;
    w.glue.artifact = async (job: number, build: number, name: ArtifactName, offset?: number) => {
      if (name !== 'image.raw') return orig(job, build, name, offset);
      broken++;
      // Half the image, then the connection is lost.
      return Readable.from((async function* () {
        yield image.subarray(0, 100_000);
        throw new KilnError('backend_unavailable', 'The connection to the build service was lost');
      })());
    };
    try {
      expect((await reconcileOnce(w.db, w.glue, w.config)).attested).toBe(0);
    } finally {
      w.glue.artifact = orig;
    }
    expect(broken).toBe(1);
    let b = await get(id);
    expect(b.state).toBe('verifying');
    expect(b.imageSha256).toBeNull();
    expect(b.artifacts.every((x) => x.sha256 === null)).toBe(true);
    expect(await w.db('build_attestations').where({ build_id: id }).first()).toBeUndefined();
    await reconcileOnce(w.db, w.glue, w.config);
    b = await get(id);
    expect(b.state).toBe('succeeded');
    expect(b.imageSha256).toBe(sha256(image));
  });

  it('the glue away: the build stays verifying and is verified once the glue is back', async () => {
    const image = Buffer.from('later\n');
    const { id } = await finishedBuild(image);
    await get(id);
    w.glue.available = false;
    try {
      await reconcileOnce(w.db, w.glue, w.config);
    } finally {
      w.glue.available = true;
    }
    expect((await get(id)).state).toBe('verifying');
    await reconcileOnce(w.db, w.glue, w.config);
    expect((await get(id)).state).toBe('succeeded');
  });

  it('concurrent passes (two web instances) end with one result and one attestation row', async () => {
    const image = Buffer.from('raced\n');
    const { id } = await finishedBuild(image);
    await get(id);
    const results = await Promise.all([attestBuilds(deps()), attestBuilds(deps()), attestBuilds(deps())]);
    expect(results.reduce((x, y) => x + y, 0)).toBe(1);
    expect((await get(id)).state).toBe('succeeded');
    expect(await w.db('build_attestations').where({ build_id: id }).count({ n: '*' })).toEqual([{ n: 1 }]);
  });

  it('cancelling a build that is being verified changes nothing', async () => {
    const { id } = await finishedBuild(Buffer.from('keep\n'));
    await get(id);
    const r = await a.postJson(`/api/builds/${id}/cancel`, {}, { 'x-csrf-token': await a.apiToken() });
    expect(r.status).toBe(200);
    expect((await get(id)).state).toBe('verifying');
    await reconcileOnce(w.db, w.glue, w.config);
    expect((await get(id)).state).toBe('succeeded');
  });
});
