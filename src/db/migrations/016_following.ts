import type { Knex } from 'knex';

/**
 * Following a Dockerfile (issue 12, src/core/following):
 *   feed_tokens          one per user at most: the secret of the user's Atom feeds (public_id UNIQUE, only the
 *                        SHA-256 of the secret stored); rotating replaces the row, revoking deletes it
 *   dockerfile_webhooks  one per Dockerfile at most (ON DELETE CASCADE): the outgoing webhook's URL and secret
 *   build_notices        one per ended build (ON DELETE CASCADE): written once by `build.notify` with the package
 *                        diff against the previous successful build (JSON, null when there was none to compare)
 *   webhook_deliveries   one per build end (UNIQUE build_id, ON DELETE CASCADE): the delivery id sent on every
 *                        attempt, the body, state pending|delivered|failed, attempts, last response code and error
 * Builds that ended before this migration get a notice without a diff, so nothing old is announced.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('feed_tokens', (t) => {
    t.integer('user_id').unsigned().primary().references('users.id').onDelete('CASCADE');
    t.string('public_id', 32).notNullable().unique();
    t.string('secret_sha256', 64).notNullable();
    t.string('created_at', 32).notNullable();
  });
  await knex.schema.createTable('dockerfile_webhooks', (t) => {
    t.integer('dockerfile_id').unsigned().primary().references('dockerfiles.id').onDelete('CASCADE');
    t.text('url').notNullable();
    t.string('secret', 64).notNullable();
    t.string('created_at', 32).notNullable();
    t.string('updated_at', 32).notNullable();
  });
  await knex.schema.createTable('build_notices', (t) => {
    t.integer('build_id').unsigned().primary().references('builds.id').onDelete('CASCADE');
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.text('diff').nullable();
    t.string('created_at', 32).notNullable();
  });
  await knex.schema.createTable('webhook_deliveries', (t) => {
    t.increments('id').primary();
    t.string('delivery_id', 64).notNullable().unique();
    t.integer('build_id').unsigned().notNullable().unique().references('builds.id').onDelete('CASCADE');
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.string('event', 32).notNullable();
    t.text('body').notNullable();
    t.string('state', 16).notNullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.integer('response_status').nullable();
    t.text('error').nullable();
    t.string('created_at', 32).notNullable();
    t.string('attempted_at', 32).nullable();
    t.string('delivered_at', 32).nullable();
    t.index(['dockerfile_id', 'id']);
  });
  await knex.raw(
    `INSERT INTO build_notices (build_id, dockerfile_id, diff, created_at)
     SELECT id, dockerfile_id, NULL, ? FROM builds WHERE state IN ('succeeded', 'failed', 'cancelled', 'skipped')`,
    [new Date().toISOString()],
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('webhook_deliveries');
  await knex.schema.dropTable('build_notices');
  await knex.schema.dropTable('dockerfile_webhooks');
  await knex.schema.dropTable('feed_tokens');
}
