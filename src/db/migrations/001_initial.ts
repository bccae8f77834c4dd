import type { Knex } from 'knex';

/**
 * Shipped migrations are never edited: add a new module instead. Timestamps are ISO strings (see nowIso) so both
 * engines compare and sort them the same way.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('users', (t) => {
    t.increments('id').primary();
    t.string('username', 32).notNullable().unique();
    t.string('password_hash', 255).notNullable();
    t.string('role', 8).notNullable().defaultTo('user');
    t.boolean('disabled').notNullable().defaultTo(false);
    // Bumped when a user is disabled or changes password: sessions carry the epoch they were made in.
    t.integer('session_epoch').notNullable().defaultTo(0);
    t.string('created_at', 32).notNullable();
  });

  // Shape expected by connect-session-knex (it is told not to create it).
  await knex.schema.createTable('sessions', (t) => {
    t.string('sid', 255).primary();
    t.json('sess').notNullable();
    t.timestamp('expired').notNullable().index();
  });

  await knex.schema.createTable('settings', (t) => {
    t.string('key', 64).primary();
    t.text('value').notNullable();
  });

  // Per-account login throttling that survives restarts. Keyed by the submitted name (existing or not) so the
  // throttle itself is no enumeration oracle.
  await knex.schema.createTable('login_failures', (t) => {
    t.string('username', 64).primary();
    t.integer('failures').notNullable();
    t.bigInteger('window_start_ms').notNullable();
  });

  await knex.schema.createTable('dockerfiles', (t) => {
    t.increments('id').primary();
    t.integer('owner_id').unsigned().notNullable().references('users.id').onDelete('CASCADE');
    t.string('name', 63).notNullable();
    t.integer('current_version_id').unsigned().nullable();
    t.string('created_at', 32).notNullable();
    t.string('updated_at', 32).notNullable();
    t.unique(['owner_id', 'name']);
  });

  await knex.schema.createTable('dockerfile_versions', (t) => {
    t.increments('id').primary();
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.text('content').notNullable();
    t.string('sha256', 64).notNullable();
    t.integer('size').notNullable();
    t.string('created_at', 32).notNullable();
    t.index(['dockerfile_id']);
  });

  await knex.schema.createTable('builds', (t) => {
    t.increments('id').primary();
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.integer('version_id').unsigned().notNullable().references('dockerfile_versions.id');
    t.integer('owner_id').unsigned().notNullable().references('users.id').onDelete('CASCADE');
    t.string('idempotency_key', 64).notNullable().unique();
    // requested -> queued -> running -> succeeded | failed | cancelled
    t.string('state', 16).notNullable();
    t.integer('backend_build').nullable();
    t.text('reason').nullable();
    t.text('progress').nullable(); // JSON {stage, percent, message}
    t.text('artifacts').nullable(); // JSON [{name, size}]
    t.string('image_sha256', 64).nullable();
    t.integer('dispatch_attempts').notNullable().defaultTo(0);
    t.string('requested_at', 32).notNullable();
    t.string('queued_at', 32).nullable();
    t.string('started_at', 32).nullable();
    t.string('finished_at', 32).nullable();
    t.string('updated_at', 32).notNullable();
    t.index(['owner_id', 'state']);
    t.index(['dockerfile_id']);
    t.index(['state']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['builds', 'dockerfile_versions', 'dockerfiles', 'login_failures', 'settings', 'sessions', 'users']) {
    await knex.schema.dropTableIfExists(t);
  }
}
