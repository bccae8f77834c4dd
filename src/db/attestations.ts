import type { BuildArtifact } from './builds.js';
import { updateBuild } from './builds.js';
import type { Db, Queryable } from './knex.js';
import { nowIso } from './knex.js';

/** The web's signed SHA256SUMS of a build (migration 003). */
export interface Attestation {
  build_id: number;
  sums: string;
  signature: string;
  public_key: string;
  created_at: string;
}

export async function findAttestation(db: Queryable, buildId: number): Promise<Attestation | undefined> {
  const r = await db('build_attestations').where({ build_id: buildId }).first();
  return r ? { ...(r as Attestation), build_id: Number(r.build_id) } : undefined;
}

/**
 * Ends a verification: in one transaction the build goes `verifying` -> `succeeded` with the web's per-artifact
 * digests, and its attestation is stored. Returns false (and writes nothing) when the build had left `verifying`
 * meanwhile, e.g. another web instance finished it first.
 */
export async function completeAttestation(
  db: Db,
  buildId: number,
  a: { artifacts: BuildArtifact[]; imageSha256: string | null; sums: string; signature: string; publicKey: string },
): Promise<boolean> {
  return db.transaction(async (trx) => {
    const moved = await updateBuild(trx, buildId, ['verifying'], {
      state: 'succeeded',
      artifacts: a.artifacts,
      image_sha256: a.imageSha256,
    });
    if (!moved) return false;
    await trx('build_attestations')
      .insert({
        build_id: buildId,
        sums: a.sums,
        signature: a.signature,
        public_key: a.publicKey,
        created_at: nowIso(),
      })
      .onConflict('build_id')
      .merge();
    return true;
  });
}
