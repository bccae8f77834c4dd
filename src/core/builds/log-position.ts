/**
 * A position in a build's log as clients hold it (an SSE event's id, Last-Event-ID, the JSON log's `offset` and
 * `nextOffset`): the byte offset into the log of the build's current attempt, with the attempt (its `requeues`) in
 * the bits from 2^44 up. A requeued build runs again from the start under a new backend build, so an offset read
 * from the lost attempt means nothing in the new log: a position of an earlier attempt is recognised and the new
 * attempt's log is read from its first byte, instead of from the middle. Attempt 0's positions are plain offsets,
 * and every position stays a number under 2^53, at most 15 digits.
 */
/** 16 TiB: far past any log the glue keeps (its logs are capped far lower). */
const ATTEMPT_UNIT = 2 ** 44;

export interface LogPosition {
  attempt: number;
  offset: number;
}

/** A position as a client sent it (Last-Event-ID, `from`, `offset`); anything else is the start. */
export function parsePosition(raw: unknown): LogPosition {
  const n = typeof raw === 'string' && /^(0|[1-9][0-9]{0,14})$/.test(raw) ? Number(raw) : 0;
  return { attempt: Math.floor(n / ATTEMPT_UNIT), offset: n % ATTEMPT_UNIT };
}

export const positionOf = (attempt: number, offset: number): number => attempt * ATTEMPT_UNIT + offset;

/** The line a reader gets when what it read so far belongs to an attempt the backend lost. */
export const RESTART_LINE =
  'Kiln: the build service lost this build, and it was dispatched again: its log starts over from here.';

/**
 * Where to read in the log of a build now on attempt `requeues`: the offset, and whether the reader had read some
 * of an earlier attempt's log (it is told, once, that the log starts over).
 */
export function readFrom(p: LogPosition, requeues: number): { offset: number; restarted: boolean } {
  if (p.attempt === requeues) return { offset: p.offset, restarted: false };
  return { offset: 0, restarted: p.attempt < requeues && (p.offset > 0 || p.attempt > 0) };
}
