import type { Knex } from 'knex';

/**
 * The web's attestation of a build: the SHA256SUMS it wrote from its own hashes of the artifacts it received, its
 * signature, and the public key that signed it (so a build signed before a key change still shows its key). One row
 * per build, written in the same transaction that moves the build from `verifying` to `succeeded`: there is never a
 * succeeded build without it, nor a row for a build still being verified. The per-artifact sha256 the web computed
 * goes into builds.artifacts (JSON [{name, size, sha256}]); no column changes there.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('build_attestations', (t) => {
    t.integer('build_id').unsigned().primary().references('builds.id').onDelete('CASCADE');
    t.text('sums').notNullable();
    t.text('signature').notNullable();
    t.text('public_key').notNullable();
    t.string('created_at', 32).notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('build_attestations');
}
