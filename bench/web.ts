/**
 * Pages under load: the dashboard (`/dockerfiles`) and a build page, each with 100 logged-in sessions, against a
 * bare Express route served by the same process in the same run, and `/api/me` (a session and its user, no page
 * read, no template: what any page with a session costs at least). Closed loop with 100 connections (throughput,
 * target >= 50% of bare) and a fixed 200 req/s (p99, target <= 25 ms). The load comes from a worker thread
 * (bench/web-load.ts; autocannon is not installed). The web runs as `kiln web` does: SQLite, the task worker beside
 * it, the real glue in-process with the fake SDK.
 * Run: `make bench-web` (or `npx tsx bench/web.ts [seconds] [runs]`). Rewrites the tables of the "Pages under load"
 * section of bench/RESULTS-web.md (up to its marker line; the analysis after it is kept).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadResult } from './web-load.js';
import { SESSIONS, load, measure, setupPages, type CpuPerRequest, type Targets } from './web-setup.js';

const SECONDS = Number(process.argv[2] ?? 10);
const RUNS = Number(process.argv[3] ?? 1);
const here = path.dirname(fileURLToPath(import.meta.url));
const MARKER = '<!-- bench/web.ts writes the section up to here; what follows is kept -->';

type Row = { name: string; closed: LoadResult & { cpu: CpuPerRequest }; rate: LoadResult };
type Run = { loadAvg: number[]; rows: Row[] };

async function main(): Promise<void> {
  const pages = await setupPages();
  const targets: Array<{ name: string; targets: Targets }> = [
    { name: 'bare Express route', targets: pages.bare },
    {
      name: 'session only (/api/me)',
      targets: pages.sessions.map((s) => ({ url: `${pages.url}/api/me`, cookie: s.cookie })),
    },
    { name: 'dashboard (/dockerfiles)', targets: pages.dashboard },
    { name: 'build page (/builds/:id)', targets: pages.build },
  ];
  const runs: Run[] = [];
  for (let run = 0; run < RUNS; run++) {
    const loadAvg = os.loadavg();
    const rows: Row[] = [];
    for (const t of targets) {
      // warm up (JIT, template cache, SQLite page cache, prepared statements)
      await load({ targets: t.targets, mode: 'closed', connections: 10, rate: 0, seconds: 2 });
      const closed = await measure({ targets: t.targets, mode: 'closed', connections: 100, rate: 0, seconds: SECONDS });
      const rate = await load({ targets: t.targets, mode: 'rate', connections: 100, rate: 200, seconds: SECONDS });
      rows.push({ name: t.name, closed, rate });
      process.stdout.write(
        `${t.name}: closed ${closed.rps} req/s p99 ${closed.p99} ms, main thread ${closed.cpu.mainUs} us/req (non-2xx ${closed.non2xx}, errors ${closed.errors}); 200 req/s p50 ${rate.p50} p99 ${rate.p99} ms (non-2xx ${rate.non2xx})\n`,
      );
    }
    runs.push({ loadAvg, rows });
  }
  await pages.close();
  write(runs);
}

function table(run: Run): string[] {
  const bare = run.rows[0]!.closed.rps;
  const pct = (n: number) => `${Math.round((n / bare) * 100)}%`;
  return [
    `Load average at the start: ${run.loadAvg.map((l) => l.toFixed(1)).join(' ')}.`,
    '',
    '| target | closed loop, 100 connections | vs bare | p50 / p99 (closed) | main thread CPU per request | other threads (SQLite, GC) | fixed 200 req/s: p50 / p90 / p99 / max |',
    '|---|---|---|---|---|---|---|',
    ...run.rows.map(
      (r) =>
        `| ${r.name} | ${r.closed.rps} req/s | ${pct(r.closed.rps)} | ${r.closed.p50} / ${r.closed.p99} ms | ${r.closed.cpu.mainUs} us | ${r.closed.cpu.otherUs} us | ${r.rate.p50} / ${r.rate.p90} / ${r.rate.p99} / ${r.rate.max} ms |`,
    ),
    '',
  ];
}

function write(runs: Run[]): void {
  const generated = [
    '## Pages under load',
    '',
    `\`make bench-web\` (bench/web.ts), ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'cpu'}), Node ${process.version}; the machine is shared with other test runs.`,
    `${SESSIONS} logged-in sessions (each user: 2 Dockerfiles, 3 builds), SQLite, the task worker running, glue in-process. Load from a worker thread of the same process (autocannon is not installed; bench/web-load.ts does its two measurements), ${SECONDS} s per run after a 2 s warm-up, every target in each run. CPU per request is the web's own (/proc schedstat of its threads, the load generator's left out): unlike req/s it does not swing with what the neighbours do.`,
    '',
    ...runs.flatMap((r, i) => [...(runs.length > 1 ? [`Run ${i + 1} of ${runs.length}.`, ''] : []), ...table(r)]),
    'Targets: closed loop >= 50% of bare; p99 at 200 req/s <= 25 ms. Before this issue: dashboard 587 req/s vs 4,839 for a static file (12%), p50 19 ms, p99 51 ms at 200 req/s (323 ms closed).',
    '',
    MARKER,
  ].join('\n');
  const file = path.join(here, 'RESULTS-web.md');
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Web benchmarks\n\n';
  const start = text.indexOf('## Pages under load');
  if (start < 0) {
    text = `${text.trimEnd()}\n\n${generated}\n`;
  } else {
    const marker = text.indexOf(MARKER, start);
    const next = text.indexOf('\n## ', start + 1);
    const end = marker >= 0 && (next < 0 || marker < next) ? marker + MARKER.length : next >= 0 ? next : text.length;
    text = text.slice(0, start) + generated + text.slice(end);
  }
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
