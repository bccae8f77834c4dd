import type { Knex } from 'knex';

/**
 * The durable task queue (src/db/tasks.ts, src/core/tasks): background work a request or the worker's own clock
 * asked for, claimed by one worker at a time under a lease.
 *   kind, subject    what to do and to what (`build.dispatch`, `build:42`)
 *   state            pending -> running -> done | failed (running -> pending again on a retry or a repeat)
 *   live_key         `kind subject` while pending or running, else null: UNIQUE, so a task is enqueued once while
 *                    one is waiting for its turn (NULLs never collide, on both engines)
 *   lease_owner, lease_expires_at   the worker holding it; an expired lease is claimed again (a worker died)
 *   attempts, max_attempts, next_run_at, last_error   retries with exponential backoff; failed keeps its error
 * Timestamps are ISO-8601 UTC strings like every other table's, so they compare as text on both engines.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tasks', (t) => {
    t.increments('id').primary();
    t.string('kind', 64).notNullable();
    t.string('subject', 128).notNullable().defaultTo('');
    t.string('state', 16).notNullable();
    t.string('live_key', 200).nullable().unique();
    t.string('lease_owner', 128).nullable();
    t.string('lease_expires_at', 32).nullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.integer('max_attempts').notNullable();
    t.string('next_run_at', 32).notNullable();
    t.text('last_error').nullable();
    t.string('created_at', 32).notNullable();
    t.string('updated_at', 32).notNullable();
    t.string('finished_at', 32).nullable();
    t.index(['state', 'next_run_at']);
    t.index(['subject']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('tasks');
}
