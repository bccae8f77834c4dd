/**
 * A small HTTP load generator for bench/web.ts, run in a worker thread (its own event loop, the other core): a
 * closed loop of N keep-alive connections, or an open loop at a fixed rate whose latencies count from each request's
 * scheduled time (no coordinated omission). autocannon is not installed here; this does the two measurements the
 * issue asks for the same way.
 */
import http from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

export interface LoadJob {
  /** What each session asks for (its URL and Cookie header); connection i (closed) or request k (open) uses targets[i % n]. */
  targets: Array<{ url: string; cookie: string }>;
  mode: 'closed' | 'rate';
  connections: number;
  rate: number;
  seconds: number;
}
export interface LoadResult {
  requests: number;
  errors: number;
  non2xx: number;
  seconds: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function get(agent: http.Agent, t: { url: URL; cookie: string }): Promise<number> {
  const { url, cookie } = t;
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        headers: { cookie, host: url.host },
      },
      (res) => {
        res.on('data', () => undefined);
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

function summarize(lat: number[], errors: number, non2xx: number, seconds: number): LoadResult {
  const s = [...lat].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN);
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    requests: s.length,
    errors,
    non2xx,
    seconds,
    rps: Math.round(s.length / seconds),
    p50: r(q(0.5)),
    p90: r(q(0.9)),
    p99: r(q(0.99)),
    max: r(s.at(-1) ?? NaN),
  };
}

async function run(job: LoadJob): Promise<LoadResult> {
  const targets = job.targets.map((t) => ({ url: new URL(t.url), cookie: t.cookie }));
  const lat: number[] = [];
  let errors = 0;
  let non2xx = 0;
  const started = performance.now();
  const end = started + job.seconds * 1000;
  const record = (t0: number, status: number) => {
    lat.push(performance.now() - t0);
    if (status < 200 || status >= 300) non2xx++;
  };
  if (job.mode === 'closed') {
    await Promise.all(
      Array.from({ length: job.connections }, async (_, i) => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        const target = targets[i % targets.length]!;
        while (performance.now() < end) {
          const t0 = performance.now();
          try {
            record(t0, await get(agent, target));
          } catch {
            errors++;
          }
        }
        agent.destroy();
      }),
    );
    return summarize(lat, errors, non2xx, (performance.now() - started) / 1000);
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.connections });
  const total = Math.round(job.rate * job.seconds);
  const inflight: Promise<void>[] = [];
  for (let k = 0; k < total; k++) {
    const due = started + (k * 1000) / job.rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inflight.push(
      get(agent, targets[k % targets.length]!).then(
        (st) => record(due, st),
        () => {
          errors++;
        },
      ),
    );
  }
  await Promise.all(inflight);
  agent.destroy();
  return summarize(lat, errors, non2xx, job.seconds);
}

if (parentPort && workerData) {
  const port = parentPort;
  run(workerData as LoadJob).then(
    (r) => port.postMessage(r),
    (e: unknown) => port.postMessage({ error: String(e) }),
  );
}
