import type { Knex } from 'knex';

/**
 * A build cut off by a fault of Kiln or its machine (the glue says `lost`, or its backend build vanished) is
 * requeued once: `requeues` counts it (the glue knows the new attempt by a key derived from the submission's key
 * and this count), `requeue_reason` says what cut it off, for the build page.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => {
    t.integer('requeues').notNullable().defaultTo(0);
    t.text('requeue_reason').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => {
    t.dropColumn('requeue_reason');
    t.dropColumn('requeues');
  });
}
