import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../../src/db/index.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

describe('SQLite locked by another process for longer than busy_timeout', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 48: answers 503 + Retry-After and writes nothing', async () => {
    const c = w.client();
    await c.signUp('alice');
    const t = await c.apiToken();
    const other = createDb({ client: 'sqlite', filename: path.join(w.dir, 'kiln.sqlite') });
    try {
      await other.raw('BEGIN EXCLUSIVE');
      const r = await c.postJson(
        '/api/dockerfiles',
        { name: 'blocked', content: 'FROM debian:bookworm\n' },
        { 'x-csrf-token': t },
      );
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('backend_unavailable');
      await other.raw('ROLLBACK');
    } finally {
      await other.destroy();
    }
    expect(await w.db('dockerfiles').where({ name: 'blocked' }).first()).toBeUndefined();
    const ok = await c.postJson(
      '/api/dockerfiles',
      { name: 'after', content: 'FROM debian:bookworm\n' },
      { 'x-csrf-token': t },
    );
    expect(ok.status).toBe(201);
  }, 30_000);
});
