/**
 * Waiting for a build: with its log (the Server-Sent Events of GET /builds/{id}/events) or without (the long poll
 * GET /builds/{id}?wait=). The log is followed by byte offset: each `log` event's id is the offset after its lines,
 * an event counts only once it has arrived whole, and a reconnect sends Last-Event-ID, so a dropped connection
 * neither loses nor repeats a line. Reconnects back off (250 ms doubling to 10 s) and give up once nothing has
 * moved for the retry time. When the user's live streams are all taken (429), the log is read by offset from
 * GET /builds/{id}/log with the same offsets, between long polls, and the stream is tried again later.
 */
import { EXIT } from '../../shared/exit-status.js';
import { sseEvents } from '../../shared/sse.js';
import {
  ClientError,
  TransientError,
  networkReason,
  stallGuard,
  type Build,
  type KilnApi,
  type LogChunk,
} from './api.js';

export interface Output {
  /** Log text (whole lines). */
  log: (text: string) => void;
  /** A line about the build for people (stderr). */
  note: (message: string) => void;
}

/** After a 429 on the stream, read the log by offset this long before trying the stream again. */
const BUSY_POLL_MS = 30_000;

interface FollowState {
  offset: number;
  state: string;
  pollUntil: number;
}

function noteState(b: Pick<Build, 'id' | 'state' | 'final' | 'queue'>, st: FollowState, out: Output): void {
  if (b.state === st.state) return;
  st.state = b.state;
  // How it ended is said once, by the command, with what failed and where.
  if (b.final) return;
  const place = b.queue ? ` (${b.queue.position} of ${b.queue.waiting} waiting)` : '';
  out.note(`build ${b.id} is ${b.state}${place}`);
}

/** Waits for build `id` to be finished without reading its log: one long poll at a time. */
export async function waitQuietly(api: KilnApi, id: number, out: Output): Promise<Build> {
  const st: FollowState = { offset: 0, state: '', pollUntil: 0 };
  let b = await api.build(id);
  noteState(b, st, out);
  while (!b.final) {
    b = await api.build(id, { seconds: 60, seen: b.state });
    noteState(b, st, out);
  }
  return b;
}

/** Follows build `id`'s log from byte `from` until the build is finished; returns it as it ended. */
export async function followLog(api: KilnApi, id: number, out: Output, from = 0): Promise<Build> {
  const st: FollowState = { offset: from, state: '', pollUntil: 0 };
  return api.retrying(
    async () => {
      for (;;) {
        const done = Date.now() < st.pollUntil ? await pollOnce(api, id, out, st) : await streamOnce(api, id, out, st);
        if (done) return done;
      }
    },
    { progress: () => `${st.offset} ${st.state}` },
  );
}

/** One connection to the event stream: the build once it ended, undefined when the stream is busy (429). */
async function streamOnce(api: KilnApi, id: number, out: Output, st: FollowState): Promise<Build | undefined> {
  const guard = stallGuard();
  try {
    let res: Response;
    try {
      res = await api.attempt(`/builds/${id}/events`, {
        headers: { accept: 'text/event-stream', ...(st.offset ? { 'last-event-id': String(st.offset) } : {}) },
        timeoutMs: 0,
        signal: guard.signal,
      });
    } catch (e) {
      if (!(e instanceof TransientError) || e.o.status !== 429) throw e;
      st.pollUntil = Date.now() + BUSY_POLL_MS;
      out.note('every live stream of this user is taken: reading the log by polling for a while');
      return undefined;
    }
    const body = res.body!.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          guard.touch();
          ctl.enqueue(chunk);
        },
      }),
    );
    try {
      for await (const ev of sseEvents(body)) {
        if (ev.event === 'log') {
          const { lines } = JSON.parse(ev.data) as { lines: string[] };
          if (lines.length) out.log(lines.map((l) => `${l}\n`).join(''));
          if (ev.id && /^[0-9]{1,15}$/.test(ev.id)) st.offset = Number(ev.id);
        } else if (ev.event === 'build') noteState(JSON.parse(ev.data) as Build, st, out);
        else if (ev.event === 'end') return await api.build(id);
      }
    } catch (e) {
      if (e instanceof ClientError) throw e;
      if ((e as Error).name === 'SyntaxError')
        throw new ClientError(EXIT.unavailable, `Kiln sent a malformed event for build ${id}`);
      throw new TransientError(`the log stream of build ${id} was cut: ${networkReason(e)}`);
    }
    throw new TransientError(`the log stream of build ${id} ended before the build did`);
  } finally {
    guard.stop();
  }
}

/** Reads the log by offset to its current end, then long-polls the state a little: the build once it ended. */
async function pollOnce(api: KilnApi, id: number, out: Output, st: FollowState): Promise<Build | undefined> {
  const drain = async () => {
    for (;;) {
      const chunk = await api.json<LogChunk>(`/builds/${id}/log?offset=${st.offset}`);
      if (chunk.text) out.log(chunk.text);
      if (chunk.nextOffset === st.offset || !chunk.more) {
        st.offset = chunk.nextOffset;
        return;
      }
      st.offset = chunk.nextOffset;
    }
  };
  await drain();
  const b = await api.build(id, { seconds: 5, ...(st.state ? { seen: st.state } : {}) });
  noteState(b, st, out);
  if (!b.final) return undefined;
  // Its last lines may have come after the read above: a finished build's log is complete, read it to the end.
  await drain();
  return b;
}
