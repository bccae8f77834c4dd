import path from 'node:path';
import { KilnError } from '../../shared/errors.js';
import type { ImageRuntimeConfig } from './config.js';
import { containerEnv, describeEnv, EnvError, type EnvVar } from './env.js';
import { planHealthcheck, type HealthPlan } from './healthcheck.js';
import { DEFAULT_STOP_TIMEOUT_SECONDS, parseStopSignal, SignalError, type StopSignal } from './signal.js';
import type { VolumeState } from './volumes.js';
import { resolveUser, UserLookupError, type GroupEntry, type Identity, type PasswdEntry } from './user.js';

/**
 * What a booted machine does with an image's config, decided once at build time from the config and the image's
 * own passwd/group (what `docker run` reads at start): the one source for the systemd unit, the sysvinit runner and
 * the manifest's `runtime` section. What `docker run` would refuse is refused here, with Docker's reason.
 */
export interface RuntimePlan {
  /** ENTRYPOINT + CMD as the engine runs them; undefined when no service is made (see `skipped`). */
  argv?: string[];
  skipped?: string;
  /** Set with argv. */
  identity?: Identity;
  env?: EnvVar[];
  workdir: string;
  stop: StopSignal & { timeoutSeconds: number | null };
  health?: HealthPlan;
  exposedPorts: string[];
  volumes: string[];
}

const SHELLS = new Set(['bash', 'sh', '/bin/bash', '/bin/sh', '/usr/bin/bash', '/usr/bin/sh', 'dash', '/bin/dash']);
const INITS = new Set([
  '/sbin/init',
  '/usr/sbin/init',
  '/lib/systemd/systemd',
  '/usr/lib/systemd/systemd',
  'init',
  'systemd',
]);

/**
 * The command a container of this image runs, or undefined when there is none worth a service: no ENTRYPOINT and
 * a CMD that is just an interactive shell (what base images ship) or an init (the image already boots as a machine).
 */
export function appCommand(c: ImageRuntimeConfig): string[] | undefined {
  const argv = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  if (!argv.length) return undefined;
  if (!c.Entrypoint?.length && argv.length === 1 && SHELLS.has(argv[0]!)) return undefined;
  if (INITS.has(argv[0]!)) return undefined;
  return argv;
}

const refused = (why: string) =>
  new KilnError('build_failed', `docker run of this image would fail, and so would its service at boot: ${why}`);

export function planRuntime(
  c: ImageRuntimeConfig,
  accounts: { passwd: PasswdEntry[]; group: GroupEntry[] },
): RuntimePlan {
  const wd = c.WorkingDir ?? '';
  if (wd && !wd.startsWith('/'))
    throw refused(`the working directory ${JSON.stringify(wd)} is invalid, it needs to be an absolute path`);
  if (wd.includes('\0')) throw refused('WORKDIR contains a NUL byte');
  let stop: RuntimePlan['stop'];
  try {
    const t = c.StopTimeout;
    stop = {
      ...parseStopSignal(c.StopSignal),
      timeoutSeconds: typeof t !== 'number' ? DEFAULT_STOP_TIMEOUT_SECONDS : t < 0 ? null : t,
    };
  } catch (e) {
    if (e instanceof SignalError) throw refused(e.message);
    throw e;
  }
  const plan: RuntimePlan = {
    workdir: wd ? path.posix.resolve('/', wd) : '/',
    stop,
    health: planHealthcheck(c),
    exposedPorts: Object.keys(c.ExposedPorts ?? {}).sort(),
    // Docker mounts a relative VOLUME path at the root, not under WORKDIR.
    volumes: [...new Set(Object.keys(c.Volumes ?? {}).map((v) => path.posix.resolve('/', v)))].sort(),
  };
  const argv = appCommand(c);
  if (!argv) return { ...plan, skipped: 'the image has no ENTRYPOINT/CMD, or only a shell or an init' };
  if (argv.some((w) => w.includes('\0'))) throw refused('ENTRYPOINT/CMD contains a NUL byte');
  try {
    const identity = resolveUser(c.User ?? '', accounts.passwd, accounts.group);
    return { ...plan, argv, identity, env: containerEnv(c.Env ?? [], identity.home) };
  } catch (e) {
    if (e instanceof UserLookupError || e instanceof EnvError) throw refused(e.message);
    throw e;
  }
}

/** The manifest's `runtime` section: each mapping as Kiln made it, so a user sees what runs at boot and how. */
export function describeRuntime(
  p: RuntimePlan,
  made: { service?: Record<string, unknown>; volumes: VolumeState[] },
): Record<string, unknown> {
  return {
    service: made.service ?? null,
    ...(p.skipped ? { skipped: p.skipped } : {}),
    argv: p.argv ?? null,
    // Resolved when the program starts, like docker run: a relative path against WORKDIR, a bare name through PATH.
    user: p.identity
      ? { spec: p.identity.spec, uid: p.identity.uid, gid: p.identity.gid, groups: p.identity.groups }
      : null,
    workdir: p.workdir,
    env: p.env ? describeEnv(p.env) : null,
    stopSignal: p.stop.name,
    stopTimeoutSeconds: p.stop.timeoutSeconds,
    healthcheck: p.health
      ? {
          test: p.health.test,
          argv: p.health.argv,
          intervalSeconds: p.health.intervalMs / 1000,
          timeoutSeconds: p.health.timeoutMs / 1000,
          startPeriodSeconds: p.health.startPeriodMs / 1000,
          retries: p.health.retries,
        }
      : null,
    exposedPorts: p.exposedPorts,
    volumes: made.volumes,
  };
}
