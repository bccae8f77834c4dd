/**
 * SQLite's read connections (src/db/knex.ts createReader): pages read beside the one writer connection, see only
 * committed data, and cannot write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReader, closeReader } from '../../src/db/index.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

describe('SQLite read connections', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('the dashboard answers while a transaction holds the writer, and shows what is committed', async () => {
    const c = w.client();
    await c.signUp('alice');
    await c.createDockerfile('app', 'FROM debian:bookworm\n');
    expect(await (await c.get('/dockerfiles')).text()).toContain('app');
    // The process's one writer connection, taken by a transaction that renames the Dockerfile and has not committed.
    const trx = await w.db.transaction();
    try {
      await trx('dockerfiles').where({ name: 'app' }).update({ name: 'renamed' });
      const page = await c.get('/dockerfiles');
      expect(page.status).toBe(200);
      const html = await page.text();
      expect(html).toContain('app');
      expect(html).not.toContain('renamed');
    } finally {
      await trx.rollback();
    }
  });

  it('a read connection refuses to write', async () => {
    const reader = createReader(w.db);
    try {
      expect(reader).not.toBe(w.db);
      await expect(reader.raw("INSERT INTO settings (key, value) VALUES ('x', 'y')")).rejects.toThrow(/readonly/i);
      expect(await w.db('settings').where({ key: 'x' }).first()).toBeUndefined();
    } finally {
      await closeReader(reader, w.db);
    }
  });
});
