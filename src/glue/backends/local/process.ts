import { identify, type ProcessIdentity } from '../../../shared/process-identity.js';

export { identify, type ProcessIdentity };

const same = (a: ProcessIdentity, b: ProcessIdentity) =>
  a.pid === b.pid && a.bootId === b.bootId && a.startTime === b.startTime && a.cmdline === b.cmdline;

/**
 * Signals the process group led by `recorded` only if its leader is still that very process. Returns whether the
 * signal was sent. A group whose leader has gone is left alone: its number can no longer be told apart from a
 * group some other program made since. (What remains is the usual check-then-kill window of microseconds; Node
 * has no pidfd to close it.)
 */
export async function signalGroupIfSame(recorded: ProcessIdentity, sig: NodeJS.Signals): Promise<boolean> {
  const now = await identify(recorded.pid);
  if (!now || !same(now, recorded)) return false;
  try {
    process.kill(-recorded.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** A recorded identity read back from JSON: anything malformed (or an old record with a bare pid) is no identity. */
export function asIdentity(v: unknown): ProcessIdentity | undefined {
  const o = v as Partial<ProcessIdentity> | null;
  if (!o || typeof o !== 'object') return undefined;
  if (
    !Number.isSafeInteger(o.pid) ||
    typeof o.bootId !== 'string' ||
    typeof o.startTime !== 'string' ||
    typeof o.cmdline !== 'string'
  )
    return undefined;
  return { pid: o.pid!, bootId: o.bootId, startTime: o.startTime, cmdline: o.cmdline };
}
