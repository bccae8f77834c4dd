import type { ImageRuntimeConfig } from './config.js';

/**
 * HEALTHCHECK as Docker runs it (moby daemon/health.go): `CMD args...` runs args, `CMD-SHELL cmd` runs the image's
 * SHELL (default /bin/sh -c) with cmd, both like `docker exec` with the container's USER, ENV and WORKDIR; NONE (or
 * an unknown type) means no check. The first check comes `interval` after the start, the next `interval` after the
 * previous one ends; a check that outlives `timeout` is killed and fails; failures in the start period do not count
 * until a check has passed; `retries` failures in a row make the container unhealthy. Docker only reports that; a
 * booted machine has nobody watching `docker ps`, so Kiln also restarts the program then.
 */
export interface HealthPlan {
  /** The image's Test, as `docker inspect` shows it. */
  test: string[];
  argv: string[];
  intervalMs: number;
  timeoutMs: number;
  startPeriodMs: number;
  retries: number;
}

const NS_PER_MS = 1_000_000;
const DEFAULT_INTERVAL_MS = 30_000;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_RETRIES = 3;

const ms = (ns: number | undefined, dflt: number): number =>
  ns && ns > 0 ? Math.max(1, Math.round(ns / NS_PER_MS)) : dflt;

export function planHealthcheck(c: ImageRuntimeConfig): HealthPlan | undefined {
  const h = c.Healthcheck;
  const test = h?.Test ?? [];
  let argv: string[];
  if (test[0] === 'CMD') argv = test.slice(1);
  else if (test[0] === 'CMD-SHELL') argv = [...(c.Shell?.length ? c.Shell : ['/bin/sh', '-c']), ...test.slice(1)];
  else return undefined;
  if (!argv.length) return undefined;
  return {
    test: [...test],
    argv,
    intervalMs: ms(h?.Interval, DEFAULT_INTERVAL_MS),
    timeoutMs: ms(h?.Timeout, DEFAULT_TIMEOUT_MS),
    startPeriodMs: ms(h?.StartPeriod, 0),
    retries: h?.Retries && h.Retries > 0 ? h.Retries : DEFAULT_RETRIES,
  };
}
