/**
 * CPU profiles of the web's main thread while bench/web-load.ts (a worker thread) keeps 100 connections busy on one
 * page, the same setup as bench/web.ts: `npx tsx bench/web-profile.ts [seconds] [bare|dashboard|build|me ...]`.
 * For each target it prints the rate and the main thread's busy time per request (the profile's time minus its
 * idle time: what bounds a closed loop once nothing waits), and writes /tmp/kiln-web-<target>.cpuprofile for
 * bench/profile-summary.ts. The machine is shared: compare targets within one run.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import sqlite3 from 'sqlite3';
import { setupPages, load, measure, type Targets } from './web-setup.js';

const SECONDS = Number(process.argv[2] ?? 8);
const which = process.argv.slice(3).length ? process.argv.slice(3) : ['bare', 'dashboard', 'build'];
/** KILN_PROFILE=0: CPU accounting only (the sampling profiler costs the main thread time of its own). */
const PROFILE = process.env.KILN_PROFILE !== '0';
/** KILN_CONNECTIONS: fewer than the closed loop's 100 for a cleaner attribution (less waiting for a core). */
const CONNECTIONS = Number(process.env.KILN_CONNECTIONS ?? 100);

/** SQL statements the web runs, by their first words: counted in node-sqlite3 itself, whoever issues them. */
const statements = new Map<string, number>();
{
  const S = sqlite3.Statement.prototype as unknown as { all: (...a: unknown[]) => unknown };
  const D = sqlite3.Database.prototype as unknown as Record<string, (sql: string, ...a: unknown[]) => unknown>;
  const sqlOf = new WeakMap<object, string>();
  const count = (sql: string | undefined) => {
    const k = (sql ?? '?').replace(/\s+/g, ' ').trim().slice(0, 60);
    statements.set(k, (statements.get(k) ?? 0) + 1);
  };
  const prepare = D.prepare!;
  D.prepare = function (this: object, sql: string, ...a: unknown[]) {
    const st = prepare.call(this, sql, ...a) as object;
    sqlOf.set(st, sql);
    return st;
  };
  const all = S.all;
  S.all = function (this: object, ...a: unknown[]) {
    count(sqlOf.get(this));
    return all.apply(this, a);
  };
  for (const m of ['all', 'run', 'get']) {
    const f = D[m]!;
    D[m] = function (this: object, sql: string, ...a: unknown[]) {
      count(sql);
      return f.call(this, sql, ...a);
    };
  }
}
const perRequest = (requests: number): string =>
  [...statements]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, n]) => `    ${(n / Math.max(1, requests)).toFixed(2)}/req  ${k}`)
    .join('\n');

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
  statements.clear();
  if (!PROFILE) {
    const r = await measure({ targets: t, mode: 'closed', connections: CONNECTIONS, rate: 0, seconds: SECONDS });
    process.stdout.write(
      `${name.padEnd(10)} ${String(r.rps).padStart(6)} req/s  main thread CPU ${String(r.cpu.mainUs).padStart(5)} us/req, waited for a core ${String(r.cpu.mainWaitUs).padStart(5)} us/req, ${r.cpu.mainSwitches} switches/req; other threads ${r.cpu.otherUs} us/req  non-2xx ${r.non2xx}\n${perRequest(r.requests)}\n`,
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
