import type { Knex } from 'knex';

/**
 * The admin console (src/core/admin):
 *   users.approved   false while a self-registered account waits for an admin (web.registrationApproval); every
 *                    existing account and every account an admin or `kiln user` makes is approved
 *   audit_log        one row per admin action, written in the transaction of the action itself: who (actor id and
 *                    a label that outlives the account), what, on what, when, from which address, and a detail
 *   builds(owner_id, id)   the dashboard's "your latest builds" (owner, newest first) without scanning every build
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.boolean('approved').notNullable().defaultTo(true);
  });
  await knex.schema.createTable('audit_log', (t) => {
    t.increments('id').primary();
    t.string('at', 32).notNullable();
    t.integer('actor_id').nullable();
    t.string('actor', 80).notNullable();
    t.string('action', 64).notNullable();
    t.string('target', 200).notNullable();
    t.string('address', 64).nullable();
    t.text('detail').nullable();
    t.index(['at']);
  });
  await knex.schema.alterTable('builds', (t) => {
    t.index(['owner_id', 'id'], 'builds_owner_id_id_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => {
    t.dropIndex(['owner_id', 'id'], 'builds_owner_id_id_index');
  });
  await knex.schema.dropTable('audit_log');
  await knex.schema.alterTable('users', (t) => {
    t.dropColumn('approved');
  });
}
