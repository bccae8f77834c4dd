/**
 * Attestation: the web's own account of a build's artifacts, made where the signing key lives.
 *
 *   `verifying` (the backend says succeeded)
 *     -> every artifact is streamed through the glue (build.artifact) into sha256, nothing stored
 *     -> the builder's SHA256SUMS (its claim) must list exactly the deliverables, each with the web's digest
 *     -> the web writes its own SHA256SUMS from its own digests and signs it
 *     -> one transaction: build `succeeded` with {name, size, sha256} per artifact + the attestation row
 *   or `failed` with the reason when the claim and the bytes disagree.
 *
 * Runs in the background (the `build.attest` task), never in a request. Nothing is written before the final transaction,
 * so a crash or a dropped stream mid-way leaves the build `verifying` and the task's next run starts over; two
 * instances doing the same build end with one result (the transaction only moves a build still `verifying`).
 */
import { createHash } from 'node:crypto';
import { completeAttestation, updateBuild, type BuildArtifact, type BuildRow } from '../../db/index.js';
import type { ArtifactName } from '../../protocol/index.js';
import { formatSha256Sums, hashStream, parseSha256Sums } from '../../shared/checksums.js';
import { isKilnError } from '../../shared/errors.js';
import type { CoreDeps } from '../deps.js';
import { signingKey, type SigningKey } from '../signing.js';
import type { TaskKind } from '../tasks/worker.js';
import { buildOf } from './dispatch.js';
import { buildEnded } from '../following/notify.js';

/** Artifacts that describe the build rather than being its product: hashed, but not in SHA256SUMS. */
const RECORDS: ReadonlySet<string> = new Set(['result.json', 'build.log', 'SHA256SUMS', 'SHA256SUMS.sig']);
/** The builder's SHA256SUMS is a few lines; anything bigger is not one. */
const MAX_CLAIM_BYTES = 64 * 1024;

type Deps = Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config'>;
/** `elsewhere`: the build is no longer `verifying` (another worker ended it first). */
export type AttestOutcome = 'succeeded' | 'failed' | 'elsewhere';

interface Received {
  name: string;
  sha256: string;
  size: number;
}

/** Why the builder's claim does not hold for what the web received, or undefined when it does. */
export function claimProblem(claimText: string | undefined, received: readonly Received[]): string | undefined {
  if (claimText === undefined) return 'the builder sent no SHA256SUMS';
  let claim;
  try {
    claim = parseSha256Sums(claimText);
  } catch (e) {
    return `the builder's SHA256SUMS is malformed (${(e as Error).message})`;
  }
  if (!claim.length) return "the builder's SHA256SUMS lists no file";
  const got = new Map(received.map((r) => [r.name, r]));
  for (const c of claim) {
    const r = got.get(c.name);
    if (!r || RECORDS.has(c.name))
      return `the builder's SHA256SUMS lists ${JSON.stringify(c.name.slice(0, 64))}, which is not an artifact of this build`;
    if (r.sha256 !== c.sha256)
      return `${c.name} does not match the builder's SHA256SUMS: the web received sha256 ${r.sha256}, the builder claimed ${c.sha256}`;
  }
  const unlisted = received.filter((r) => !RECORDS.has(r.name) && !claim.some((c) => c.name === r.name));
  if (unlisted.length)
    return `${unlisted.map((r) => r.name).join(', ')} ${unlisted.length > 1 ? 'are' : 'is'} not listed in the builder's SHA256SUMS`;
  return undefined;
}

/** The digest a user checks a download against: image.raw's, else the first image's. */
function imageSha(received: readonly Received[]): string | null {
  return (
    (received.find((r) => r.name === 'image.raw') ?? received.find((r) => r.name.startsWith('image.')))?.sha256 ?? null
  );
}

/**
 * Verifies and signs one `verifying` build. A stream that breaks off (or the glue away) is thrown, with nothing
 * written: the caller tries again.
 */
export async function attestBuild(
  s: Deps,
  build: BuildRow,
  key: SigningKey,
  signal?: AbortSignal,
): Promise<AttestOutcome> {
  if (build.state !== 'verifying' || build.backend_build == null) return 'elsewhere';
  const log = s.logger.child({ build: build.id });
  const started = performance.now();
  // The builder's signature, if an older SDK still made one, is not ours to pass on.
  const names = build.artifacts.map((a) => a.name).filter((n) => n !== 'SHA256SUMS.sig') as ArtifactName[];
  const received: Received[] = [];
  let claimText: string | undefined;
  let claimTooBig = false;
  try {
    for (const name of names) {
      signal?.throwIfAborted();
      // One stream at a time: a verification takes one of the glue client's stream slots, never a call slot.
      const h = await hashStream(
        await s.glue.artifact(build.dockerfile_id, build.backend_build, name),
        name === 'SHA256SUMS' ? MAX_CLAIM_BYTES + 1 : 0,
      );
      received.push({ name, sha256: h.sha256, size: h.size });
      if (name === 'SHA256SUMS') {
        claimTooBig = h.size > MAX_CLAIM_BYTES;
        claimText = h.head.toString('utf8');
      }
    }
  } catch (e) {
    if (isKilnError(e, 'not_found')) return fail(s, build, received, 'an artifact is gone from the build service');
    throw e;
  }
  const problem = claimTooBig ? "the builder's SHA256SUMS is larger than 64 KiB" : claimProblem(claimText, received);
  if (problem) return fail(s, build, received, problem);

  const products = received.filter((r) => !RECORDS.has(r.name));
  const sums = formatSha256Sums(products);
  const hashed = performance.now();
  const signature = await key.sign(sums);
  const signed = performance.now();
  const own = (name: string, text: string): BuildArtifact => ({
    name,
    size: Buffer.byteLength(text),
    sha256: createHash('sha256').update(text).digest('hex'),
  });
  const artifacts: BuildArtifact[] = [
    ...received.filter((r) => r.name !== 'SHA256SUMS').map((r) => ({ name: r.name, size: r.size, sha256: r.sha256 })),
    own('SHA256SUMS', sums),
    own('SHA256SUMS.sig', signature),
  ];
  const done = await completeAttestation(s.db, build.id, {
    artifacts,
    imageSha256: imageSha(received),
    sums,
    signature,
    publicKey: key.publicKey,
  });
  if (done) await buildEnded(s.db, s, build.id);
  // Where a build's end goes between the backend and the user (bench/RESULTS-api.md): streaming and hashing scale
  // with the artifacts, signing and the commit do not.
  if (done)
    log.info(
      {
        files: products.length,
        bytes: received.reduce((n, r) => n + r.size, 0),
        hashMs: Math.round(hashed - started),
        signMs: Math.round(signed - hashed),
        commitMs: Math.round(performance.now() - signed),
      },
      'artifacts verified and signed',
    );
  return done ? 'succeeded' : 'elsewhere';
}

/** Claim and bytes disagree (or the bytes are gone): the build fails, and only its records stay downloadable. */
async function fail(s: Deps, build: BuildRow, received: readonly Received[], problem: string): Promise<AttestOutcome> {
  const kept = received
    .filter((r) => r.name === 'build.log' || r.name === 'result.json')
    .map((r) => ({ name: r.name, size: r.size, sha256: r.sha256 }));
  const reason = `The build's artifacts could not be verified: ${problem}.`;
  if (await updateBuild(s.db, build.id, ['verifying'], { state: 'failed', reason, artifacts: kept }))
    await buildEnded(s.db, s, build.id);
  s.logger.warn({ build: build.id, reason }, 'artifact verification failed');
  return 'failed';
}

/**
 * `build.attest`: verifies and signs one `verifying` build (one at a time per worker: it streams whole images). An
 * interrupted stream or an unreachable glue is thrown and retried with backoff; when that goes on for
 * worker.maxAttempts runs, the build fails with the reason instead of staying `verifying`.
 */
export const attestTask: TaskKind = {
  concurrency: 1,
  async run(d, { task, log, signal }) {
    const build = await buildOf(d, task.subject);
    if (build?.state !== 'verifying') return;
    const outcome = await attestBuild(d, build, await signingKey(d.config), signal);
    log.info({ build: build.id, outcome }, 'build verification ended');
  },
  async gaveUp(d, task, error) {
    const build = await buildOf(d, task.subject);
    if (
      build &&
      (await updateBuild(d.db, build.id, ['verifying'], {
        state: 'failed',
        reason: `The build's artifacts could not be verified: ${error}.`,
      }))
    )
      await buildEnded(d.db, d, build.id);
  },
};
