import type { Knex } from 'knex';

/**
 * Releases and retention (issue 12, src/core/releases, src/core/retention.ts):
 *   builds.pinned, pinned_at        a user kept this build from retention (counted against retention.pinsPerUser)
 *   builds.artifacts_expired_at     retention dropped this build's artifacts: set, with artifact_bytes 0 and the
 *                                   build.discard task, in one transaction; downloads refuse it from then on
 *   releases                        a build promoted to a name, unique per Dockerfile (UNIQUE(dockerfile_id, name));
 *                                   `pending` until the worker has copied the files into the release store (a
 *                                   directory named by the row's id, never by the name), checked them against the
 *                                   build's signed SHA256SUMS and signed its own: then `ready` with `files` (JSON
 *                                   [{name, size, sha256}]), `sums`, `signature`, `public_key` in the same update,
 *                                   and immutable; `failed` with `reason` when it could not be made
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => {
    t.boolean('pinned').notNullable().defaultTo(false);
    t.string('pinned_at', 32).nullable();
    t.string('artifacts_expired_at', 32).nullable();
  });
  await knex.schema.createTable('releases', (t) => {
    t.increments('id').primary();
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.integer('build_id').unsigned().notNullable().references('builds.id').onDelete('CASCADE');
    t.integer('owner_id').unsigned().notNullable().references('users.id').onDelete('CASCADE');
    t.string('name', 64).notNullable();
    t.string('state', 16).notNullable();
    t.text('reason').nullable();
    t.text('files').nullable();
    t.bigInteger('bytes').notNullable().defaultTo(0);
    t.text('sums').nullable();
    t.text('signature').nullable();
    t.text('public_key').nullable();
    t.integer('created_by').unsigned().nullable().references('users.id').onDelete('SET NULL');
    t.string('created_at', 32).notNullable();
    t.string('made_at', 32).nullable();
    t.unique(['dockerfile_id', 'name']);
    t.index(['build_id']);
    t.index(['owner_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('releases');
  await knex.schema.alterTable('builds', (t) => {
    t.dropColumn('artifacts_expired_at');
    t.dropColumn('pinned_at');
    t.dropColumn('pinned');
  });
}
