import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import type Dockerode from 'dockerode';
import tarStream from 'tar-stream';
import { KilnError } from '../shared/errors.js';
import { followStream } from './docker-util.js';

/**
 * Proves, before a build, that the engine cannot fetch anything from this host (src/sdk/README.md, "The engine
 * guard"). The filtered build network holds for RUN steps, but a remote `ADD`, a missing `FROM` or `COPY --from`
 * image and ONBUILD triggers that do either are fetched by dockerd itself, from the host's own network stack; only
 * the guard that scripts/ensure-dockerd.sh installs (dockerd in a cgroup of its own, its sockets refused by iptables)
 * stops that. Checking its rules would tie the SDK to one way of guarding, so the check is what an attacker would
 * try: the engine is asked to `ADD` from a listener of ours on every address of this host, loopback included. The
 * guard holds when every attempt fails and the listener saw no connection. Any connection, or an attempt that fails
 * for a reason we cannot tell, refuses the build.
 */

const GUARD_HELP =
  'run scripts/ensure-dockerd.sh on the build host (or guard the engine as src/sdk/README.md "The engine guard" says), ' +
  'or set sdk.engineGuard=off where the engine is guarded in a way this host cannot see';

/** The addresses a guard-less engine would reach this host on: loopback (v4, v6) and every other address it has (v6 link-local aside: it needs a zone). */
export function hostProbeAddresses(): string[] {
  const out = ['127.0.0.1'];
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family === 'IPv6' && (a.address === '::1' || (!a.internal && !a.address.toLowerCase().startsWith('fe80:'))))
        out.push(`[${a.address}]`);
      else if (a.family === 'IPv4' && !a.internal) out.push(a.address);
    }
  }
  return [...new Set(out)];
}

function probeContext(url: string): NodeJS.ReadableStream {
  const pack = tarStream.pack();
  pack.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, `FROM scratch\nADD ${url} /probe\n`);
  pack.finalize();
  return pack as unknown as NodeJS.ReadableStream;
}

/** One probe build; resolves with how it ended. Never throws for the build's own failure. */
async function probe(
  docker: Dockerode,
  url: string,
  timeoutMs: number,
): Promise<'refused' | 'succeeded' | 'timed out' | `unclear: ${string}`> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const stream = await docker.buildImage(probeContext(url), {
      dockerfile: 'Dockerfile',
      networkmode: 'none',
      pull: false,
      nocache: true,
      rm: true,
      forcerm: true,
      abortSignal: ac.signal,
    } as Dockerode.ImageBuildOptions);
    await followStream(docker, stream, () => undefined, 'The engine guard probe');
    return 'succeeded';
  } catch (e) {
    if (ac.signal.aborted) return 'timed out';
    const msg = (e as Error).message;
    // The engine names the URL it could not fetch: proof the ADD was tried, not that the build broke earlier.
    return msg.includes(new URL(url).pathname) ? 'refused' : `unclear: ${msg.slice(0, 300)}`;
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with a line for the build log when the guard holds; throws backend_unavailable when it does not. */
export async function verifyEngineGuard(
  docker: Dockerode,
  opts: { addresses?: string[]; timeoutMs?: number } = {},
): Promise<string> {
  const addresses = opts.addresses ?? hostProbeAddresses();
  const connections: string[] = [];
  const server = net.createServer((s) => {
    connections.push(String(s.remoteAddress));
    s.destroy();
  });
  const dualStack = await new Promise<boolean>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      e.code === 'EAFNOSUPPORT' || e.code === 'EADDRNOTAVAIL' ? resolve(false) : reject(e),
    );
    server.listen({ port: 0, host: '::' }, () => resolve(true));
  });
  if (!dualStack) await new Promise<void>((resolve) => server.listen({ port: 0, host: '0.0.0.0' }, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const nonce = randomBytes(8).toString('hex');
  try {
    const targets = addresses.filter((a) => dualStack || !a.startsWith('['));
    const outcomes = await Promise.all(
      targets.map((a) => probe(docker, `http://${a}:${port}/kiln-engine-guard-${nonce}`, opts.timeoutMs ?? 60_000)),
    );
    if (connections.length) {
      throw new KilnError(
        'backend_unavailable',
        `The Docker engine is not guarded: asked to ADD from this host, it connected (from ${[...new Set(connections)].join(', ')}), ` +
          `so a Dockerfile could make it fetch from this host, its network or a registry. Kiln does not build on such an engine: ${GUARD_HELP}`,
      );
    }
    const unclear = targets
      .map((a, i) => ({ a, o: outcomes[i]! }))
      .filter((x) => x.o !== 'refused' && x.o !== 'timed out');
    if (unclear.length) {
      throw new KilnError(
        'backend_unavailable',
        `Could not verify the engine guard (the probe of ${unclear.map((x) => `${x.a}: ${x.o}`).join('; ')}): ${GUARD_HELP}`,
      );
    }
    return `engine guard: the engine cannot fetch from this host (probed ${targets.join(', ')}: refused, no connection)`;
  } finally {
    await new Promise((r) => server.close(r));
  }
}
