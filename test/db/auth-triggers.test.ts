/**
 * The auth change log's triggers (migration 014) are what keeps every web process's session and user cache exact
 * (src/core/auth-cache.ts). A SQLite table rebuild (knex's alterTable) drops a table's triggers, and on PostgreSQL
 * a trigger can be disabled: `migrateLatest`, which every kiln process runs at start, refuses such a database.
 */
import { describe, expect, it } from 'vitest';
import { migrateLatest, readAuthSeq, type Db } from '../../src/db/index.js';
import { authTriggerNames, createAuthTriggers } from '../../src/db/migrations/014_auth_changes.js';
import { freshDb } from './engines.js';

/** Whether a session row deleted now logs an auth change. */
async function deleteIsLogged(db: Db, sid: string): Promise<boolean> {
  await db('sessions').insert({ sid, sess: JSON.stringify({ cookie: {} }), expired: new Date(Date.now() + 60_000) });
  const before = await readAuthSeq(db);
  await db('sessions').where({ sid }).delete();
  return (await readAuthSeq(db)) > before;
}

describe.each(['sqlite', 'pg'] as const)('auth triggers (%s)', (engine) => {
  it('every auth trigger is made by the migrations; a database that lost one (a SQLite table rebuild) or has one disabled is refused at start, until they are made again', async () => {
    const t = await freshDb(engine);
    try {
      // freshDb migrated (and checked) it; again: nothing to apply, nothing missing.
      expect(await migrateLatest(t.db)).toEqual([]);
      expect(authTriggerNames(t.db).map(([table]) => table)).toEqual(expect.arrayContaining(['users', 'sessions']));
      expect(await deleteIsLogged(t.db, 'one')).toBe(true);

      if (engine === 'sqlite') {
        // Dropping a column makes knex copy the table into a new one and drop the old, its triggers with it.
        await t.db.schema.alterTable('sessions', (tb) => tb.string('scratch'));
        await t.db.schema.alterTable('sessions', (tb) => tb.dropColumn('scratch'));
      } else {
        await t.db.raw('ALTER TABLE sessions DISABLE TRIGGER auth_sessions_delete');
      }
      // A logout now would reach no process's cache.
      expect(await deleteIsLogged(t.db, 'two')).toBe(false);
      await expect(migrateLatest(t.db)).rejects.toThrow(/sessions\.auth_sessions_delete/);

      await createAuthTriggers(t.db, 'sessions');
      expect(await migrateLatest(t.db)).toEqual([]);
      expect(await deleteIsLogged(t.db, 'three')).toBe(true);
    } finally {
      await t.drop();
    }
  });
});
