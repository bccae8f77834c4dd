import type { Knex } from 'knex';

/**
 * The auth change log, so web processes may serve sessions and users from memory (src/core/auth-cache.ts) and still
 * see a change made anywhere at once:
 *   auth_seq       one row: `seq`, the number of the latest auth change
 *   auth_changes   one row per change: `seq`, `kind` ('session' | 'user' | 'all') and `subject` (the sid, the user id,
 *                  or '*': forget every session and user)
 * Triggers write both, in the transaction of the change itself, whoever makes it (the web, `kiln user`, plain SQL):
 * a session's data or sid changed, its expiry moved earlier, or the session deleted (a touch, which only moves the
 * expiry later, is no change); a user's id, role, disabled, approved, session epoch, name or password changed, or
 * the user deleted; a TRUNCATE (PostgreSQL: no row triggers fire) logs 'all'. SQLite's REPLACE conflict resolution
 * deletes rows without their delete triggers (unless recursive_triggers is on): a session row inserted is logged,
 * and an insert or update of `users` that would replace another row logs 'all'.
 * Changes take the next `seq` under the lock of the `auth_seq` row, so seq order is commit order (on PostgreSQL
 * too, where a plain sequence would let a later number commit first and a reader step over the earlier one).
 *
 * A SQLite table rebuild (knex's alterTable, which copies into a new table and drops the old one) drops that table's
 * triggers: a migration that rebuilds `users` or `sessions` calls `createAuthTriggers(knex, table)` after it, and
 * `migrateLatest` refuses a database where any of `authTriggerNames` is missing or disabled.
 */
const USER_COLUMNS = ['id', 'role', 'disabled', 'approved', 'session_epoch', 'username', 'password_hash'];

type Table = 'users' | 'sessions';
const isPgKnex = (knex: Knex) => knex.client.config.client === 'pg';

/** The auth triggers on `table`, by name, as this engine has them (the names `migrateLatest` checks). */
function triggers(pg: boolean, table: Table): Array<[name: string, sql: string]> {
  if (pg) {
    const on = (name: string, when: string) =>
      [name, `CREATE TRIGGER ${name} ${when} EXECUTE PROCEDURE kiln_auth_change()`] as [string, string];
    if (table === 'users') {
      const changed = USER_COLUMNS.map((c) => `OLD.${c} IS DISTINCT FROM NEW.${c}`).join(' OR ');
      return [
        on('auth_users_update', `AFTER UPDATE ON users FOR EACH ROW WHEN (${changed})`),
        on('auth_users_delete', 'AFTER DELETE ON users FOR EACH ROW'),
        on('auth_users_truncate', 'AFTER TRUNCATE ON users FOR EACH STATEMENT'),
      ];
    }
    // json has no equality operator: compare the text.
    return [
      on(
        'auth_sessions_update',
        `AFTER UPDATE ON sessions FOR EACH ROW WHEN (OLD.sess::text IS DISTINCT FROM NEW.sess::text
          OR OLD.sid IS DISTINCT FROM NEW.sid OR NEW.expired < OLD.expired)`,
      ),
      on('auth_sessions_delete', 'AFTER DELETE ON sessions FOR EACH ROW'),
      on('auth_sessions_truncate', 'AFTER TRUNCATE ON sessions FOR EACH STATEMENT'),
    ];
  }
  // SQLite: the database's write lock already orders writers.
  const log = (kind: string, subject: string) => `BEGIN
      UPDATE auth_seq SET seq = seq + 1 WHERE id = 1;
      INSERT INTO auth_changes (seq, kind, subject) SELECT seq, '${kind}', ${subject} FROM auth_seq WHERE id = 1;
    END`;
  const on = (name: string, when: string, kind: string, subject: string) =>
    [name, `CREATE TRIGGER ${name} ${when} ${log(kind, subject)}`] as [string, string];
  if (table === 'users') {
    const changed = USER_COLUMNS.map((c) => `OLD.${c} IS NOT NEW.${c}`).join(' OR ');
    // A plain insert or update that meets a row this way fails and takes its log row with it; REPLACE goes on.
    const replaces = `(NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM users WHERE id = NEW.id))
      OR (NEW.username IS NOT OLD.username AND EXISTS (SELECT 1 FROM users WHERE username = NEW.username))`;
    return [
      on('auth_users_update', `AFTER UPDATE ON users FOR EACH ROW WHEN ${changed}`, 'user', 'CAST(OLD.id AS TEXT)'),
      on('auth_users_delete', 'AFTER DELETE ON users FOR EACH ROW', 'user', 'CAST(OLD.id AS TEXT)'),
      on(
        'auth_users_replace',
        'BEFORE INSERT ON users FOR EACH ROW WHEN EXISTS (SELECT 1 FROM users WHERE id = NEW.id OR username = NEW.username)',
        'all',
        "'*'",
      ),
      on('auth_users_replace_update', `BEFORE UPDATE ON users FOR EACH ROW WHEN ${replaces}`, 'all', "'*'"),
    ];
  }
  // julianday: an expiry written in another format still compares as a time; one that is not a time is a change.
  const earlier = 'coalesce(julianday(NEW.expired) >= julianday(OLD.expired), 0) = 0';
  return [
    on(
      'auth_sessions_update',
      `AFTER UPDATE ON sessions FOR EACH ROW WHEN OLD.sess IS NOT NEW.sess OR OLD.sid IS NOT NEW.sid OR ${earlier}`,
      'session',
      'OLD.sid',
    ),
    on('auth_sessions_delete', 'AFTER DELETE ON sessions FOR EACH ROW', 'session', 'OLD.sid'),
    // New sessions too (nothing holds them yet): INSERT OR REPLACE of a held one fires only this.
    on('auth_sessions_insert', 'AFTER INSERT ON sessions FOR EACH ROW', 'session', 'NEW.sid'),
    on(
      'auth_sessions_replace_update',
      'BEFORE UPDATE ON sessions FOR EACH ROW WHEN NEW.sid IS NOT OLD.sid AND EXISTS (SELECT 1 FROM sessions WHERE sid = NEW.sid)',
      'session',
      'NEW.sid',
    ),
  ];
}

/** Every auth trigger this engine has, as [table, name]. */
export function authTriggerNames(knex: Knex): Array<[Table, string]> {
  const pg = isPgKnex(knex);
  return (['users', 'sessions'] as const).flatMap((t) => triggers(pg, t).map(([name]) => [t, name] as [Table, string]));
}

/** (Re)creates the auth triggers on `table`: after a SQLite rebuild of it. */
export async function createAuthTriggers(knex: Knex, table: Table): Promise<void> {
  const pg = isPgKnex(knex);
  for (const [name, sql] of triggers(pg, table)) {
    await knex.raw(pg ? `DROP TRIGGER IF EXISTS ${name} ON ${table}` : `DROP TRIGGER IF EXISTS ${name}`);
    await knex.raw(sql);
  }
}

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
  if (isPgKnex(knex)) {
    await knex.raw(`
      CREATE FUNCTION kiln_auth_change() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE n bigint;
      BEGIN
        UPDATE auth_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO n;
        IF TG_OP = 'TRUNCATE' THEN
          INSERT INTO auth_changes (seq, kind, subject) VALUES (n, 'all', '*');
        ELSIF TG_TABLE_NAME = 'users' THEN
          INSERT INTO auth_changes (seq, kind, subject) VALUES (n, 'user', OLD.id::text);
        ELSE
          INSERT INTO auth_changes (seq, kind, subject) VALUES (n, 'session', OLD.sid);
        END IF;
        RETURN NULL;
      END $$`);
  }
  await createAuthTriggers(knex, 'users');
  await createAuthTriggers(knex, 'sessions');
}

export async function down(knex: Knex): Promise<void> {
  const pg = isPgKnex(knex);
  for (const [t, name] of authTriggerNames(knex)) {
    await knex.raw(pg ? `DROP TRIGGER IF EXISTS ${name} ON ${t}` : `DROP TRIGGER IF EXISTS ${name}`);
  }
  if (pg) await knex.raw('DROP FUNCTION IF EXISTS kiln_auth_change()');
  await knex.schema.dropTable('auth_changes');
  await knex.schema.dropTable('auth_seq');
}
