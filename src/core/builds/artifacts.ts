/**
 * What a user reads of a build through the glue: its log (by offset, cleaned) and its artifacts (streamed, with
 * Range), plus the web's own signed SHA256SUMS from the database. Reads only: nothing here changes a build.
 */
import { Readable, Transform } from 'node:stream';
import { findAttestation, isFinal, type BuildRow } from '../../db/index.js';
import { ARTIFACT_NAMES, type ArtifactName, type LogChunk } from '../../protocol/index.js';
import { KilnError, notFound } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { buildFor } from './access.js';
import { parsePosition, positionOf, readFrom, RESTART_LINE } from './log-position.js';
import { completeLines, plainLine, splitMachineLines } from './log-view.js';

/**
 * The human log by position (the JSON API; log-position.ts): complete lines only (a partial last line comes with the
 * next read, at the returned `nextOffset`), without the SDK's machine lines, escapes and control characters. A
 * position from an attempt the backend lost reads the new attempt's log from its start, after a line saying so.
 */
export async function readLog(
  s: Pick<CoreDeps, 'db' | 'glue'>,
  actor: Actor,
  rawId: unknown,
  rawOffset: unknown,
): Promise<LogChunk> {
  const b = await buildFor(s.db, actor, rawId);
  const asked = parsePosition(rawOffset);
  if (b.backend_build == null) {
    const at = positionOf(asked.attempt, asked.offset);
    return { text: '', offset: at, nextOffset: at, more: !isFinal(b.state) };
  }
  const from = readFrom(asked, b.requeues);
  const chunk = await s.glue.call('build.log', [b.dockerfile_id, b.backend_build, from.offset]);
  const cut = completeLines(chunk);
  const { human } = splitMachineLines(cut.lines);
  const text = (from.restarted ? [RESTART_LINE] : [])
    .concat(human.map(plainLine))
    .map((l) => `${l}\n`)
    .join('');
  return {
    text,
    offset: positionOf(b.requeues, cut.start),
    nextOffset: positionOf(b.requeues, cut.next),
    more: chunk.more || cut.next < chunk.nextOffset,
  };
}

export interface ArtifactDownload {
  stream: Readable;
  filename: string;
  size: number;
  /** Set for a range answer (206). */
  range?: { start: number; end: number };
}

/**
 * Opens an artifact of a build the actor may see. The name must be one of the protocol's artifact names and
 * listed on the build; the bytes come from the glue (never from a path the web computes).
 */
export async function openArtifact(
  s: Pick<CoreDeps, 'db' | 'glue'>,
  actor: Actor,
  rawId: unknown,
  rawName: unknown,
  rangeHeader?: string,
): Promise<ArtifactDownload> {
  const b = await buildFor(s.db, actor, rawId);
  if (typeof rawName !== 'string' || !(ARTIFACT_NAMES as readonly string[]).includes(rawName))
    throw notFound('No such artifact');
  const name = rawName as ArtifactName;
  const art = b.artifacts.find((a) => a.name === name);
  if (!art || b.backend_build == null) throw notFound('No such artifact');
  if (b.artifacts_expired_at) throw expired(b);
  const own = await signedDocument(s, b, name);
  const size = own?.length ?? art.size;
  const backendBuild = b.backend_build;
  return download(`kiln-${b.id}-${name}`, size, rangeHeader, async (start) =>
    own ? Readable.from([own.subarray(start)]) : s.glue.artifact(b.dockerfile_id, backendBuild, name, start),
  );
}

/** What a download of an expired build's artifact answers: they are gone, and why. */
export const expired = (b: Pick<BuildRow, 'id' | 'artifacts_expired_at'>): KilnError =>
  new KilnError(
    'not_found',
    `The artifacts of build ${b.id} expired on ${b.artifacts_expired_at?.slice(0, 10)}: retention discarded them. Pin a build to keep it, or promote it to a release.`,
  );

/**
 * A download of `size` bytes under a server-made `filename`, honouring a `bytes=N-[M]` Range (206), else whole:
 * `open(start)` gives the bytes from `start` on. A range outside the file is 416.
 */
export async function download(
  filename: string,
  size: number,
  rangeHeader: string | undefined,
  open: (start: number) => Promise<Readable>,
): Promise<ArtifactDownload> {
  let start = 0;
  let end = size - 1;
  let ranged = false;
  if (rangeHeader) {
    const m = /^bytes=(\d{1,15})-(\d{0,15})$/.exec(rangeHeader.trim());
    if (m) {
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), size - 1);
      if (start >= size || start > end)
        throw new KilnError('bad_request', 'Range not satisfiable', { detail: { status: 416, size } });
      ranged = true;
    }
  }
  const src = await open(start);
  const stream = ranged ? src.pipe(limitBytes(end - start + 1, () => src.destroy())) : src;
  if (ranged) src.on('error', (e) => stream.destroy(e));
  return { stream, filename, size, ...(ranged ? { range: { start, end } } : {}) };
}

/**
 * SHA256SUMS and its signature are the web's own (attest.ts), served from the database once the build is verified;
 * the builder's are never served. Undefined for every other artifact (its bytes come from the glue).
 */
async function signedDocument(s: Pick<CoreDeps, 'db'>, b: BuildRow, name: ArtifactName): Promise<Buffer | undefined> {
  if (name !== 'SHA256SUMS' && name !== 'SHA256SUMS.sig') return undefined;
  const att = b.state === 'succeeded' ? await findAttestation(s.db, b.id) : undefined;
  if (!att) throw notFound('No such artifact');
  return Buffer.from(name === 'SHA256SUMS' ? att.sums : att.signature, 'utf8');
}

function limitBytes(n: number, onDone: () => void): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left <= 0) return cb();
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      left -= part.length;
      this.push(part);
      if (left <= 0) {
        this.push(null);
        onDone();
      }
      cb();
    },
  });
}
