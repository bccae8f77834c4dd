import type { Knex } from 'knex';

/**
 * Build contexts (the files `COPY`/`ADD` see). A context belongs to one Dockerfile and is referenced by the versions
 * that use it, so a build keeps the exact Dockerfile + context pair it was requested with, also when the owner
 * uploads a new context later. The stored tar is the server's re-pack of validated entries, never the raw upload.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('dockerfile_contexts', (t) => {
    t.increments('id').primary();
    t.integer('dockerfile_id').unsigned().notNullable().references('dockerfiles.id').onDelete('CASCADE');
    t.string('sha256', 64).notNullable(); // of the stored tar
    t.integer('size').notNullable(); // tar bytes
    t.integer('entries').notNullable();
    t.text('listing').notNullable(); // JSON [{name, type, size, linkname?}] for the Dockerfile page
    t.binary('tar').notNullable();
    t.string('created_at', 32).notNullable();
    t.index(['dockerfile_id']);
  });
  // No REFERENCES here: adding a foreign-key column makes knex rebuild the whole table on SQLite (copy, drop,
  // rename) with foreign_keys on, which would cascade into builds. Both tables are only ever deleted through their
  // Dockerfile's ON DELETE CASCADE, so the id cannot dangle.
  await knex.schema.alterTable('dockerfile_versions', (t) => {
    t.integer('context_id').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('dockerfile_versions', (t) => {
    t.dropColumn('context_id');
  });
  await knex.schema.dropTableIfExists('dockerfile_contexts');
}
