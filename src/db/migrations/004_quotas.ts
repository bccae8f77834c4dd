import type { Knex } from 'knex';

/**
 * Storage quotas and the login throttle of issue 8.
 *
 * - `builds.artifact_bytes`: the sum of the sizes in `builds.artifacts`, kept beside the JSON so a quota check is
 *   one indexed SUM on both engines (no JSON functions, which differ between SQLite and PostgreSQL). Backfilled here.
 * - `login_throttle` replaces `login_failures`: one row per throttle bucket (an account as a whole, or one account
 *   from one client), so a reservation can lock exactly its rows. See src/web/services/login-throttle.ts.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => {
    t.bigInteger('artifact_bytes').notNullable().defaultTo(0);
  });
  const rows = await knex('builds').whereNotNull('artifacts').select('id', 'artifacts');
  for (const r of rows as Array<{ id: number; artifacts: string }>) {
    let bytes = 0;
    try {
      for (const a of JSON.parse(String(r.artifacts)) as Array<{ size?: unknown }>)
        bytes += Number(a?.size) > 0 ? Number(a.size) : 0;
    } catch {
      /* unreadable JSON counts as nothing, as the web reads it */
    }
    if (bytes > 0) await knex('builds').where({ id: r.id }).update({ artifact_bytes: bytes });
  }
  await knex.schema.createTable('login_throttle', (t) => {
    t.string('key', 255).primary();
    t.integer('failures').notNullable();
    // account bucket: start of its window; client bucket: time of its last failure
    t.bigInteger('since_ms').notNullable();
    // client bucket: no attempt before this time (backoff); 0 when none
    t.bigInteger('blocked_until_ms').notNullable();
  });
  await knex.schema.dropTableIfExists('login_failures');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.createTable('login_failures', (t) => {
    t.string('username', 64).primary();
    t.integer('failures').notNullable();
    t.bigInteger('window_start_ms').notNullable();
  });
  await knex.schema.dropTableIfExists('login_throttle');
  await knex.schema.alterTable('builds', (t) => {
    t.dropColumn('artifact_bytes');
  });
}
