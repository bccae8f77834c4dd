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
    return {
      pid,
      bootId: boot,
      startTime,
      cmdline: cmdline.toString('utf8').replace(/\0+$/, '').replaceAll('\0', ' ').slice(0, 4096),
    };
  } catch {
    return undefined;
  }
}
