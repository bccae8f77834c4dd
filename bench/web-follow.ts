/**
 * Following builds, measured: (1) N Server-Sent Events viewers of one live log (default 200): the delay from a line
 * written by the build to the line seen by each viewer, p50/p99; (2) queue fairness: user A queues 10 builds, then
 * user B queues 1: how long B waits, in builds' times, in the local runner and under the per-user cap (Jenkins).
 * The web, its worker and the real glue (local backend, a scripted SDK) run in this process; the viewers run in a
 * worker thread (their own event loop) over real HTTP. Run: `make bench-follow` (or `npx tsx bench/web-follow.ts
 * [viewers] [seconds]`). Writes the "Live log and queue" section of bench/RESULTS-web.md.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { startInProcessGlue } from '../test/helpers/in-process-glue.js';
import { tempDir } from '../test/helpers/tmp.js';
import { startTestWeb, type TestWeb } from '../test/helpers/web.js';

const VIEWERS = Number(process.argv[2] ?? 200);
const SECONDS = Number(process.argv[3] ?? 20);
const LINES_PER_SECOND = 10;

/** A build that prints `tick <ms since epoch>` LINES_PER_SECOND times a second for SECONDS, then succeeds. */
function tickingSdk(dir: string): string[] {
  const file = path.join(dir, 'ticking-sdk.sh');
  writeFileSync(
    file,
    `#!/bin/sh
set -e
prev=
for a in "$@"; do [ "$prev" = --out ] && out=$a; [ "$prev" = --dockerfile ] && df=$a; prev=$a; done
echo '##kiln {"stage":"build","percent":10,"message":"ticking"}'
n=$(( ${SECONDS} * ${LINES_PER_SECOND} ))
mode=$(sed -n 's/^# bench: //p' "$df" | head -n 1)
if [ "$mode" = tick ]; then
  i=0; while [ $i -lt $n ]; do echo "tick $(date +%s%3N)"; sleep ${1 / LINES_PER_SECOND}; i=$((i+1)); done
else
  sleep \${mode#sleep }
fi
printf 'RAW' > "$out/image.raw"
(cd "$out" && sha256sum image.raw > SHA256SUMS)
sha=$(sha256sum "$out/image.raw" | cut -d' ' -f1)
printf '{"ok":true,"sdkVersion":"bench","startedAt":"x","finishedAt":"x","artifacts":[{"name":"image.raw","format":"raw","size":3,"allocated":3,"sha256":"%s"}],"bootTests":[],"stages":[]}' "$sha" > "$out/result.json"
echo '[kiln] build succeeded'
`,
  );
  chmodSync(file, 0o755);
  return [file];
}

const q = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
const r1 = (x: number) => Math.round(x * 10) / 10;

/** The viewers: each opens the stream, parses events, and reports the delay of every `tick` line it sees. */
const VIEWER_SCRIPT = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, cookie, n } = workerData;
const delays = [];
let lines = 0, done = 0, errors = 0;
async function view() {
  try {
    const res = await fetch(url, { headers: { cookie } });
    if (res.status !== 200) { errors++; return; }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '', event = '', data = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\\n')) >= 0) {
        const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
        if (line === '') {
          if (event === 'log') {
            const now = Date.now();
            for (const h of JSON.parse(data).html) { const m = /^tick (\\d+)$/.exec(h); if (m) { delays.push(now - Number(m[1])); lines++; } }
          }
          if (event === 'end') { reader.cancel(); return; }
          event = ''; data = '';
        } else if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data = line.slice(6);
      }
    }
  } catch { errors++; } finally { done++; }
}
Promise.all(Array.from({ length: n }, view)).then(() => parentPort.postMessage({ delays, lines, errors }));
`;

async function liveLog(): Promise<Record<string, number>> {
  const tmp = tempDir('kiln-bench-follow-');
  const local = await startInProcessGlue({
    dataDir: path.join(tmp.dir, 'glue'),
    sdkCommand: tickingSdk(tmp.dir),
    concurrency: 1,
  });
  // One user opens every stream here (the cap per user is for people, not for this measurement).
  const w = await startTestWeb({ glue: local.client, config: { web: { liveStreamsPerUser: VIEWERS } } });
  try {
    const c = w.client();
    await c.signUp('viewer');
    const df = await c.createDockerfile('ticking', 'FROM debian:bookworm\n# bench: tick\nRUN true\n');
    const { id } = await c.build(df);
    await w.waitForBuild(id, (b) => b.state === 'running');
    const glueCalls = local.commands.length;
    const t0 = Date.now();
    const res = await new Promise<{ delays: number[]; lines: number; errors: number }>((resolve, reject) => {
      const worker = new Worker(VIEWER_SCRIPT, {
        eval: true,
        workerData: { url: `${w.url}/api/builds/${id}/events`, cookie: c.cookieHeader(), n: VIEWERS },
      });
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const seconds = (Date.now() - t0) / 1000;
    const logReads = local.commands.slice(glueCalls).filter((l) => l.startsWith('build.log ')).length;
    const s = res.delays.sort((a, b) => a - b);
    return {
      viewers: VIEWERS,
      linesPerViewer: r1(res.lines / VIEWERS),
      errors: res.errors,
      samples: s.length,
      p50: q(s, 0.5),
      p90: q(s, 0.9),
      p99: q(s, 0.99),
      max: s.at(-1) ?? NaN,
      seconds: r1(seconds),
      glueLogReadsPerSecond: r1(logReads / seconds),
    };
  } finally {
    await w.close();
    await local.close();
    tmp.cleanup();
  }
}

/** A queues 10 builds of `sleep S`, then B queues 1: B's wait (requested -> started) against a build's time. */
async function fairness(cap: number): Promise<Record<string, number | string>> {
  const tmp = tempDir('kiln-bench-fair-');
  const local = await startInProcessGlue({
    dataDir: path.join(tmp.dir, 'glue'),
    sdkCommand: tickingSdk(tmp.dir),
    concurrency: 1,
  });
  const w: TestWeb = await startTestWeb({
    glue: local.client,
    config: { web: { quotaQueuedBuilds: 20 }, worker: { userBuildsInFlight: cap } },
  });
  try {
    const a = w.client();
    await a.signUp('alice');
    const b = w.client();
    await b.signUp('bob');
    const adf = await a.createDockerfile('a', 'FROM debian:bookworm\n# bench: sleep 1\nRUN true\n');
    const bdf = await b.createDockerfile('b', 'FROM debian:bookworm\n# bench: sleep 1\nRUN true\n');
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push((await a.build(adf)).id);
    const bid = (await b.build(bdf)).id;
    const rows = await Promise.all([...ids, bid].map((id) => w.waitForBuild(id)));
    const t = (x: string | null) => Date.parse(x!);
    const run = rows.map((x) => (t(x.finished_at) - t(x.started_at)) / 1000).sort((x, y) => x - y);
    const bRow = rows.at(-1)!;
    const order = [...rows].sort((x, y) => t(x.started_at) - t(y.started_at)).map((x) => x.id);
    const typical = q(run, 0.5);
    const bWait = (t(bRow.started_at) - t(bRow.requested_at)) / 1000;
    const aLast = rows
      .slice(0, 10)
      .map((x) => (t(x.started_at) - t(x.requested_at)) / 1000)
      .sort((x, y) => x - y)
      .at(-1)!;
    return {
      setup: cap ? `per-user cap ${cap} (Jenkins mode)` : 'local runner, round robin',
      bStartedAs: order.indexOf(bid) + 1,
      bWaitSeconds: r1(bWait),
      buildSeconds: r1(typical),
      bWaitInBuilds: r1(bWait / typical),
      aLongestWaitSeconds: r1(aLast),
    };
  } finally {
    await w.close();
    await local.close();
    tmp.cleanup();
  }
}

const live = await liveLog();
const fair = [await fairness(0), await fairness(1)];
const load = os.loadavg()[0]!.toFixed(1);
const section = `## Live log and queue

Measured by \`bench/web-follow.ts\` (\`make bench-follow\`) on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores
(${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, loopback; SQLite; the real glue in process (local backend, a
scripted SDK); ${VIEWERS} viewers in a worker thread (own event loop), one session. Load average (1 min) at the end: ${load}
(the machine is shared with CI runs: the tails grow with it).

### ${VIEWERS} viewers of one live log

The build prints \`tick <time>\` ${LINES_PER_SECOND} times a second for ${SECONDS} s; each viewer follows
\`GET /api/builds/:id/events\` and records, for each tick line, the time seen minus the time written (the build's
clock and the viewer's are the same machine's). \`web.livePollMs\` = 250 (default).

| viewers | lines seen per viewer | errors | samples | p50 ms | p90 ms | p99 ms | max ms | glue build.log reads per s |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${live.viewers} | ${live.linesPerViewer} | ${live.errors} | ${live.samples} | ${live.p50} | ${live.p90} | ${live.p99} | ${live.max} | ${live.glueLogReadsPerSecond} |

Target: p99 under 1 s. The delay is the poll interval (a line waits up to 250 ms for the next read) plus the read and
the fan-out; all viewers share one glue read per poll (\`Coalescer\` in src/core/builds/live.ts), so the glue sees
the same few reads a second whether 1 or ${VIEWERS} people watch.

### Queue fairness: A queues 10 builds, then B queues 1

One executor (glue concurrency 1); each build takes about a second (\`sleep 1\` plus Kiln's own work). B's wait is
from B's request to B's start.

| setup | B started as | B waited s | one build s (median) | B's wait in builds | A's longest wait s |
|---|---:|---:|---:|---:|---:|
${fair.map((f) => `| ${f.setup} | ${f.bStartedAs} | ${f.bWaitSeconds} | ${f.buildSeconds} | ${f.bWaitInBuilds} | ${f.aLongestWaitSeconds} |`).join('\n')}

Target: B waits at most one build's time (it starts second, after A's first, which was already running). First come
first served would start B eleventh, after about ten builds' time.
`;
const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS-web.md');
const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Web benchmarks\n';
const start = old.indexOf('## Live log and queue');
const rest = start < 0 ? '' : old.slice(start).slice('## Live log and queue'.length);
const next = rest.search(/\n## /);
const updated =
  start < 0
    ? `${old.trimEnd()}\n\n${section}`
    : `${old.slice(0, start)}${section}${next < 0 ? '' : rest.slice(next + 1)}`;
writeFileSync(file, updated);
process.stdout.write(`${section}\nwritten to ${file}\n`);
