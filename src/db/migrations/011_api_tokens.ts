import type { Knex } from 'knex';

/**
 * Personal API tokens (src/core/tokens.ts), the credentials of /api/v1:
 *   public_id       the token's public part (`kiln_<public_id>_<secret>`): a request's token is found by it in one
 *                   indexed lookup, then its secret compared in constant time
 *   secret_sha256   SHA-256 of the whole token; the token itself is shown once and never stored
 *   scopes          comma-separated: read, build, admin
 *   expires_at      null: no expiry; last_used_at is written at most once a minute per token
 *   revoked_at      set by the owner (account page) or when the account is disabled (revoked_reason says which)
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_tokens', (t) => {
    t.increments('id').primary();
    t.string('public_id', 32).notNullable().unique();
    t.integer('user_id').unsigned().notNullable().references('users.id').onDelete('CASCADE');
    t.string('name', 64).notNullable();
    t.string('scopes', 32).notNullable();
    t.string('secret_sha256', 64).notNullable();
    t.string('created_at', 32).notNullable();
    t.string('expires_at', 32).nullable();
    t.string('last_used_at', 32).nullable();
    t.string('revoked_at', 32).nullable();
    t.string('revoked_reason', 16).nullable();
    t.index(['user_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_tokens');
}
