import net from 'node:net';
import type ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import type { Logger } from './logger.js';

export interface SshListenerOptions {
  host: string;
  port: number;
  /** TCP connections at once, authenticated or not; more are closed at once. */
  maxConnections: number;
  /** A connection that has not authenticated within this time is destroyed. */
  handshakeMs: number;
  /** Unauthenticated connections at once from one address (default: maxConnections). */
  maxUnauthenticatedPerAddress?: number;
  logger: Logger;
  /** For log lines: which SSH server this is (`ssh`, `ssh door`). */
  label: string;
}

export interface SshListener {
  port: number;
  /** Stops listening, ends authenticated connections, destroys the others. */
  close(): Promise<void>;
}

/**
 * Puts an ssh2 Server behind our own TCP listener (ssh2's public `injectSocket`). ssh2 reports a connection only
 * once the peer has sent its SSH banner, so a peer that sends nothing would hold a slot forever; here every TCP
 * connection counts against the cap from its first byte and is destroyed if it has not authenticated in time
 * (its `ready`). Both SSH servers of Kiln (the glue's and the users' door) listen through this.
 */
export async function listenForSsh(server: ssh2.Server, o: SshListenerOptions): Promise<SshListener> {
  const { logger } = o;
  const perAddress = o.maxUnauthenticatedPerAddress ?? o.maxConnections;
  const clients = new Set<Connection>();
  /** Handshake deadline per TCP peer (`ip:port`), cleared once that peer authenticates. */
  const deadlines = new Map<string, NodeJS.Timeout>();
  const raw = new Map<string, net.Socket>();
  /** Unauthenticated connections per address. */
  const pending = new Map<string, number>();
  const settle = (key: string, address: string) => {
    const t = deadlines.get(key);
    if (!t) return;
    clearTimeout(t);
    deadlines.delete(key);
    const n = (pending.get(address) ?? 1) - 1;
    if (n > 0) pending.set(address, n);
    else pending.delete(address);
  };

  server.on('connection', (client: Connection, info: { ip: string; port: number }) => {
    clients.add(client);
    client.once('ready', () => settle(`${info.ip}:${info.port}`, info.ip));
    client.once('close', () => clients.delete(client));
  });

  const tcp = net.createServer((sock) => {
    const address = sock.remoteAddress ?? '';
    if (raw.size >= o.maxConnections || (pending.get(address) ?? 0) >= perAddress) {
      sock.destroy();
      return;
    }
    const key = `${address}:${sock.remotePort}`;
    // Requests are a few small packets each way: without TCP_NODELAY, Nagle + delayed ACKs add ~40 ms per step.
    sock.setNoDelay(true);
    pending.set(address, (pending.get(address) ?? 0) + 1);
    deadlines.set(
      key,
      setTimeout(() => {
        logger.warn({ peer: key }, `${o.label}: no authentication in time, dropping the connection`);
        sock.destroy();
      }, o.handshakeMs),
    );
    raw.set(key, sock);
    sock.once('close', () => {
      raw.delete(key);
      settle(key, address);
    });
    sock.on('error', () => undefined);
    server.injectSocket(sock);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(o.port, o.host, () => {
      tcp.off('error', reject);
      resolve();
    });
  });
  tcp.on('error', (e: Error) => logger.error({ err: e }, `${o.label}: server error`));
  server.on('error', (e: Error) => logger.error({ err: e }, `${o.label}: server error`));
  return {
    port: (tcp.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        tcp.close(() => resolve());
        for (const c of clients) c.end();
        // Not yet authenticated: nothing to say goodbye to.
        for (const key of [...deadlines.keys()]) raw.get(key)?.destroy();
      }),
  };
}
