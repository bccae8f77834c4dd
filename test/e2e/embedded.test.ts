/**
 * The walking skeleton, end to end, as a user meets it: the real `kiln serve` process (web + built-in SSH glue +
 * local backend + the real SDK with dockerd and QEMU), driven over HTTP. One real image build.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAsNewUser, startKilnServe, waitForBuild, type KilnServe } from '../helpers/serve.js';
import { run } from '../../src/shared/subprocess.js';
import { HttpClient } from '../helpers/web.js';
import { tempDir } from '../helpers/tmp.js';

const repo = path.resolve(import.meta.dirname, '../..');
const dockerfile = readFileSync(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');

describe('embedded default: register, upload, build, download a booting image', () => {
  const tmp = tempDir('kiln-e2e-');
  let serve: KilnServe;
  let url = '';

  beforeAll(async () => {
    // One format keeps CI short; every format is built and boot-tested by the SDK's own tests.
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
    const me = await (await admin.get('/api/me')).json() as { user: { role: string } };
    expect(me.user.role).toBe('admin');
  });

  it('takes a new user from registration to a downloaded image whose bytes were boot-tested', async () => {
    const alice = new HttpClient(url);
    const { dfId, build, log, pressed } = await buildAsNewUser(alice, 'alice', dockerfile);
    const { id } = build;
    expect(build.state, `build failed: ${build.reason}\n${log.slice(-3000)}`).toBe('succeeded');
    expect(log).toContain('##kiln ');

    const names = build.artifacts.map((a) => a.name);
    expect(names).toEqual(expect.arrayContaining(['image.raw', 'result.json', 'build.log']));

    const result = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/result.json`)).text()) as {
      ok: boolean; artifacts: Array<{ name: string; sha256: string; size: number }>; bootTests: Array<{ artifact: string; passed: boolean; seconds: number }>;
      stages: Array<{ name: string; seconds: number }>;
    };
    expect(result.ok).toBe(true);
    const raw = result.artifacts.find((a) => a.name === 'image.raw')!;
    expect(result.bootTests.find((b) => b.artifact === 'image.raw')?.passed).toBe(true);

    const res = await alice.get(`/builds/${id}/artifacts/image.raw`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="/);
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) { hash.update(chunk); size += chunk.length; }
    const downloaded = Date.now();
    expect(size).toBe(raw.size);
    expect(hash.digest('hex')).toBe(raw.sha256);
    // The note's number: Build pressed -> image downloaded, and the SDK's own stage times.
    console.log(`e2e: build-to-download ${((downloaded - pressed) / 1000).toFixed(1)} s; stages ${result.stages.map((s) => `${s.name}=${s.seconds.toFixed(1)}`).join(' ')}`);

    // Another user sees none of it.
    const bob = new HttpClient(url);
    await bob.signUp('bobby');
    for (const p of [`/dockerfiles/${dfId}`, `/dockerfiles/${dfId}/raw`, `/builds/${id}`, `/builds/${id}/artifacts/image.raw`,
      `/api/dockerfiles/${dfId}`, `/api/builds/${id}`, `/api/builds/${id}/log?offset=0`, `/api/builds/${id}/artifacts/result.json`]) {
      expect((await bob.get(p)).status, p).toBe(404);
    }
    const t = await bob.apiToken();
    const r = await bob.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'bob-tries-a-build-1' }, { 'x-csrf-token': t });
    expect(r.status).toBe(404);
  }, 25 * 60_000);

  it('builds a Dockerfile with an uploaded build context: COPY and ADD land in the image, .dockerignore applies', async () => {
    const carol = new HttpClient(url);
    await carol.signUp('carol');
    // The context as a CI checkout has it: the files next to the Dockerfile, tarred (argv only, no shell).
    const ctx = execFileSync('tar', ['-C', path.join(repo, 'dockerfiles/copy-context'), '-cf', '-', '.dockerignore', 'files']);
    const content = readFileSync(path.join(repo, 'dockerfiles/copy-context/Dockerfile'), 'utf8');
    const made = await carol.postJson('/api/dockerfiles', { name: 'copy-context', content, contextTarBase64: ctx.toString('base64') }, { 'x-csrf-token': await carol.apiToken() });
    expect(made.status).toBe(201);
    const dfId = ((await made.json()) as { dockerfile: { id: number } }).dockerfile.id;
    const built = await carol.postJson(`/api/dockerfiles/${dfId}/builds`, { key: 'carol-context-build-1' }, { 'x-csrf-token': await carol.apiToken() });
    expect(built.status).toBe(201);
    const build = await waitForBuild(carol, ((await built.json()) as { build: { id: number } }).build.id);
    expect(build.state, `build failed: ${build.reason}`).toBe('succeeded');

    const raw = path.join(tmp.dir, 'carol.raw');
    const res = await carol.get(`/builds/${build.id}/artifacts/image.raw`);
    expect(res.status).toBe(200);
    await pipeline(Readable.fromWeb(res.body as never), createWriteStream(raw));
    const cat = async (guestPath: string) => {
      const pt = JSON.parse((await run('sfdisk', ['-J', raw], { timeoutMs: 30_000 })).stdout) as { partitiontable: { partitions: { start: number; name?: string }[] } };
      const start = pt.partitiontable.partitions.find((p) => p.name === 'root')!.start;
      return (await run('debugfs', ['-R', `cat ${guestPath}`, `${raw}?offset=${start * 512}`], { timeoutMs: 30_000 })).stdout;
    };
    expect(await cat('/etc/kiln-demo.conf')).toBe('greeting = "copied from the build context"\n');
    expect(await cat('/opt/demo/etc/kiln-demo.conf')).toContain('copied from the build context');
    expect(await cat('/opt/demo/ignored.secret')).toBe('');
  }, 25 * 60_000);
});
