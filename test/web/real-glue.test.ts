import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyText } from '../../src/shared/sshsig.js';
import type { TestGlue } from '../helpers/glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

type BuildJson = {
  id: number;
  state: string;
  final: boolean;
  reason: string | null;
  artifacts: Array<{ name: string; size: number }>;
  progress: { stage: string; percent: number } | null;
};

function waitFinal(c: HttpClient, id: number): Promise<BuildJson> {
  return until(async () => {
    const b = ((await (await c.get(`/api/builds/${id}`)).json()) as { build: BuildJson }).build;
    return b.final && b;
  });
}

/** The web against the real built-in SSH glue and local backend (fake SDK): the whole path minus Docker/QEMU. */
describe('web with the real SSH glue', () => {
  let w: TestWeb & { realGlue: TestGlue };
  let a: HttpClient;
  let b: HttpClient;
  beforeAll(async () => {
    w = await startTestWeb({ realGlue: true });
    a = w.client();
    await a.signUp('alice');
    b = w.client();
    await b.signUp('bob');
  });
  afterAll(async () => {
    await w?.close();
  });

  it('build -> queued -> succeeded; the log is the human one; image downloads; B gets 404', async () => {
    const df = await a.createDockerfile('demo', 'FROM debian:bookworm\nRUN true\n');
    const { id } = await a.build(df);
    const done = await waitFinal(a, id);
    const log = (await (await a.get(`/api/builds/${id}/log?offset=0`)).json()) as { text: string };
    expect(done.state, JSON.stringify(done) + log.text).toBe('succeeded');
    expect(
      done.artifacts.map((x) => x.name),
      JSON.stringify(done),
    ).toContain('image.raw');
    // Progress travels as the SDK's machine lines; the log people read has them taken out (core/builds/log-view.ts).
    expect(log.text, JSON.stringify(log)).toContain('[kiln] build succeeded');
    expect(log.text, JSON.stringify(log)).not.toContain('##kiln');
    const dl = await a.get(`/builds/${id}/artifacts/image.raw`);
    expect(dl.status).toBe(200);
    expect(await dl.text()).toBe('RAW-IMAGE-BYTES');
    expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="kiln-${id}-image.raw"`);
    for (const p of [
      `/dockerfiles/${df}`,
      `/builds/${id}`,
      `/api/builds/${id}/log?offset=0`,
      `/builds/${id}/artifacts/image.raw`,
    ]) {
      expect((await b.get(p)).status, p).toBe(404);
    }
  });

  it("a failing build ends failed with the SDK's reason", async () => {
    const df = await a.createDockerfile('broken', 'FROM debian:bookworm\n# fake: fail\nRUN false\n');
    const { id } = await a.build(df);
    const done = await waitFinal(a, id);
    expect(done.state).toBe('failed');
    expect(done.reason ?? '').toMatch(/exit 100|failed/);
  });

  it('case 22: an output image.qcow2 that is a symlink to /etc/shadow (and manifest.json to /etc/passwd) is never listed, served or followed', async () => {
    const df = await a.createDockerfile('sneaky', 'FROM debian:bookworm\n# fake: symlink\nRUN true\n');
    const { id } = await a.build(df);
    const done = await waitFinal(a, id);
    expect(done.state, JSON.stringify(done)).toBe('succeeded');
    expect(done.artifacts.map((x) => x.name)).not.toContain('manifest.json');
    expect(done.artifacts.map((x) => x.name)).not.toContain('image.qcow2');
    for (const name of ['image.qcow2', 'manifest.json']) {
      const r = await a.get(`/builds/${id}/artifacts/${name}`);
      expect(r.status, name).toBe(404);
      expect(await r.text()).not.toMatch(/root:/);
    }
    // Asked directly, the glue refuses it too (the web never gets the chance to follow it).
    const backendBuild = Number((await w.db('builds').where({ id }).first()).backend_build);
    await expect(w.glue.artifact(df, backendBuild, 'image.qcow2')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('the worker carries a build nobody is watching to its end', async () => {
    const df = await a.createDockerfile('unwatched', 'FROM debian:bookworm\nRUN true\n');
    const { id } = await a.build(df);
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
  });

  it('the web verifies what the real glue sends and signs it: SHA256SUMS.sig verifies against /.well-known/kiln-signing-key', async () => {
    const df = await a.createDockerfile('signed', 'FROM debian:bookworm\nRUN true\n');
    const { id } = await a.build(df);
    const done = await waitFinal(a, id);
    expect(done.state).toBe('succeeded');
    const sums = await (await a.get(`/builds/${id}/artifacts/SHA256SUMS`)).text();
    expect(sums).toBe(`${createHash('sha256').update('RAW-IMAGE-BYTES').digest('hex')}  image.raw\n`);
    const sig = await (await a.get(`/builds/${id}/artifacts/SHA256SUMS.sig`)).text();
    const key = await (await w.client().get('/.well-known/kiln-signing-key')).text();
    expect((await verifyText(sums, sig, key)).ok).toBe(true);
  });
});
