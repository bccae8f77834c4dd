import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storageUsedBy } from '../../src/db/index.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';
import { freshDb, type TestDb } from '../db/engines.js';

const DF = 'FROM debian:bookworm\nCOPY blob.bin /blob.bin\n';
const KiB = 1024;
const QUOTA = 1024 * KiB; // quotaStorageMb: 1

type ApiError = { error: { code: string; message: string } };
const blob = (bytes: number, fill = 1): string => Buffer.alloc(bytes, fill).toString('base64');

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`storage quota (${engine})`, () => {
    let pg: TestDb | undefined;
    let w: TestWeb & { local: InProcessGlue };
    beforeAll(async () => {
      pg = engine === 'pg' ? await freshDb('pg') : undefined;
      w = await startTestWeb({
        db: pg?.db,
        config: { web: { quotaStorageMb: 1, quotaDockerfiles: 1000, quotaQueuedBuilds: 1000 } },
      });
    });
    afterAll(async () => {
      await w?.close();
      await pg?.drop();
    });

    const user = async (name: string): Promise<{ c: HttpClient; t: string; id: number }> => {
      const c = w.client();
      await c.signUp(name);
      const id = Number((await w.db('users').where({ username: name }).first()).id);
      return { c, t: await c.apiToken(), id };
    };
    const create = (u: { c: HttpClient; t: string }, name: string, contextBytes: number, fill = 1) =>
      u.c.postJson(
        '/api/dockerfiles',
        { name, content: DF, contextFiles: [{ name: 'blob.bin', contentBase64: blob(contextBytes, fill) }] },
        { 'x-csrf-token': u.t },
      );

    it('finding 3: Dockerfile versions and build contexts count; the upload that would go over is refused (409), nothing stored', async () => {
      const u = await user('alice');
      expect((await create(u, 'first', 600 * KiB)).status).toBe(201);
      const before = await storageUsedBy(w.db, u.id);
      expect(before.contexts).toBeGreaterThan(600 * KiB);
      expect(before.dockerfiles).toBe(Buffer.byteLength(DF));
      const over = await create(u, 'second', 600 * KiB);
      expect(over.status).toBe(409);
      const body = (await over.json()) as ApiError;
      expect(body.error.code).toBe('quota_exceeded');
      expect(body.error.message).toMatch(/storage quota.*nothing was saved/);
      expect(await w.db('dockerfiles').where({ name: 'second' }).first()).toBeUndefined();
      expect(await storageUsedBy(w.db, u.id)).toEqual(before);
      // An edit that adds a new context also counts; an edit that stores nothing new passes even now.
      const id = Number((await w.db('dockerfiles').where({ name: 'first' }).first()).id);
      const edit = await u.c.postJson(
        `/api/dockerfiles/${id}`,
        { content: DF, contextFiles: [{ name: 'blob.bin', contentBase64: blob(600 * KiB, 2) }] },
        { 'x-csrf-token': u.t },
      );
      expect(edit.status).toBe(409);
      expect((await u.c.postJson(`/api/dockerfiles/${id}`, { content: DF }, { 'x-csrf-token': u.t })).status).toBe(200);
      expect(await storageUsedBy(w.db, u.id)).toEqual(before);
      // Another user's quota is their own.
      expect((await create(await user('bob'), 'first', 600 * KiB)).status).toBe(201);
    });

    it('case 20: 20 parallel uploads fill the byte quota exactly as far as it goes, never past it', async () => {
      const u = await user('racer');
      const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => create(u, `par${i}`, 150 * KiB)));
      const ok = rs.filter((r) => r.status === 201).length;
      const refused = rs.filter((r) => r.status === 409);
      expect(ok + refused.length).toBe(20);
      for (const r of refused) expect(((await r.json()) as ApiError).error.code).toBe('quota_exceeded');
      const use = await storageUsedBy(w.db, u.id);
      expect(use.total).toBeLessThanOrEqual(QUOTA);
      // All uploads are the same size: as many as fit were taken, and one more would not have fitted.
      expect(ok).toBeGreaterThan(0);
      expect(use.total + use.total / ok).toBeGreaterThan(QUOTA);
      expect(Number((await w.db('dockerfiles').where({ owner_id: u.id }).count({ n: '*' }))[0]!.n)).toBe(ok);
    });

    it('finding 3: build artifacts count; while a user is over quota new builds and uploads are refused', async () => {
      const u = await user('carol');
      // The fake builder makes a 2 MiB image: over the 1 MiB quota once the build has succeeded.
      const df = await u.c.createDockerfile('small', 'FROM debian:bookworm\n# fake: big 2\nRUN true\n');
      const { id } = await u.c.build(df);
      expect((await w.waitForBuild(id)).state).toBe('succeeded');
      const use = await storageUsedBy(w.db, u.id);
      expect(use.artifacts).toBeGreaterThan(QUOTA);
      const from = w.local.commands.length;
      const again = await u.c.postJson(
        `/api/dockerfiles/${df}/builds`,
        { key: 'quota-key-0001' },
        { 'x-csrf-token': u.t },
      );
      expect(again.status).toBe(409);
      expect(((await again.json()) as ApiError).error.message).toMatch(
        /No new builds while your storage quota is full/,
      );
      expect(await w.db('builds').where({ idempotency_key: 'quota-key-0001' }).first()).toBeUndefined();
      expect(w.local.verbsSince(from).filter((v) => v.startsWith('job.'))).toEqual([]);
      expect((await create(u, 'more', 10 * KiB)).status).toBe(409);
      // the page form says it too, and keeps what was typed
      const t = await u.c.token('/dockerfiles/new');
      const f = new FormData();
      f.set('_csrf', t);
      f.set('name', 'paged');
      f.set('content', DF);
      const page = await u.c.postMultipart('/dockerfiles', f);
      expect(page.status).toBe(409);
      expect(await page.text()).toContain('storage quota');
    });
  });
}
