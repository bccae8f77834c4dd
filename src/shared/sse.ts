/**
 * A Server-Sent Events reader over a fetch body: what EventSource parses, minus its reconnecting (the caller decides
 * when and from where to reconnect). An event is yielded only once its blank line has arrived, so a connection cut
 * in the middle of an event yields nothing of it: the caller resumes from the last whole event's id.
 */
export interface SseEvent {
  event: string;
  id?: string;
  data: string;
}

export async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let ev: SseEvent = { event: 'message', data: '' };
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (hasData) yield ev;
          ev = { event: 'message', data: '' };
          hasData = false;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') ev.event = value;
        else if (field === 'id') ev.id = value;
        else if (field === 'data') {
          ev.data = hasData ? `${ev.data}\n${value}` : value;
          hasData = true;
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}
