import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

/** A request with exactly the Host header given (fetch would send the URL's). */
function withHost(
  w: TestWeb,
  host: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; text: string; setCookie: string[] }> {
  const u = new URL(w.url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        method: opts.method ?? 'GET',
        path: opts.path ?? '/login',
        headers: { host, ...opts.headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, setCookie: res.headers['set-cookie'] ?? [] }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('Host allow-list (DNS rebinding), no public URL set', () => {
  let w: TestWeb;
  let port: string;
  beforeAll(async () => {
    w = await startTestWeb();
    port = new URL(w.url).port;
    await w.client().register('alice', 'correct horse battery staple');
  });
  afterAll(async () => {
    await w?.close();
  });

  it('finding 9: a foreign Host is refused with 421 on every kind of request, before any session or body', async () => {
    for (const host of [
      `evil.example:${port}`,
      'evil.example',
      `localhost:${Number(port) + 1}`,
      `127.0.0.1.nip.io:${port}`,
      `localhost.:${port}`,
    ]) {
      for (const path of ['/login', '/', '/static/kiln.css', '/api/me', '/nonexistent']) {
        const r = await withHost(w, host, { path });
        expect(r.status, `${host} ${path}`).toBe(421);
        expect(r.text, `${host} ${path}`).toMatch(/does not answer to that host name/);
        expect(r.setCookie, `${host} ${path}`).toEqual([]);
      }
    }
    // The rebinding attacker's page posts with its own origin, which used to match an origin derived from Host.
    const body = JSON.stringify({ username: 'alice', password: 'correct horse battery staple' });
    const post = await withHost(w, `evil.example:${port}`, {
      method: 'POST',
      path: '/api/login',
      body,
      headers: {
        'content-type': 'application/json',
        origin: `http://evil.example:${port}`,
        'content-length': String(Buffer.byteLength(body)),
      },
    });
    expect(post.status).toBe(421);
    expect(JSON.parse(post.text).error.code).toBe('bad_request');
    expect(
      await w
        .db('sessions')
        .count({ n: '*' })
        .then((r) => Number(r[0]!.n)),
    ).toBe(1); // only the registration's
  });

  it('finding 9: a request without any Host (HTTP/1.0) is refused too', async () => {
    const u = new URL(w.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect(Number(u.port), u.hostname, () => s.end('GET /login HTTP/1.0\r\n\r\n'));
      let data = '';
      s.on('data', (d) => {
        data += d.toString('utf8');
      });
      s.on('end', () => resolve(data));
      s.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.[01] 421 /);
  });

  it('finding 9: loopback names with the port it listens on are served', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
      expect((await withHost(w, host)).status, host).toBe(200);
    }
  });
});

describe('Host allow-list with a public URL', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { publicUrl: 'https://kiln.example', trustProxyHops: 1 } } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it("finding 9: the public URL's host and loopback are served; any other name is refused", async () => {
    const port = new URL(w.url).port;
    expect((await withHost(w, 'kiln.example', { headers: { 'x-forwarded-proto': 'https' } })).status).toBe(200);
    expect((await withHost(w, `127.0.0.1:${port}`)).status).toBe(200);
    for (const host of ['evil.example', 'kiln.example.evil.example', 'kiln.example:8443', `evil.example:${port}`]) {
      expect((await withHost(w, host)).status, host).toBe(421);
    }
  });
});
