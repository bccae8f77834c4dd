import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const DF = 'FROM debian:bookworm\nCOPY big.bin /big.bin\n';
const MiB = 1024 * 1024;

/** A JSON Dockerfile creation carrying a build context of `bytes` bytes (base64 makes the body 4/3 of that). */
const createBody = (name: string, bytes: number): Buffer =>
  Buffer.from(
    JSON.stringify({
      name,
      content: DF,
      contextFiles: [{ name: 'big.bin', contentBase64: Buffer.alloc(bytes, 7).toString('base64') }],
    }),
  );

interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * Sends `body` exactly as asked: `chunked` leaves out Content-Length (Node then uses Transfer-Encoding: chunked),
 * written in 64 KiB pieces as a streaming client would.
 */
function send(
  w: TestWeb,
  c: HttpClient,
  token: string,
  body: Buffer,
  opts: { chunked?: boolean; headers?: Record<string, string>; path?: string } = {},
): Promise<RawAnswer> {
  const u = new URL(w.url);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      cookie: c.cookieHeader(),
      'content-type': 'application/json',
      'x-csrf-token': token,
      ...opts.headers,
    };
    if (!opts.chunked) headers['content-length'] = String(body.length);
    const req = http.request(
      { host: u.hostname, port: u.port, method: 'POST', path: opts.path ?? '/api/dockerfiles', headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
    req.end();
  });
}

describe('request bodies go through the upload gate whatever their framing', () => {
  let w: TestWeb;
  let c: HttpClient;
  let token: string;
  const stored = async (): Promise<number> => Number((await w.db('dockerfiles').count({ n: '*' }))[0]!.n);
  beforeAll(async () => {
    w = await startTestWeb();
    c = w.client();
    await c.signUp('alice');
    token = await c.apiToken();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('finding 6: a chunked JSON body (no Content-Length) over 1 MiB is refused with 413 as it streams; nothing stored', async () => {
    const before = await stored();
    const r = await send(w, c, token, createBody('chunked', 2 * MiB), { chunked: true });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.text).error.message).toMatch(/without a Content-Length/);
    expect(await stored()).toBe(before);
  });

  it('finding 6: a compressed body that inflates past 1 MiB is refused (a small declared length buys nothing)', async () => {
    const before = await stored();
    const gz = gzipSync(createBody('gzipped', 2 * MiB));
    expect(gz.length).toBeLessThan(64 * 1024);
    const r = await send(w, c, token, gz, { headers: { 'content-encoding': 'gzip' } });
    expect(r.status).toBe(413);
    expect(await stored()).toBe(before);
  });

  it('finding 6: small chunked bodies still work, on the API and on every other JSON route', async () => {
    expect((await send(w, c, token, createBody('small-chunked', 100 * 1024), { chunked: true })).status).toBe(201);
    const id = Number((await w.db('dockerfiles').where({ name: 'small-chunked' }).first()).id);
    const edit = await send(w, c, token, Buffer.from(JSON.stringify({ content: `${DF}RUN true\n` })), {
      chunked: true,
      path: `/api/dockerfiles/${id}`,
    });
    expect(edit.status).toBe(200);
    const big = await send(w, c, token, Buffer.from(JSON.stringify({ key: 'k'.repeat(2 * MiB) })), {
      chunked: true,
      path: `/api/dockerfiles/${id}/builds`,
    });
    expect(big.status).toBe(413);
  });

  it('finding 6: while four big bodies hold the gate, a fifth is refused with 429 (declared) or 413 (undeclared)', async () => {
    const u = new URL(w.url);
    const open: http.ClientRequest[] = [];
    for (let i = 0; i < 4; i++) {
      const req = http.request({
        host: u.hostname,
        port: u.port,
        method: 'POST',
        path: '/api/dockerfiles',
        headers: {
          cookie: c.cookieHeader(),
          'content-type': 'application/json',
          'x-csrf-token': token,
          'content-length': String(3 * MiB),
        },
      });
      req.on('error', () => undefined);
      req.write('{"name":');
      open.push(req);
    }
    try {
      // Wait until the four hold their slots: then a declared big body is turned away at once.
      let n = 0;
      const declared: RawAnswer = await until(
        async () => {
          const r = await send(w, c, token, createBody(`fifth${n++}`, 2 * MiB));
          return r.status === 429 && r;
        },
        60_000,
        50,
      );
      expect(declared.headers['retry-after']).toBe('5');
      expect((await send(w, c, token, createBody('fifth-chunked', 2 * MiB), { chunked: true })).status).toBe(413);
    } finally {
      for (const r of open) r.destroy();
    }
  });
});
