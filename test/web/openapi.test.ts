/**
 * The OpenAPI document of /api/v1 against the running app: it lists exactly the routes the router registers (both
 * are made from one table), and every operation it lists answers, neither 404 nor 405, when called with a valid
 * token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByName } from '../../src/db/index.js';
import { ApiClient, addToken, addUser, startTestWeb, type TestWeb } from '../helpers/web.js';

type Operation = {
  operationId: string;
  security: unknown[];
  parameters: Array<{ name: string; in: string; required: boolean; schema: unknown }>;
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
  responses: Record<string, unknown>;
};
type Doc = { openapi: string; paths: Record<string, Record<string, Operation>>; components: Record<string, unknown> };

describe('OpenAPI 3.1 document of /api/v1', () => {
  let w: TestWeb;
  let doc: Doc;
  let admin: ApiClient;
  let ids: { build: number; victim: number; release: number };
  beforeAll(async () => {
    w = await startTestWeb();
    await addUser(w.db, 'root', 'admin');
    admin = new ApiClient(w.url, await addToken(w, 'root', ['read', 'build', 'admin']));
    expect((await admin.putDockerfile('mine', 'FROM debian:bookworm\n# fake-packages: a=1\nRUN true\n')).status).toBe(
      201,
    );
    const { build } = (await (await admin.post('/builds', { dockerfile: 'mine' })).json()) as { build: { id: number } };
    await w.waitForBuild(build.id);
    await addUser(w.db, 'victim', 'user');
    const promoted = await admin.post(`/builds/${build.id}/release`, { name: 'openapi-v1' });
    expect(promoted.status).toBe(201);
    const { release } = (await promoted.json()) as { release: { id: number } };
    ids = { build: build.id, victim: (await findUserByName(w.db, 'victim'))!.id, release: release.id };
    // Public: a client generator needs no token.
    const res = await new ApiClient(w.url).get('/openapi.json');
    expect(res.status).toBe(200);
    doc = (await res.json()) as Doc;
  });
  afterAll(async () => {
    await w?.close();
  });

  const operations = () =>
    Object.entries(doc.paths).flatMap(([p, methods]) => Object.entries(methods).map(([m, op]) => ({ p, m, op })));

  it('is OpenAPI 3.1 with JSON Schema 2020-12, a bearer scheme, a unique id and the error shape for every operation', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.components).toMatchObject({ securitySchemes: { token: { type: 'http', scheme: 'bearer' } } });
    const seen = new Set<string>();
    for (const { p, m, op } of operations()) {
      expect(seen.has(op.operationId), op.operationId).toBe(false);
      seen.add(op.operationId);
      expect(op.responses.default, `${m} ${p}`).toEqual(expect.objectContaining({ description: expect.any(String) }));
      // Every {param} of the path is a required path parameter with a schema.
      for (const name of [...p.matchAll(/\{(\w+)\}/g)].map((x) => x[1]))
        expect(op.parameters, `${m} ${p} ${name}`).toContainEqual(
          expect.objectContaining({ name, in: 'path', required: true }),
        );
      // Public: the document itself, and the push webhook (its signature authenticates it, src/core/git/hooks.ts).
      if (p !== '/openapi.json' && p !== '/hooks/git')
        expect(op.security, `${m} ${p}`).toEqual([{ token: expect.any(Array) }]);
      else expect(op.security, `${m} ${p}`).toEqual([]);
    }
    const put = doc.paths['/dockerfiles/{name}']!.put!;
    expect(put.requestBody?.content['multipart/form-data']?.schema).toMatchObject({
      properties: { dockerfile: { type: 'string', format: 'binary' }, settings: { type: 'object' } },
      required: ['dockerfile'],
    });
  });

  it('every registered /api/v1 route is in the document, and nothing else is', () => {
    const registered = w
      .routes()
      .filter((r) => r.path.startsWith('/api/v1/'))
      .map((r) => `${r.method} ${r.path}`)
      .sort();
    const documented = operations()
      .map(({ p, m }) => `${m.toUpperCase()} /api/v1${p.replace(/\{(\w+)\}/g, ':$1')}`)
      .sort();
    expect(registered.length).toBeGreaterThan(20);
    expect(documented).toEqual(registered);
  });

  it('every operation in the document answers with a valid token (not 404, not 405)', async () => {
    const fill = (p: string) =>
      p
        .replace(/^\/admin\/users\/\{id\}/, `/admin/users/${ids.victim}`)
        .replace(/^\/admin\/jobs\/\{id\}/, '/admin/jobs/424242')
        .replace(/^\/releases\/\{id\}/, () => `/releases/${ids.release}`)
        .replace('{id}', String(ids.build))
        .replace(/^\/dockerfiles\/\{name\}/, '/dockerfiles/mine')
        .replace('{name}', 'image.raw');
    const problems: string[] = [];
    for (const { p, m } of operations()) {
      const path = fill(p);
      let res: Response;
      if (m === 'put') res = await admin.putDockerfile('mine', 'FROM debian:bookworm\nRUN true\n');
      else if (m === 'get') res = await admin.get(path);
      else if (path === '/builds') res = await admin.post(path, { dockerfile: 'mine' });
      else if (path === '/admin/users') res = await admin.post(path, { username: 'newbie' });
      else if (path.startsWith('/admin/jobs/')) res = await admin.post(path, { confirm: 'kiln-job-424242' });
      else if (path.endsWith('/release')) res = await admin.post(path, { name: 'openapi-v1' });
      else res = await admin.post(path);
      await res.arrayBuffer();
      if (res.status === 404 || res.status === 405 || res.status >= 500) problems.push(`${m} ${path} -> ${res.status}`);
    }
    expect(problems).toEqual([]);
  });
});
