import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { tempDir } from './tmp.js';

/**
 * A real HTTP proxy (CONNECT for HTTPS, absolute-URI requests for HTTP) that asks for Basic credentials and records
 * every request, reachable from Kiln's filtered build network. RUN steps may not reach this host, so the proxy
 * answers on an address of a network namespace of its own (198.51.100.0/24, TEST-NET-2, which the build network
 * treats as the internet): a relay in the namespace hands each connection over a unix socket to the proxy here,
 * whose upstream connections leave from this host like any other (through the machine's intercepting proxy).
 * The host's route to it has scope global, so the build network does not count it as this host's LAN. Needs root.
 */
export interface NetnsProxy {
  /** http://user:password@address:port */
  url: string;
  host: string;
  port: number;
  user: string;
  password: string;
  /** `CONNECT host:port` or `GET http://...`, with whether the right credentials came along. */
  seen: { method: string; target: string; authorized: boolean }[];
  close(): Promise<void>;
}

const RELAY = `
const net = require('node:net');
const [host, port, sock] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.pipe(u); u.pipe(c);
  u.on('error', () => c.destroy()); c.on('error', () => u.destroy());
}).listen(Number(port), host, () => console.log('relay up'));
`;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

export async function startNetnsProxy(): Promise<NetnsProxy> {
  const t = tempDir('kiln-test-proxy-');
  const sock = path.join(t.dir, 'proxy.sock');
  const tag = randomBytes(3).toString('hex');
  const ns = `kiln-t-proxy-${tag}`;
  const hostIf = `kph${tag}`;
  const nsIf = `kpn${tag}`;
  const block = randomInt(1, 63) * 4;
  const hostAddr = `198.51.100.${block + 1}`;
  const addr = `198.51.100.${block + 2}`;
  const port = 3128;
  const user = 'kiln-tester';
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const seen: NetnsProxy['seen'] = [];

  const server = http.createServer((req, res) => {
    const authorized = req.headers['proxy-authorization'] === expected;
    seen.push({ method: req.method ?? '', target: req.url ?? '', authorized });
    if (!authorized) {
      res.writeHead(407, { 'Proxy-Authenticate': 'Basic realm="kiln-test"' }).end();
      return;
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = http.request(
      { host: url.hostname, port: url.port || 80, path: url.pathname + url.search, method: req.method, headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const authorized = req.headers['proxy-authorization'] === expected;
    seen.push({ method: 'CONNECT', target: req.url ?? '', authorized });
    if (!authorized) {
      client.end(
        'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="kiln-test"\r\nContent-Length: 0\r\n\r\n',
      );
      return;
    }
    const m = /^([^:]+):(\d+)$/.exec(req.url ?? '');
    if (!m) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const up = net.connect(Number(m[2]), m[1], () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(sock, resolve));

  let relay: ChildProcess | undefined;
  const teardown = () => {
    relay?.kill('SIGKILL');
    spawnSync('ip', ['link', 'delete', hostIf]);
    spawnSync('ip', ['netns', 'delete', ns]);
  };
  try {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostAddr}/32`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'global');
    for (const a of [
      ['addr', 'add', `${addr}/32`, 'dev', nsIf],
      ['link', 'set', nsIf, 'up'],
      ['link', 'set', 'lo', 'up'],
      ['route', 'add', `${hostAddr}/32`, 'dev', nsIf],
      ['route', 'add', 'default', 'via', hostAddr, 'dev', nsIf, 'onlink'],
    ]) {
      ip('netns', 'exec', ns, 'ip', ...a);
    }
    const r = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', RELAY, addr, String(port), sock], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    relay = r;
    await new Promise<void>((resolve, reject) => {
      r.once('exit', (code) => reject(new Error(`the proxy relay exited (${code})`)));
      r.stdout!.on('data', (c: Buffer) => {
        if (c.toString().includes('relay up')) resolve();
      });
    });
  } catch (e) {
    teardown();
    server.close();
    t.cleanup();
    throw e;
  }
  return {
    url: `http://${user}:${password}@${addr}:${port}`,
    host: addr,
    port,
    user,
    password,
    seen,
    close: async () => {
      teardown();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      t.cleanup();
    },
  };
}
