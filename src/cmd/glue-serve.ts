/**
 * `kiln glue serve [--socket PATH] [--on-demand]`: the resident glue (src/glue/README.md "The resident glue"). It
 * listens on the Unix socket (`--socket`, else KILN_GLUE_SOCKET) until SIGTERM or SIGINT, serving the requests
 * bin/kiln-glue-forward hands it with the dispatcher and backend `kiln glue` would build per request. `--on-demand`
 * (how the forwarder starts it): it also stops after `glue.residentIdleSeconds` without a request, and when a
 * request comes with other settings. Exit 0 when another resident already serves the socket.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Backend } from '../glue/backends/types.js';
import { ensureSocketDir, takeResidentLock } from '../glue/resident/place.js';
import type { Logger } from '../shared/logger.js';

export async function serve(argv: string[]): Promise<number> {
  let opts: { socket?: string; 'on-demand'?: boolean };
  try {
    opts = parseArgs({
      args: argv,
      options: { socket: { type: 'string' }, 'on-demand': { type: 'boolean' } },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`kiln glue serve: ${(e as Error).message}\n`);
    return 2;
  }
  // Read before the config is loaded: the lock comes first, so forwarders that arrive meanwhile start no second one.
  // The config below checks the same value.
  const socketPath = opts.socket ?? process.env.KILN_GLUE_SOCKET;
  if (!socketPath || !path.isAbsolute(socketPath)) {
    process.stderr.write('kiln glue serve: give --socket PATH or KILN_GLUE_SOCKET (an absolute path)\n');
    return 2;
  }
  let lock;
  try {
    lock = await takeResidentLock(ensureSocketDir(socketPath));
  } catch (e) {
    process.stderr.write(`kiln glue serve: ${(e as Error).message}\n`);
    return 2;
  }
  if (!lock) {
    process.stderr.write(`kiln glue serve: another resident glue serves ${socketPath}\n`);
    return 0;
  }

  const [{ loadConfig }, { auditLogger }, { createBackend }, { createGlue }, { startResident }, place] =
    await Promise.all([
      import('../config/index.js'),
      import('./glue-request.js'),
      import('../glue/backend.js'),
      import('../glue/dispatch.js'),
      import('../glue/resident/server.js'),
      import('../glue/resident/place.js'),
    ]);
  let cfg;
  try {
    cfg = loadConfig(process.env, opts.socket ? { glue: { socket: opts.socket } } : {});
  } catch (e) {
    process.stderr.write(`kiln glue serve: ${(e as Error).message}\n`);
    return 2;
  }
  const logger = auditLogger(cfg).child({ resident: true });
  const backend = await createBackend(cfg, logger, { runner: false });
  const resident = await startResident({
    glue: createGlue({ backend: await startedPerRequest(backend, logger), logger }),
    logger,
    socketPath,
    settings: place.residentSettings(process.env, process.cwd(), process.argv[1] ?? ''),
    idleMs: opts['on-demand'] ? cfg.glue.residentIdleSeconds * 1000 : undefined,
    lock,
  });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => void resident.stop(sig));
  await resident.stopped;
  await backend.close().catch(() => undefined);
  logger.flush?.();
  // Stopped means gone: a keep-alive connection to Jenkins or the like must not keep a process that serves nothing.
  setTimeout(() => process.exit(0), 5000).unref();
  return 0;
}

/**
 * The backend, started now, or else before each request until a start succeeds: `kiln glue` in-process starts it
 * for every request, so a Jenkins the glue refuses (too old, an administrator's token) is refused request by request
 * until the operator fixes it, and then works. A resident that exited instead would be started again by every
 * forwarder, only to exit.
 */
async function startedPerRequest(backend: Backend, logger: Logger): Promise<Backend> {
  try {
    await backend.start();
    return backend;
  } catch (e) {
    logger.error({ err: e }, 'resident glue: the backend did not start; trying again at each request');
  }
  let started: Promise<void> | undefined;
  const ensure = () => (started ??= backend.start().catch((e: unknown) => ((started = undefined), Promise.reject(e))));
  return new Proxy(backend, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof value !== 'function' || key === 'start' || key === 'close') return value;
      return async (...args: unknown[]) => {
        await ensure();
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}
