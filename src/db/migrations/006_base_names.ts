import type { Knex } from 'knex';

/**
 * The site admin's names for allowed bases (`corp/debian:12` -> `debian:bookworm`), sent to every build in its job
 * spec. `name` is the normalised reference (familiar form: `debian:12`, not `docker.io/library/debian:12`), so one
 * name has one row; `base` is spelled as in sdk.bases.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('base_names', (t) => {
    t.increments('id').primary();
    t.string('name', 255).notNullable().unique();
    t.string('base', 255).notNullable();
    t.integer('updated_by').unsigned().nullable().references('users.id').onDelete('SET NULL');
    t.string('created_at', 32).notNullable();
    t.string('updated_at', 32).notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('base_names');
}
