/**
 * What bench/web.ts and bench/web-profile.ts share: the web as `kiln web` runs it (SQLite, the task worker beside
 * it, the real glue in-process with the fake SDK), 100 logged-in users (2 Dockerfiles and 3 finished builds each),
 * a bare Express route in the same process, and the load generator (bench/web-load.ts) in a worker thread.
 */
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import express from 'express';
import { addUser, startTestWeb } from '../test/helpers/web.js';
import type { LoadJob, LoadResult } from './web-load.js';

export const SESSIONS = 100;
export type Targets = LoadJob['targets'];
const here = path.dirname(fileURLToPath(import.meta.url));

/** One measurement by bench/web-load.ts in a worker thread (its own event loop, so the other core). */
export function load(job: LoadJob): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // The worker loads the TypeScript module through tsx's loader, registered in the worker itself.
    const src = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(pathToFileURL(path.join(here, 'web-load.ts')).href)}); })`;
    const w = new Worker(src, { eval: true, workerData: job });
    w.once('message', (m: LoadResult | { error: string }) => ('error' in m ? reject(new Error(m.error)) : resolve(m)));
    w.once('error', reject);
  });
}

/** CPU time and run-queue wait of each thread of this process, from /proc (ns), and its context switches. */
type ThreadTimes = Map<number, { cpuNs: number; waitNs: number; switches: number }>;
function threadTimes(): ThreadTimes {
  const out: ThreadTimes = new Map();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const [cpu, wait] = readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
      const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      const switches = [...status.matchAll(/ctxt_switches:\s+(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      out.set(Number(tid), { cpuNs: cpu!, waitNs: wait!, switches });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/**
 * What a run cost the web, per request, whatever else the shared machine was doing: CPU time of the main thread and
 * of the web's other threads (libuv's pool, where node-sqlite3 runs statements; V8's helpers), the main thread's
 * wait for a core (run queue) and its context switches. Threads that did not exist before the run (the load
 * generator's worker) are left out.
 */
export interface CpuPerRequest {
  mainUs: number;
  otherUs: number;
  mainWaitUs: number;
  mainSwitches: number;
}

/** `load(job)` with the web's CPU per request. */
export async function measure(job: LoadJob): Promise<LoadResult & { cpu: CpuPerRequest }> {
  const before = threadTimes();
  const r = await load(job);
  const after = threadTimes();
  let main = { cpuNs: 0, waitNs: 0, switches: 0 };
  let otherNs = 0;
  for (const [tid, a] of after) {
    const b = before.get(tid);
    if (!b) continue;
    if (tid === process.pid)
      main = { cpuNs: a.cpuNs - b.cpuNs, waitNs: a.waitNs - b.waitNs, switches: a.switches - b.switches };
    else otherNs += a.cpuNs - b.cpuNs;
  }
  const n = Math.max(1, r.requests);
  const us = (ns: number) => Math.round(ns / 1000 / n);
  return {
    ...r,
    cpu: {
      mainUs: us(main.cpuNs),
      otherUs: us(otherNs),
      mainWaitUs: us(main.waitNs),
      mainSwitches: Math.round((main.switches / n) * 10) / 10,
    },
  };
}

export interface Pages {
  url: string;
  /** Each session's cookie and its latest build. */
  sessions: Array<{ cookie: string; build: number }>;
  bare: Targets;
  /** Every session its own dashboard, and its own latest build page. */
  dashboard: Targets;
  build: Targets;
  close(): Promise<void>;
}

export async function setupPages(): Promise<Pages> {
  // The worker as `kiln web` runs it (the tests' quick polls would add load no deployment has).
  const w = await startTestWeb({
    config: { worker: { pollMs: 1000, refreshMs: 2000, backoffMs: 1000, backoffMaxSeconds: 300 } },
  });
  const bare = express();
  bare.get('/bare', (_req, res) => {
    res.type('text/plain').send('ok\n');
  });
  const bareServer = http.createServer(bare).listen(0, '127.0.0.1');
  await new Promise((r) => bareServer.once('listening', r));
  const bareUrl = `http://127.0.0.1:${(bareServer.address() as AddressInfo).port}/bare`;

  process.stdout.write(`setting up ${SESSIONS} users, each with 2 Dockerfiles and 3 builds...\n`);
  const sessions: Pages['sessions'] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const u = await addUser(w.db, `bench${String(i).padStart(3, '0')}`, 'user');
    const c = w.client();
    if ((await c.login(u.username, u.password)).status !== 303) throw new Error('login failed');
    const a = await c.createDockerfile('app', `FROM debian:bookworm\nRUN echo ${i}\n`);
    await c.createDockerfile('tools', `FROM debian:bookworm-slim\nRUN echo tools ${i}\n`);
    let build = 0;
    for (let b = 0; b < 3; b++) build = (await c.build(a)).id;
    sessions.push({ cookie: c.cookieHeader(), build });
  }
  for (const s of sessions) await w.waitForBuild(s.build);
  return {
    url: w.url,
    sessions,
    bare: [{ url: bareUrl, cookie: '' }],
    dashboard: sessions.map((s) => ({ url: `${w.url}/dockerfiles`, cookie: s.cookie })),
    build: sessions.map((s) => ({ url: `${w.url}/builds/${s.build}`, cookie: s.cookie })),
    close: async () => {
      await w.close();
      bareServer.close();
    },
  };
}
