import { mkdirSync, lstatSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { KilnError } from '../../shared/errors.js';

// Node built-ins only: `kiln glue serve` takes its lock through this module before it loads the app, so that forwarders
// arriving while it starts see the lock held and start no second resident.

/**
 * Makes sure the socket's directory is the glue user's alone: created 0700 when missing; an existing one must be a
 * real directory (not a symlink) owned by this user with no group or other bits. connect(2) needs search permission
 * on it, so that is what keeps every other user (root apart) away from the resident: Node cannot read SO_PEERCRED,
 * so the resident's side of the peer check is the kernel's permission check on this directory. The forwarder checks
 * the same things, and the resident's uid with SO_PEERCRED.
 */
export function ensureSocketDir(socketPath: string): string {
  const dir = path.dirname(socketPath);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const why = socketDirProblem(dir);
  if (why) throw new KilnError('invalid_input', `${why}: ${dir} (chmod 700, owned by the glue's user)`);
  return dir;
}

export function socketDirProblem(dir: string): string | undefined {
  const st = lstatSync(dir);
  if (!st.isDirectory()) return 'the socket directory is not a directory';
  if (st.uid !== process.getuid!()) return "the socket directory is not the glue user's";
  if (st.mode & 0o077) return 'the socket directory is open to other users';
  return undefined;
}

/**
 * One resident per socket directory: an abstract Unix socket named after the directory's device and inode (the
 * name bin/kiln-glue-forward probes before it starts one; Node pads it with NULs to the whole sun_path, and so must
 * the probe). The kernel frees it when its holder exits, so a dead
 * resident never blocks the next. Undefined when another process holds it.
 */
export function takeResidentLock(dir: string): Promise<net.Server | undefined> {
  const st = statSync(dir);
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(undefined) : reject(e)));
    srv.listen({ path: `\0kiln-glue-resident-${st.dev}-${st.ino}` }, () => resolve(srv));
  });
}

/** Where the resident writes its pid (next to its socket), for an operator or a test to signal it. */
export const pidFileOf = (socketPath: string) => path.join(path.dirname(socketPath), 'glue.pid');

/**
 * What a request's answer may depend on besides the request: the settings (KILN_*, with the identity of every
 * *_FILE they name), Node's own variables, DOCKER_SOCKET, the working directory relative paths resolve against, and
 * the installed code (the identity of its entry script). The forwarder computes the same text from its environment
 * (bin/kiln-glue-forward, `settings`); a resident whose text differs does not serve the request, so an edited
 * wrapper, a rotated secret file or an upgrade never meets an old resident.
 */
export function residentSettings(env: NodeJS.ProcessEnv, cwd: string, entry: string): Buffer {
  const names = Object.keys(env)
    .filter((k) => (/^(KILN_|NODE_)/.test(k) || k === 'DOCKER_SOCKET') && k !== FALLBACK_VAR)
    .sort();
  let out = `cwd=${cwd}\0entry=${identity(entry)}\0`;
  for (const k of names) {
    out += `${k}=${env[k]}\0`;
    if (k.endsWith('_FILE')) out += `${k}:file=${identity(env[k]!)}\0`;
  }
  return Buffer.from(out);
}

/** The forwarder's reason for running a request in-process, for that request's audit line. */
export const FALLBACK_VAR = 'KILN_GLUE_FORWARD_FALLBACK';

function identity(file: string): string {
  try {
    const st = statSync(file, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs / 1_000_000_000n}`;
  } catch {
    return '-';
  }
}
