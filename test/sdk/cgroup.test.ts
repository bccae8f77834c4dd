import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeBuildCgroup, sweepBuildCgroups } from '../../src/sdk/cgroup.js';

/**
 * Leftover per-build pids cgroups (a cancelled or timed-out build, a killed SDK): swept at SDK start, on the real
 * cgroup tree, under a group name of this test's own so no other build's groups are touched.
 */
const ROOT = '/sys/fs/cgroup';
const group = `kiln-test-${randomBytes(4).toString('hex')}`;
// The hierarchies this host has (v1 controllers and the unified one), as the engine makes a build's path in each.
const hierarchies = ['pids', 'memory', 'unified'].filter((h) => existsSync(path.join(ROOT, h, 'cgroup.procs')));
const startTime = (pid: number | 'self') => {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ')[19]!;
};
const present = (name: string) => hierarchies.filter((h) => existsSync(path.join(ROOT, h, group, name)));

function make(name: string, child?: string): void {
  for (const h of hierarchies)
    mkdirSync(path.join(ROOT, h, group, name, ...(child ? [child] : [])), { recursive: true });
}

async function sleeper(): Promise<{ pid: number; start: string; stop: () => Promise<void> }> {
  const p = spawn('sleep', ['1000'], { stdio: 'ignore' });
  await new Promise((r) => p.once('spawn', r));
  return {
    pid: p.pid!,
    start: startTime(p.pid!),
    stop: async () => {
      p.kill('SIGKILL');
      await new Promise((r) => p.once('exit', r));
    },
  };
}

afterAll(() => {
  for (const h of hierarchies) {
    const g = path.join(ROOT, h, group);
    if (!existsSync(g)) continue;
    for (const n of readdirSync(g, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      for (const c of readdirSync(path.join(g, n.name), { withFileTypes: true }).filter((e) => e.isDirectory()))
        rmdirSync(path.join(g, n.name, c.name));
      rmdirSync(path.join(g, n.name));
    }
    rmdirSync(g);
  }
});

describe.runIf(hierarchies.includes('pids'))('leftover build cgroups', () => {
  it('a build cgroup carries its owner (pid and start time) in its name', async () => {
    const cg = await makeBuildCgroup({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, 50);
    try {
      expect(cg.parent).toMatch(new RegExp(`^/kiln/build-${process.pid}-${startTime('self')}-[0-9a-f]{12}$`));
      expect(readFileSync(path.join(ROOT, 'pids', cg.parent!, 'pids.max'), 'utf8').trim()).toBe('50');
      // Its owner (this process) is alive: a sweep by a concurrent SDK leaves it.
      await sweepBuildCgroups();
      expect(existsSync(path.join(ROOT, 'pids', cg.parent!))).toBe(true);
    } finally {
      await cg.remove();
    }
  });

  it('removes only empty groups whose owner is gone, in every hierarchy; a busy, owned or older group stays', async () => {
    const dead = await sleeper();
    await dead.stop();
    const gone = `build-${dead.pid}-${dead.start}-aaaa01`;
    const reused = `build-1-${Number(startTime(1)) + 1}-aaaa02`; // pid 1 exists, but is not the owner that made it
    const mine = `build-${process.pid}-${startTime('self')}-aaaa03`;
    const busy = `build-${dead.pid}-${dead.start}-aaaa04`;
    const older = 'build-0123456789ab'; // an older SDK's name: no owner to check, so never swept
    make(gone, 'container-1');
    make(reused);
    make(mine);
    make(busy);
    make(older);
    const inside = await sleeper();
    try {
      writeFileSync(path.join(ROOT, 'pids', group, busy, 'cgroup.procs'), String(inside.pid));
      const removed = await sweepBuildCgroups(ROOT, group);
      expect(removed.sort()).toEqual([gone, reused].sort());
      expect(present(gone)).toEqual([]);
      expect(present(reused)).toEqual([]);
      expect(present(mine)).toEqual(hierarchies);
      expect(present(busy)).toEqual(hierarchies);
      expect(present(older)).toEqual(hierarchies);
      expect(readFileSync(path.join(ROOT, 'pids', group, busy, 'cgroup.procs'), 'utf8').trim()).toBe(
        String(inside.pid),
      );
    } finally {
      await inside.stop();
    }
    // Once its last process is gone, the next sweep takes it too.
    expect(await sweepBuildCgroups(ROOT, group)).toEqual([busy]);
    expect(present(busy)).toEqual([]);
  });
});
