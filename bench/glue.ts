/**
 * Glue round trip over SSH: `build.status` p50/p99, reused connection vs a new connection per call, through the
 * built-in ssh2 server and through OpenSSH (`kiln glue` as a forced command, one node process per request).
 * Run: `make bench-glue` (or `npx tsx bench/glue.ts [calls]`). Writes bench/RESULTS-glue.md.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalBackend } from '../src/glue/backends/local/index.js';
import type { GluePort } from '../src/core/ports.js';
import { fakeSpec, startOpenSshGlue, startTestGlue, writeFakeSdk } from '../test/helpers/glue.js';
import { tempDir } from '../test/helpers/tmp.js';

const CALLS = Number(process.argv[2] ?? 1000);
const OPENSSH_CALLS = Number(process.argv[3] ?? 200);

interface Row {
  door: string;
  mode: string;
  calls: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

function stats(door: string, mode: string, ms: number[]): Row {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    door,
    mode,
    calls: s.length,
    p50: r(q(0.5)),
    p90: r(q(0.9)),
    p99: r(q(0.99)),
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
    max: r(s.at(-1)!),
  };
}

async function time(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return out;
}

async function prepare(c: GluePort): Promise<void> {
  await c.call('job.put', [1], JSON.stringify(fakeSpec()));
  await c.call('job.build', [1, 'bench-key-01']);
  for (let i = 0; i < 200; i++) {
    const st = await c.call('build.status', [1, 1]);
    if (st.state === 'succeeded') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('bench build did not finish');
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const loadBefore = os.loadavg()[0]!.toFixed(1);
  const g = await startTestGlue();
  const dirB = tempDir('kiln-bench-openssh-');
  const runnerB = new LocalBackend({ dataDir: dirB.dir, sdkCommand: writeFakeSdk(dirB.dir), pollMs: 50 });
  await runnerB.start();
  const o = await startOpenSshGlue({ dataDir: dirB.dir, clientKey: g.clientKey });
  try {
    await prepare(g.client);
    await prepare(o.client);
    const status = (c: GluePort) => c.call('build.status', [1, 1]);

    await time(50, () => status(g.client)); // warm-up
    rows.push(stats('built-in ssh2', 'reused connection', await time(CALLS, () => status(g.client))));
    rows.push(
      stats(
        'built-in ssh2',
        'new connection per call',
        await time(CALLS, async () => {
          const c = g.newClient();
          await status(c);
          await c.close();
        }),
      ),
    );
    process.stderr.write('built-in done\n');
    await time(5, () => status(o.client));
    rows.push(stats('OpenSSH + kiln glue', 'reused connection', await time(OPENSSH_CALLS, () => status(o.client))));
    rows.push(
      stats(
        'OpenSSH + kiln glue',
        'new connection per call',
        await time(Math.ceil(OPENSSH_CALLS / 2), async () => {
          const c = o.newClient();
          await status(c);
          await c.close();
        }),
      ),
    );
  } finally {
    await o.cleanup();
    await runnerB.close();
    dirB.cleanup();
    await g.cleanup();
  }

  const sshd = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr.split(',')[0] ?? 'OpenSSH';
  const table = [
    '| door | connection | calls | p50 ms | p90 ms | p99 ms | mean ms | max ms |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) => `| ${r.door} | ${r.mode} | ${r.calls} | ${r.p50} | ${r.p90} | ${r.p99} | ${r.mean} | ${r.max} |`,
    ),
  ].join('\n');
  const md = `# Glue round trip over SSH (build.status)

Measured by \`bench/glue.ts\` (\`make bench-glue\`) on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores
(${os.cpus()[0]?.model ?? 'cpu'}), Node ${process.version}, ${sshd.trim() || 'OpenSSH'}, loopback. Client: the web's ssh2
GluePort (pinned ed25519 host key, ed25519 client key). Server: the built-in ssh2 server (in the same process as the
client here) and a real OpenSSH sshd running \`kiln glue\` as a forced command. Backend: local, one finished build.
Calls are sequential (one in flight). Load average (1 min) at start/end: ${loadBefore} / ${os.loadavg()[0]!.toFixed(1)}
(other work shares this 2-core machine; the tails, and the OpenSSH rows most, grow with it).

${table}

Reading it:
- A reused connection costs one SSH channel (open, exec, reply, exit-status, close) per call. Both ends set
  TCP_NODELAY: without it, Nagle plus delayed ACKs made the same reused-connection call take ~92 ms at p50.
- A new connection adds the TCP connect, key exchange, host key check and public-key authentication.
- Through OpenSSH every request also starts a \`kiln glue\` node process (fork + exec of sshd's session, node
  start-up, config, the local backend): that dominates, reused connection or not. The built-in server runs the same
  dispatcher in-process, which is why it is the default for the one-machine setup.
- OpenSSH rows use fewer calls (${OPENSSH_CALLS} reused, ${Math.ceil(OPENSSH_CALLS / 2)} new) because each takes a node start-up;
  pass \`npx tsx bench/glue.ts <calls> <openssh-calls>\` for more.
`;
  const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS-glue.md');
  writeFileSync(out, md);
  process.stdout.write(md);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
