import { randomBytes } from 'node:crypto';
import { constants as C, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * A process-count limit for one build. The engine's build API has memory and CPU options but no pids limit, so a
 * `RUN :(){ :|:& };:` would fill the host's process table. It does take a cgroup parent for the build's RUN
 * containers: Kiln makes one per build with pids.max set, passes it, and removes it afterwards.
 *
 * Only for the engine's cgroupfs driver (the parent is then a path; under the systemd driver it would be a slice)
 * and when this process may write the cgroup tree (root on the build host). Otherwise the build runs without it and
 * the log says so: the limit then has to come from the build VM.
 */
export interface BuildCgroup {
  /** Value for the build API's `cgroupparent`, or undefined when no limit could be set. */
  parent?: string;
  note?: string;
  remove(): Promise<void>;
}

const ROOT = '/sys/fs/cgroup';
const GROUP = 'kiln';
/** `build-<owner pid>-<owner start time>-<random>`: whoever finds it can tell whether the SDK that made it is alive. */
const NAME_RE = /^build-(\d+)-(\d+)-[0-9a-f]+$/;

/** A process's start time (clock ticks since boot, /proc/PID/stat field 22), or undefined when it is gone. */
function startTime(pid: number | 'self'): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

async function writable(p: string): Promise<boolean> {
  return fsp.access(p, C.W_OK).then(
    () => true,
    () => false,
  );
}

/** The parts of the engine's `info` this needs (undefined: the engine did not answer). */
export interface EngineCgroupInfo {
  CgroupDriver?: string;
  CgroupVersion?: string;
}

export async function makeBuildCgroup(
  info: EngineCgroupInfo | undefined,
  pidsMax: number,
  root = ROOT,
): Promise<BuildCgroup> {
  const none = (note: string): BuildCgroup => ({ note, remove: async () => undefined });
  if (!info) return none('pids limit not applied: the Docker engine did not answer `info`');
  if (info.CgroupDriver !== 'cgroupfs')
    return none(
      `pids limit not applied: the engine's cgroup driver is ${info.CgroupDriver ?? 'unknown'} (Kiln sets it with cgroupfs only)`,
    );
  const name = `build-${process.pid}-${startTime('self') ?? 0}-${randomBytes(6).toString('hex')}`;
  const v2 = info.CgroupVersion === '2';
  const pidsBase = v2 ? root : path.join(root, 'pids');
  if (!(await writable(pidsBase))) return none(`pids limit not applied: ${pidsBase} is not writable by the SDK`);
  const group = path.join(pidsBase, GROUP);
  const dir = path.join(group, name);
  try {
    await fsp.mkdir(group, { recursive: true });
    if (v2) {
      // Children get a pids.max file only when the parents delegate the controller.
      await fsp.writeFile(path.join(root, 'cgroup.subtree_control'), '+pids').catch(() => undefined);
      await fsp.writeFile(path.join(group, 'cgroup.subtree_control'), '+pids');
    }
    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, 'pids.max'), String(pidsMax));
  } catch (e) {
    await fsp.rmdir(dir).catch(() => undefined);
    return none(`pids limit not applied: ${(e as Error).message}`);
  }
  return {
    parent: `/${GROUP}/${name}`,
    remove: async () => {
      // The engine made the same path under every v1 hierarchy it uses; each is empty once the build's containers
      // are gone, which can lag the end of the build stream by seconds (a failed step's container is removed after
      // its processes and its network sandbox are torn down): up to 30 s in all.
      const dirs = v2
        ? [dir]
        : [...(await fsp.readdir(root).catch(() => [] as string[]))].map((c) => path.join(root, c, GROUP, name));
      const deadline = Date.now() + 30_000;
      for (const d of dirs) {
        for (;;) {
          const err = await fsp.rmdir(d).then(
            () => undefined,
            (e: NodeJS.ErrnoException) => e,
          );
          if (!err || err.code === 'ENOENT' || err.code === 'ENOTDIR' || Date.now() > deadline) break;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    },
  };
}

/** Every hierarchy's copy of `group` (v1: one per controller, the unified one included; v2: the root's). */
async function groupDirs(root: string, group: string): Promise<string[]> {
  const hierarchies = [root, ...(await fsp.readdir(root).catch(() => [] as string[])).map((c) => path.join(root, c))];
  const out: string[] = [];
  for (const h of hierarchies) {
    const dir = path.join(h, group);
    if (
      await fsp.stat(dir).then(
        (st) => st.isDirectory(),
        () => false,
      )
    )
      out.push(dir);
  }
  return out;
}

/** True when dir or a group below it holds a process. */
async function busy(dir: string): Promise<boolean> {
  const procs = await fsp.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  if (procs.trim()) return true;
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory() && (await busy(path.join(dir, e.name)))) return true;
  }
  return false;
}

/** Removes dir and the groups below it, deepest first; the kernel refuses (EBUSY) any that holds a process. */
async function removeTree(dir: string): Promise<boolean> {
  let ok = true;
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory()) ok = (await removeTree(path.join(dir, e.name))) && ok;
  }
  return (
    ok &&
    fsp.rmdir(dir).then(
      () => true,
      (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
    )
  );
}

/**
 * Removes the per-build groups a cancelled, timed-out or killed build left behind: only those whose owner (the SDK
 * named in the group's name, by pid and start time) is gone, and only when no process is inside any hierarchy's copy
 * (the kernel also refuses to remove a group that holds one). So a concurrent SDK's group, even an empty one it has
 * just made, is never touched, and neither is a group of an older SDK (its name carries no owner). Returns the
 * names removed.
 */
export async function sweepBuildCgroups(root = ROOT, group = GROUP): Promise<string[]> {
  const copies = new Map<string, string[]>();
  for (const dir of await groupDirs(root, group)) {
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const m = NAME_RE.exec(name);
      if (m && startTime(Number(m[1])) !== m[2]) copies.set(name, [...(copies.get(name) ?? []), path.join(dir, name)]);
    }
  }
  const removed: string[] = [];
  for (const [name, dirs] of copies) {
    if ((await Promise.all(dirs.map(busy))).some(Boolean)) continue;
    if ((await Promise.all(dirs.map(removeTree))).every(Boolean)) removed.push(name);
  }
  return removed;
}
