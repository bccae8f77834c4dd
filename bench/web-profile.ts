/**
 * CPU profiles of the web's main thread while bench/web-load.ts (a worker thread) keeps 100 connections busy on one
 * page, the same setup as bench/web.ts: `npx tsx bench/web-profile.ts [seconds] [bare|dashboard|build|me ...]`.
 * For each target it prints the rate and the main thread's busy time per request (the profile's time minus its
 * idle time: what bounds a closed loop once nothing waits), and writes /tmp/kiln-web-<target>.cpuprofile for
 * bench/profile-summary.ts. The machine is shared: compare targets within one run.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { setupPages, load, measure, type Targets } from './web-setup.js';

const SECONDS = Number(process.argv[2] ?? 8);
const which = process.argv.slice(3).length ? process.argv.slice(3) : ['bare', 'dashboard', 'build'];
/** KILN_PROFILE=0: CPU accounting only (the sampling profiler costs the main thread time of its own). */
const PROFILE = process.env.KILN_PROFILE !== '0';
/** KILN_CONNECTIONS: fewer than the closed loop's 100 for a cleaner attribution (less waiting for a core). */
const CONNECTIONS = Number(process.env.KILN_CONNECTIONS ?? 100);

const pages = await setupPages();
const targets: Record<string, Targets> = {
  bare: pages.bare,
  dashboard: pages.dashboard,
  build: pages.build,
  me: pages.sessions.map((s) => ({ url: `${pages.url}/api/me`, cookie: s.cookie })),
};
const s = new Session();
s.connect();
await s.post('Profiler.enable');
await s.post('Profiler.setSamplingInterval', { interval: 200 });
for (const name of which) {
  const t = targets[name];
  if (!t) throw new Error(`unknown target ${name}`);
  await load({ targets: t, mode: 'closed', connections: 10, rate: 0, seconds: 2 });
  if (!PROFILE) {
    const r = await measure({ targets: t, mode: 'closed', connections: CONNECTIONS, rate: 0, seconds: SECONDS });
    process.stdout.write(
      `${name.padEnd(10)} ${String(r.rps).padStart(6)} req/s  main thread CPU ${String(r.cpu.mainUs).padStart(5)} us/req, waited for a core ${String(r.cpu.mainWaitUs).padStart(5)} us/req, ${r.cpu.mainSwitches} switches/req; other threads ${r.cpu.otherUs} us/req  non-2xx ${r.non2xx}\n`,
    );
    continue;
  }
  await s.post('Profiler.start');
  const r = await load({ targets: t, mode: 'closed', connections: CONNECTIONS, rate: 0, seconds: SECONDS });
  const { profile } = await s.post('Profiler.stop');
  const file = `/tmp/kiln-web-${name}.cpuprofile`;
  writeFileSync(file, JSON.stringify(profile));
  const idle = profile.nodes
    .filter((n) => n.callFrame.functionName === '(idle)')
    .reduce((sum, n) => sum + (n.hitCount ?? 0), 0);
  const samples = profile.samples?.length ?? 1;
  const busyUs = ((profile.endTime - profile.startTime) * (1 - idle / samples)) / Math.max(1, r.requests);
  process.stdout.write(
    `${name.padEnd(10)} ${String(r.rps).padStart(6)} req/s  main thread busy ${busyUs.toFixed(0).padStart(5)} us/req  idle ${((idle / samples) * 100).toFixed(0)}%  non-2xx ${r.non2xx}  ${file}\n`,
  );
}
await pages.close();
process.exit(0);
