import type { Readable } from 'node:stream';
import { KilnError } from './errors.js';

/**
 * Collects a stream into one buffer, refusing more than `max` bytes (and pausing the stream when it does), and
 * giving up after `timeoutMs` without the end of the body (a client that never sends EOF does not hold a session).
 */
export function readCapped(stream: Readable, max: number, timeoutMs?: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    let done = false;
    const timer = timeoutMs
      ? setTimeout(
          () => finish(() => reject(new KilnError('timeout', 'the request body did not arrive in time'))),
          timeoutMs,
        )
      : undefined;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off('data', onData);
      fn();
    };
    const onData = (c: Buffer | string) => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      len += b.length;
      if (len > max) {
        finish(() => reject(new KilnError('too_large', `request body larger than ${max} bytes`)));
        stream.pause();
        return;
      }
      chunks.push(b);
    };
    stream.on('data', onData);
    stream.once('end', () => finish(() => resolve(Buffer.concat(chunks))));
    stream.once('error', (e) =>
      finish(() => reject(new KilnError('bad_request', 'could not read the request body', { cause: e }))),
    );
  });
}
