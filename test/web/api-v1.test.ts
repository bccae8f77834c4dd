import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByName } from '../../src/db/index.js';
import { verifyDir } from '../../src/sdk/verify.js';
import * as S from '../../src/web/api-v1/schemas.js';
import { tempDir } from '../helpers/tmp.js';
import { ApiClient, addToken, addUser, startTestWeb, type TestWeb } from '../helpers/web.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    p.on('end', resolve);
  });
  for (const [name, data] of Object.entries(files)) p.entry({ name, mode: 0o644 }, Buffer.from(data));
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

type ApiError = { error: { code: string; message: string; details?: Record<string, unknown> } };

/** The answer's JSON, checked against the schema the OpenAPI document publishes for it. */
async function body<T>(res: Response, schema: { parse(v: unknown): T }): Promise<T> {
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return schema.parse(await res.json());
}

describe('REST API v1: a pipeline puts a Dockerfile, builds it once per key, waits, downloads and verifies', () => {
  let w: TestWeb;
  let api: ApiClient;
  beforeAll(async () => {
    w = await startTestWeb();
    await addUser(w.db, 'alice', 'user');
    api = new ApiClient(w.url, await addToken(w, 'alice', ['build']));
  });
  afterAll(async () => {
    await w?.close();
  });

  it('the whole journey, with the same code as kiln verify', async () => {
    const context = gzipSync(await tarOf({ 'app/hello.txt': 'hello\n' }));
    const df = 'FROM debian:bookworm\n# fake-packages: a=1\nCOPY app /app\n';
    const put = await api.putDockerfile('app', df, { context, settings: { formats: ['raw'], buildArgs: { X: '1' } } });
    expect(put.status, await put.clone().text()).toBe(201);
    const created = await body(put, S.DockerfileAnswer);
    expect(created).toMatchObject({ created: true, dockerfile: { name: 'app', content: df } });
    expect(created.dockerfile.context?.entries.map((e) => e.name)).toContain('app/hello.txt');
    expect(created.dockerfile.settings).toMatchObject({ formats: ['raw'], buildArgs: { X: '1' }, enabled: true });

    // The pipeline's next run sends the same: no new version, no new settings revision.
    const revision = async () =>
      (await w.db('job_settings').where({ dockerfile_id: created.dockerfile.id }).first()).revision;
    const before = await revision();
    const again = await api.putDockerfile('app', df, {
      context,
      settings: { formats: ['raw'], buildArgs: { X: '1' } },
    });
    expect(again.status).toBe(200);
    expect((await body(again, S.DockerfileAnswer)).created).toBe(false);
    expect(await w.db('dockerfile_versions').where({ dockerfile_id: created.dockerfile.id }).count({ n: '*' })).toEqual(
      [{ n: 1 }],
    );
    expect(await revision()).toBe(before);

    // Trigger twice with one key: one build.
    const key = { 'idempotency-key': 'pipeline-42-job-7' };
    const first = await api.post('/builds', { dockerfile: 'app' }, key);
    expect(first.status).toBe(201);
    const b1 = await body(first, S.TriggerAnswer);
    const second = await api.post('/builds', { dockerfile: 'app' }, key);
    expect(second.status).toBe(200);
    expect((await body(second, S.TriggerAnswer)).build.id).toBe(b1.build.id);
    expect(b1.build).toMatchObject({ trigger: 'api', dockerfile: { name: 'app' } });
    expect(await w.db('builds').where({ dockerfile_id: created.dockerfile.id }).count({ n: '*' })).toEqual([{ n: 1 }]);

    // Wait: each long poll answers when the state moves on, until the build is finished.
    let b = (await body(await api.get(`/builds/${b1.build.id}`), S.BuildAnswer)).build;
    while (!b.final) {
      const res = await api.get(`/builds/${b.id}?wait=60s&seen=${b.state}`);
      expect(res.status).toBe(200);
      b = (await body(res, S.BuildAnswer)).build;
    }
    expect(b.state).toBe('succeeded');

    // List the artifacts, download them, check one against the listing and all with kiln verify's code.
    const list = await body(await api.get(`/builds/${b.id}/artifacts`), S.ArtifactList);
    const image = list.artifacts.find((a) => a.name === 'image.raw')!;
    expect(image.sha256).toMatch(/^[0-9a-f]{64}$/);
    const bytes = Buffer.from(await (await api.get(image.url.replace('/api/v1', ''))).arrayBuffer());
    expect(sha256(bytes)).toBe(image.sha256);
    const part = await api.get(image.url.replace('/api/v1', ''), { range: 'bytes=0-2' });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(0, 3));

    const { dir, cleanup } = tempDir('kiln-api-download-');
    try {
      const out = path.join(dir, 'build');
      mkdirSync(out);
      for (const a of list.artifacts) {
        const res = await api.get(a.url.replace('/api/v1', ''));
        expect(res.status, a.name).toBe(200);
        writeFileSync(path.join(out, a.name), Buffer.from(await res.arrayBuffer()));
      }
      const key = await (await fetch(`${w.url}${list.signingKey}`)).text();
      const report = await verifyDir(out, { publicKey: key.trim(), requireSignature: true });
      const ok = (name: string) => report.checks.find((c) => c.name === name)?.ok;
      expect(ok('sha256 image.raw')).toBe(true);
      expect(ok('signature')).toBe(true);
    } finally {
      cleanup();
    }

    // The build is in the list, with its trigger.
    const page = await body(await api.get('/builds?dockerfile=app'), S.BuildPage);
    expect(page.builds.map((x) => [x.id, x.trigger])).toEqual([[b.id, 'api']]);
  });

  it('the same Idempotency-Key for another Dockerfile is 422 idempotency_key_reused; keys are per user', async () => {
    expect((await api.putDockerfile('other', 'FROM debian:bookworm\n')).status).toBe(201);
    const key = { 'idempotency-key': 'reused-key-1' };
    expect((await api.post('/builds', { dockerfile: 'app' }, key)).status).toBe(201);
    const reused = await api.post('/builds', { dockerfile: 'other' }, key);
    expect(reused.status).toBe(422);
    expect(((await reused.json()) as ApiError).error.code).toBe('idempotency_key_reused');
    // Bob picks the same key for his own Dockerfile: his own build, nothing learnt of alice's.
    await addUser(w.db, 'bob', 'user');
    const bob = new ApiClient(w.url, await addToken(w, 'bob', ['build']));
    expect((await bob.putDockerfile('app', 'FROM debian:bookworm\n')).status).toBe(201);
    const his = await bob.post('/builds', { dockerfile: 'app' }, key);
    expect(his.status).toBe(201);
  });

  it('bad input gets the one JSON error shape, never HTML or a 500; unknown routes 404, known paths 405 with Allow', async () => {
    const cases: Array<[Promise<Response>, number, string]> = [
      [api.get('/nope'), 404, 'not_found'],
      [api.request('/builds', { method: 'DELETE' }), 405, 'method_not_allowed'],
      [api.get('/builds/abc'), 404, 'not_found'],
      [api.get('/builds/1?wait=forever'), 422, 'invalid_input'],
      [api.get('/builds?state=bogus'), 422, 'invalid_input'],
      [api.get('/builds?cursor=notacursor'), 422, 'invalid_input'],
      [api.post('/builds', { dockerfile: 'app', extra: 1 }), 422, 'invalid_input'],
      [api.post('/builds', {}), 422, 'invalid_input'],
      [
        api.request('/builds', { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } }),
        400,
        'bad_request',
      ],
      [
        api.request('/builds', { method: 'POST', body: 'x', headers: { 'content-type': 'text/plain' } }),
        415,
        'bad_request',
      ],
      [api.post('/builds', { dockerfile: 'Not A Name' }), 422, 'invalid_input'],
      [api.post('/builds', { dockerfile: 'missing' }), 404, 'not_found'],
      [api.putDockerfile('bad', 'FROM debian:bookworm\nRUN --network=host true\n'), 422, 'policy_violation'],
      [api.putDockerfile('ctx', 'FROM debian:bookworm\n', { context: Buffer.from('not a tar') }), 422, 'invalid_input'],
      [
        api.request('/dockerfiles/x', { method: 'PUT', body: 'FROM x', headers: { 'content-type': 'text/plain' } }),
        415,
        'bad_request',
      ],
      [new ApiClient(w.url).get('/builds'), 401, 'unauthenticated'],
      [new ApiClient(w.url, 'kiln_0000000000000000_' + 'A'.repeat(43)).get('/builds'), 401, 'unauthenticated'],
    ];
    for (const [p, status, code] of cases) {
      const res = await p;
      const text = await res.text();
      expect([res.status, res.headers.get('content-type'), text], text).toEqual([
        status,
        expect.stringMatching(/^application\/json/),
        expect.any(String),
      ]);
      expect(S.ErrorBody.parse(JSON.parse(text)).error.code).toBe(code);
    }
    const m = await api.request('/builds', { method: 'DELETE' });
    expect(m.headers.get('allow')).toBe('POST, GET, HEAD');
    const policy = (await (
      await api.putDockerfile('bad', 'FROM debian:bookworm\nRUN --network=host true\n')
    ).json()) as ApiError;
    expect(policy.error.details?.findings).toEqual([expect.objectContaining({ line: 2 })]);
    // Nothing of the refused ones was stored.
    const alice = (await findUserByName(w.db, 'alice'))!;
    expect(
      (await w.db('dockerfiles').where({ owner_id: alice.id })).map((d: { name: string }) => d.name).sort(),
    ).toEqual(['app', 'other']);
  });
});
