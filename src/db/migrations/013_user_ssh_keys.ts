import type { Knex } from 'knex';

/**
 * SSH keys users add on their account page, for the SSH door (src/ssh-door):
 *   user_ssh_keys   one row per key: its owner, a name, the algorithm (`ssh-ed25519` | `ssh-rsa`), the public key
 *                   blob (base64, the canonical wire form), its size in bits, and its SHA-256 fingerprint as
 *                   `ssh-keygen -l` prints it (`SHA256:...`). The fingerprint is UNIQUE: a key opens one account.
 *                   `last_used_at` is written when the key logs in (at most once a minute).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('user_ssh_keys', (t) => {
    t.increments('id').primary();
    t.integer('user_id').unsigned().notNullable().references('users.id').onDelete('CASCADE');
    t.string('name', 200).notNullable();
    t.string('algorithm', 32).notNullable();
    t.text('public_key').notNullable();
    t.integer('bits').notNullable();
    t.string('fingerprint', 64).notNullable().unique();
    t.string('created_at', 32).notNullable();
    t.string('last_used_at', 32).nullable();
    t.index(['user_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('user_ssh_keys');
}
