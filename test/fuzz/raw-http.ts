import net from 'node:net';

/**
 * One HTTP/1.1 request written byte for byte on its own connection, so a fuzzer can send what fetch refuses to:
 * a Content-Length that lies, chunked framing (also broken), any method, odd header values. Reads the answer's
 * status line and some of its body, then closes. `status` is undefined when the server answered nothing before
 * the connection ended or `timeoutMs` passed (counted apart: not a 5xx, not a success).
 */
export interface RawRequest {
  method: string;
  /** Request target as written on the request line (already percent-encoded as the fuzzer wants it). */
  target: string;
  headers: Array<[string, string]>;
  body?: Buffer;
  /** length: Content-Length = body size; chunked / chunked-broken; cl-short / cl-long: a Content-Length that lies. */
  framing: 'length' | 'chunked' | 'chunked-broken' | 'cl-short' | 'cl-long' | 'none';
}

export interface RawResponse {
  status?: number;
  head: string;
  body: string;
  error?: string;
  ms: number;
}

export function sendRaw(port: number, req: RawRequest, timeoutMs = 15_000): Promise<RawResponse> {
  const started = Date.now();
  const body = req.body ?? Buffer.alloc(0);
  const headers = [...req.headers, ['Connection', 'close']] as Array<[string, string]>;
  let payload: Buffer;
  switch (req.framing) {
    case 'length':
      headers.push(['Content-Length', String(body.length)]);
      payload = body;
      break;
    case 'cl-short':
      headers.push(['Content-Length', String(Math.floor(body.length / 2))]);
      payload = body;
      break;
    case 'cl-long':
      headers.push(['Content-Length', String(body.length + 1 + (body.length % 977))]);
      payload = body;
      break;
    case 'chunked':
    case 'chunked-broken': {
      headers.push(['Transfer-Encoding', 'chunked']);
      const parts: Buffer[] = [];
      for (let i = 0; i < body.length; i += 1000) {
        const c = body.subarray(i, i + 1000);
        parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
      }
      // Broken: a size line that is not hex, and no terminating chunk.
      parts.push(Buffer.from(req.framing === 'chunked' ? '0\r\n\r\n' : 'zz\r\nnot a chunk\r\n'));
      payload = Buffer.concat(parts);
      break;
    }
    case 'none':
      payload = body;
      break;
  }
  const head = `${req.method} ${req.target} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`;
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      // Interim answers (100 Continue to an Expect header) come first: the status is the first final one.
      let text = got.toString('latin1');
      let start = 0;
      let m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      while (m && m[1]!.startsWith('1') && text.indexOf('\r\n\r\n') >= 0) {
        start += text.indexOf('\r\n\r\n') + 4;
        text = text.slice(text.indexOf('\r\n\r\n') + 4);
        m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      }
      const end = text.indexOf('\r\n\r\n');
      resolve({
        status: m && !m[1]!.startsWith('1') ? Number(m[1]) : undefined,
        head: end >= 0 ? text.slice(0, end) : text.slice(0, 2000),
        body: end >= 0 ? got.subarray(start + end + 4, start + end + 4 + 4000).toString('utf8') : '',
        error,
        ms: Date.now() - started,
      });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    sock.on('data', (c: Buffer) => {
      if (got.length < 64 * 1024) got = Buffer.concat([got, c]);
    });
    sock.on('end', () => finish());
    sock.on('close', () => finish());
    sock.on('error', (e) => finish(e.message));
    sock.on('connect', () => {
      sock.write(head, 'latin1');
      if (payload.length) sock.write(payload);
      // A lying length or a broken chunk leaves the server waiting for bytes that never come: say we are done.
      if (req.framing === 'cl-long' || req.framing === 'chunked-broken') sock.end();
    });
  });
}
