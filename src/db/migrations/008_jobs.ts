import type { Knex } from 'knex';

/**
 * Jobs from the web (issue 10, section 2):
 * - `job_settings`: per Dockerfile, the job the user asked for (output formats, build arguments, boot firmware, a
 *   schedule, the enabled switch), and how far the glue has it: `revision` counts changes, `synced_revision` is the
 *   last one the glue confirmed, `sync_error` why the last attempt gave up. No row: the defaults, nothing asked.
 * - `builds.trigger`: what started a build: `manual` (the Build button), `api` (the JSON API), `schedule` (the
 *   backend's timer, found by reconciliation).
 * - `dockerfiles.deleting_at`: deletion confirmed and pending: the job is being deleted through the glue; the rows
 *   (and the storage they hold) go once it is.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('job_settings', (t) => {
    t.integer('dockerfile_id').unsigned().primary().references('dockerfiles.id').onDelete('CASCADE');
    t.string('formats', 64).nullable(); // comma-separated; null: the site's default (sdk.formats)
    t.text('build_args').nullable(); // JSON {NAME: value}
    t.string('boot_firmware', 16).nullable(); // comma-separated; null: the SDK's default
    t.string('schedule', 8).notNullable().defaultTo('off');
    t.integer('schedule_hour').notNullable().defaultTo(2);
    t.integer('schedule_weekday').notNullable().defaultTo(1);
    t.boolean('enabled').notNullable().defaultTo(true);
    t.integer('revision').notNullable().defaultTo(0);
    t.integer('synced_revision').notNullable().defaultTo(0);
    t.text('sync_error').nullable();
    t.string('updated_at', 32).notNullable();
  });
  await knex.schema.alterTable('builds', (t) => {
    t.string('trigger', 16).notNullable().defaultTo('manual');
  });
  await knex.schema.alterTable('dockerfiles', (t) => {
    t.string('deleting_at', 32).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('dockerfiles', (t) => t.dropColumn('deleting_at'));
  await knex.schema.alterTable('builds', (t) => t.dropColumn('trigger'));
  await knex.schema.dropTable('job_settings');
}
