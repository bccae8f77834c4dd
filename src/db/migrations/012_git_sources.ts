import type { Knex } from 'knex';

/**
 * Dockerfiles from git (issue 11, src/core/git):
 *   git_sources           per Dockerfile (ON DELETE CASCADE), where its Dockerfile and build context come from: the
 *                         repository URL (never with credentials), `match_key` (host and path, as webhooks name the
 *                         repository), the ref, the Dockerfile's path and the context directory, whether it follows
 *                         its branch, the webhook secret; `revision` counts edits and `fetched_revision` is the one
 *                         the last fetch applied (a fetch of an edited source is thrown away); the last fetch's
 *                         commit, time and error; `followed_commit` the newest branch head following acted on;
 *                         `polled_at`; `schedule_slot` the last timer slot Kiln's own schedule handled, for the
 *                         schedule `schedule_spec` (a changed schedule starts from its latest slot, unfired)
 *   dockerfile_versions.source   JSON {url, ref, commit, path, context} of a version fetched from git, null otherwise:
 *                         a version is its Dockerfile, its context and where both came from
 *   builds.git_commit     the commit a build of a git Dockerfile builds, pinned before it is dispatched
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('git_sources', (t) => {
    t.integer('dockerfile_id').unsigned().primary().references('dockerfiles.id').onDelete('CASCADE');
    t.text('url').notNullable();
    t.string('match_key', 600).notNullable();
    t.string('ref', 255).notNullable();
    t.string('dockerfile_path', 1024).notNullable();
    t.string('context_dir', 1024).notNullable().defaultTo('');
    t.boolean('follow').notNullable().defaultTo(false);
    t.string('webhook_secret', 64).notNullable();
    t.integer('revision').notNullable().defaultTo(1);
    t.integer('fetched_revision').notNullable().defaultTo(0);
    t.string('fetched_commit', 64).nullable();
    t.string('fetched_at', 32).nullable();
    t.text('fetch_error').nullable();
    t.string('followed_commit', 64).nullable();
    t.string('polled_at', 32).nullable();
    t.string('schedule_slot', 32).nullable();
    t.string('schedule_spec', 32).nullable();
    t.string('created_at', 32).notNullable();
    t.string('updated_at', 32).notNullable();
    t.index(['match_key']);
  });
  await knex.schema.alterTable('dockerfile_versions', (t) => {
    t.text('source').nullable();
  });
  await knex.schema.alterTable('builds', (t) => {
    t.string('git_commit', 64).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('builds', (t) => t.dropColumn('git_commit'));
  await knex.schema.alterTable('dockerfile_versions', (t) => t.dropColumn('source'));
  await knex.schema.dropTable('git_sources');
}
