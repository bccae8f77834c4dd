import { promises as fsp } from 'node:fs';

/**
 * Who a recorded process is, so that a pid read back from a file later (after a restart, or by another `kiln
 * glue` process) is signalled only while it still names the same process: the kernel reuses pids, and a pid from
 * build.json may by then belong to anything. The start time (field 22 of /proc/<pid>/stat, clock ticks since
 * boot) tells two processes with one pid apart within a boot, the boot id across boots, the command line guards
 * against a mistake in either.
 */
export interface ProcessIdentity {
  pid: number;
  bootId: string;
  startTime: string;
  cmdline: string;
}

let bootId: string | undefined;
async function currentBootId(): Promise<string> {
  bootId ??= (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  return bootId;
}

/** The identity of a live process, or undefined when there is none with that pid (or it is a zombie). */
export async function identify(pid: number): Promise<ProcessIdentity | undefined> {
  if (!Number.isSafeInteger(pid) || pid <= 1) return undefined;
  try {
    const [stat, cmdline, boot] = await Promise.all([
      fsp.readFile(`/proc/${pid}/stat`, 'utf8'),
      fsp.readFile(`/proc/${pid}/cmdline`),
      currentBootId(),
    ]);
    // The command name (field 2) is in parentheses and may itself contain spaces and parentheses: count fields
    // after the last ')'. Field 3 is the state, field 22 the start time.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = rest[0];
    const startTime = rest[19];
    if (!startTime || state === 'Z' || state === 'X') return undefined;
    return { pid, bootId: boot, startTime, cmdline: cmdline.toString('utf8').replace(/\0+$/, '').replaceAll('\0', ' ').slice(0, 4096) };
  } catch {
    return undefined;
  }
}

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
  if (!Number.isSafeInteger(o.pid) || typeof o.bootId !== 'string' || typeof o.startTime !== 'string' || typeof o.cmdline !== 'string') return undefined;
  return { pid: o.pid!, bootId: o.bootId, startTime: o.startTime, cmdline: o.cmdline };
}
