import type { Knex } from 'knex';

/**
 * The auth change log, so web processes may serve sessions and users from memory (src/core/auth-cache.ts) and still
 * see a change made anywhere at once:
 *   auth_seq       one row: `seq`, the number of the latest auth change
 *   auth_changes   one row per change: `seq`, `kind` ('session' | 'user') and `subject` (the sid or the user id)
 * Triggers write both, in the transaction of the change itself, whoever makes it (the web, `kiln user`, plain SQL):
 * a session's data changed or the session deleted (a touch, which moves only `expired`, is no change), a user's
 * role, disabled, approved, session epoch, name or password changed, or the user deleted. A process reads `seq` per
 * request; when it moved, it reads the changes since the last it saw and forgets those sessions and users.
 * Changes take the next `seq` under the lock of the `auth_seq` row, so seq order is commit order (on PostgreSQL
 * too, where a plain sequence would let a later number commit first and a reader step over the earlier one).
 */
const USER_COLUMNS = ['role', 'disabled', 'approved', 'session_epoch', 'username', 'password_hash'];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('auth_seq', (t) => {
    t.integer('id').primary();
    t.bigInteger('seq').notNullable();
  });
  await knex('auth_seq').insert({ id: 1, seq: 0 });
  await knex.schema.createTable('auth_changes', (t) => {
    t.bigInteger('seq').primary();
    t.string('kind', 8).notNullable();
    t.string('subject', 255).notNullable();
  });
  const pg = knex.client.config.client === 'pg';
  if (pg) {
    await knex.raw(`
      CREATE FUNCTION kiln_auth_change() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE n bigint;
      BEGIN
        UPDATE auth_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO n;
        IF TG_TABLE_NAME = 'users' THEN
          INSERT INTO auth_changes (seq, kind, subject) VALUES (n, 'user', OLD.id::text);
        ELSE
          INSERT INTO auth_changes (seq, kind, subject) VALUES (n, 'session', OLD.sid);
        END IF;
        RETURN NULL;
      END $$`);
    const changed = USER_COLUMNS.map((c) => `OLD.${c} IS DISTINCT FROM NEW.${c}`).join(' OR ');
    await knex.raw(`CREATE TRIGGER auth_users_update AFTER UPDATE ON users FOR EACH ROW
      WHEN (${changed}) EXECUTE PROCEDURE kiln_auth_change()`);
    await knex.raw(`CREATE TRIGGER auth_users_delete AFTER DELETE ON users FOR EACH ROW
      EXECUTE PROCEDURE kiln_auth_change()`);
    // json has no equality operator: compare the text.
    await knex.raw(`CREATE TRIGGER auth_sessions_update AFTER UPDATE ON sessions FOR EACH ROW
      WHEN (OLD.sess::text IS DISTINCT FROM NEW.sess::text) EXECUTE PROCEDURE kiln_auth_change()`);
    await knex.raw(`CREATE TRIGGER auth_sessions_delete AFTER DELETE ON sessions FOR EACH ROW
      EXECUTE PROCEDURE kiln_auth_change()`);
    return;
  }
  // SQLite: the database's write lock already orders writers.
  const log = (kind: string, subject: string) => `
      UPDATE auth_seq SET seq = seq + 1 WHERE id = 1;
      INSERT INTO auth_changes (seq, kind, subject) SELECT seq, '${kind}', ${subject} FROM auth_seq WHERE id = 1;`;
  const changed = USER_COLUMNS.map((c) => `OLD.${c} IS NOT NEW.${c}`).join(' OR ');
  await knex.raw(`CREATE TRIGGER auth_users_update AFTER UPDATE ON users FOR EACH ROW WHEN ${changed}
    BEGIN ${log('user', 'CAST(OLD.id AS TEXT)')} END`);
  await knex.raw(`CREATE TRIGGER auth_users_delete AFTER DELETE ON users FOR EACH ROW
    BEGIN ${log('user', 'CAST(OLD.id AS TEXT)')} END`);
  await knex.raw(`CREATE TRIGGER auth_sessions_update AFTER UPDATE ON sessions FOR EACH ROW
    WHEN OLD.sess IS NOT NEW.sess BEGIN ${log('session', 'OLD.sid')} END`);
  await knex.raw(`CREATE TRIGGER auth_sessions_delete AFTER DELETE ON sessions FOR EACH ROW
    BEGIN ${log('session', 'OLD.sid')} END`);
}

export async function down(knex: Knex): Promise<void> {
  for (const [t, name] of [
    ['users', 'auth_users_update'],
    ['users', 'auth_users_delete'],
    ['sessions', 'auth_sessions_update'],
    ['sessions', 'auth_sessions_delete'],
  ] as const) {
    await knex.raw(
      knex.client.config.client === 'pg' ? `DROP TRIGGER IF EXISTS ${name} ON ${t}` : `DROP TRIGGER IF EXISTS ${name}`,
    );
  }
  if (knex.client.config.client === 'pg') await knex.raw('DROP FUNCTION IF EXISTS kiln_auth_change()');
  await knex.schema.dropTable('auth_changes');
  await knex.schema.dropTable('auth_seq');
}
