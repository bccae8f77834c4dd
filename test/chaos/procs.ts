import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/**
 * Processes as /proc shows them, for a harness that may signal only what it started (the machine is shared): a
 * process is found by walking down from a PID this harness spawned, and identified by (pid, start time) so a PID
 * reused by someone else in the meantime is never signalled.
 */
export interface Proc {
  pid: number;
  ppid: number;
  pgid: number;
  /** Start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, the process's identity. */
  start: number;
  state: string;
  cmdline: string;
}

export function readProc(pid: number): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm is in parentheses and may hold spaces or parentheses: the fields after it start at the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    return { pid, state: rest[0]!, ppid: Number(rest[1]), pgid: Number(rest[2]), start: Number(rest[19]), cmdline };
  } catch {
    return undefined;
  }
}

export function allProcs(): Proc[] {
  const out: Proc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    const p = readProc(Number(name));
    if (p && p.state !== 'Z') out.push(p);
  }
  return out;
}

/** Every live process below `pid` (children, their children, ...), from one snapshot of /proc. */
export function descendants(pid: number, procs: Proc[] = allProcs()): Proc[] {
  const byParent = new Map<number, Proc[]>();
  for (const p of procs) byParent.set(p.ppid, [...(byParent.get(p.ppid) ?? []), p]);
  const out: Proc[] = [];
  const todo = [pid];
  while (todo.length) {
    for (const c of byParent.get(todo.pop()!) ?? []) {
      out.push(c);
      todo.push(c.pid);
    }
  }
  return out;
}

/** Signals `p` only if the PID still names the same process (same start time). Returns whether it did. */
export function signalIfSame(p: Pick<Proc, 'pid' | 'start'>, sig: NodeJS.Signals = 'SIGKILL'): boolean {
  const now = readProc(p.pid);
  if (!now || now.start !== p.start || now.state === 'Z') return false;
  try {
    process.kill(p.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * Signals the process group led by `leader`, only while the leader is still that same process. Returns whether
 * it did.
 */
export function signalGroupIfSame(leader: Pick<Proc, 'pid' | 'start'>, sig: NodeJS.Signals = 'SIGKILL'): boolean {
  const now = readProc(leader.pid);
  if (!now || now.start !== leader.start || now.pgid !== leader.pid) return false;
  try {
    process.kill(-leader.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** The working directory of a process, or '' when it is gone or unreadable. */
export function cwdOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return '';
  }
}

/** One environment variable of a process (readable by root or its owner), or undefined. */
export function envOf(pid: number, name: string): string | undefined {
  try {
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const hit = env.find((e) => e.startsWith(`${name}=`));
    return hit?.slice(name.length + 1);
  } catch {
    return undefined;
  }
}
