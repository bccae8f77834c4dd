/**
 * Glue round trip over SSH: `build.status` p50/p99, reused connection vs a new connection per call, through the
 * built-in ssh2 server and through OpenSSH (the forced command run in-process, one node per request; and handed to
 * the resident glue by bin/kiln-glue-forward). Then the start-up of one forced command without SSH, for the options
 * weighed before the resident was chosen. Run: `make bench-glue` (or `npx tsx bench/glue.ts [calls]
 * [openssh-calls] [start-runs]`). Writes bench/RESULTS-glue.md.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalBackend } from '../src/glue/backends/local/index.js';
import { pidFileOf } from '../src/glue/resident/place.js';
import type { GluePort } from '../src/core/ports.js';
import { fakeSpec, startOpenSshGlue, startTestGlue, stopResident, writeFakeSdk } from '../test/helpers/glue.js';
import { tempDir } from '../test/helpers/tmp.js';

const CALLS = Number(process.argv[2] ?? 1000);
const OPENSSH_CALLS = Number(process.argv[3] ?? 200);
const START_RUNS = Number(process.argv[4] ?? 40);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

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

const status = (c: GluePort) => c.call('build.status', [1, 1]);

/** Reused-connection and new-connection rows for one door. */
async function door(
  name: string,
  client: GluePort,
  newClient: () => GluePort,
  calls: number,
  warm: number,
): Promise<Row[]> {
  await time(warm, () => status(client));
  const reused = stats(name, 'reused connection', await time(calls, () => status(client)));
  const fresh = stats(
    name,
    'new connection per call',
    await time(Math.ceil(calls / 2), async () => {
      const c = newClient();
      await status(c);
      await c.close();
    }),
  );
  process.stderr.write(`${name} done\n`);
  return [reused, fresh];
}

// ---------------------------------------------------------------------------------------------------------------
// Start-up of one forced command, without SSH: the environment sshd gives it (no NODE_EXTRA_CA_CERTS and the like),
// `build.status 1 1` on the bench's data directory, from spawn to exit. Variants run interleaved, so a change of
// the machine's load hits them alike.

interface Variant {
  name: string;
  argv: string[];
  env?: Record<string, string>;
  /** The exit status that shows it answered the request (none: it does not run one). */
  expect?: number;
}

async function startupVariants(work: string, socket: string): Promise<Variant[]> {
  const node = process.execPath;
  const kiln = path.join(REPO, 'dist/cmd/kiln.js');
  writeFileSync(path.join(work, 'empty.cjs'), '');
  const cacheDir = path.join(work, 'compile-cache');
  mkdirSync(cacheDir);
  const out: Variant[] = [
    { name: 'node, an empty script (the floor of any node entry)', argv: [node, path.join(work, 'empty.cjs')] },
    {
      name: '(a) node + `import("zod")` alone (config and protocol need it for any verb)',
      argv: [
        node,
        '--input-type=module',
        '-e',
        `await import(${JSON.stringify(path.join(REPO, 'node_modules/zod/index.js'))})`,
      ],
    },
    {
      name: 'kiln glue, in-process (before: one node per request)',
      argv: [path.join(REPO, 'bin/kiln'), 'glue'],
      expect: 3,
    },
    {
      name: '(b) the same with NODE_COMPILE_CACHE set',
      argv: [path.join(REPO, 'bin/kiln'), 'glue'],
      env: { NODE_COMPILE_CACHE: cacheDir },
      expect: 3,
    },
  ];
  // (b) what Node 20 can do instead: one bundled file, compiled with V8's code cache or restored from a snapshot.
  try {
    const esbuild = await import('esbuild');
    const entry = path.join(work, 'entry.mjs');
    writeFileSync(
      entry,
      `import { runRequest } from ${JSON.stringify(path.join(REPO, 'dist/cmd/glue-request.js'))};\n` +
        `if (process.env.SNAPSHOT) require('node:v8').startupSnapshot.setDeserializeMainFunction(() => runRequest([]).then((c) => { process.exitCode = c; }));\n` +
        `else runRequest([]).then((c) => { process.exitCode = c; });\n`,
    );
    const bundle = path.join(work, 'glue-bundle.cjs');
    await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      format: 'cjs',
      outfile: bundle,
      logLevel: 'error',
    });
    const cached = path.join(work, 'cached.cjs');
    writeFileSync(
      cached,
      `const fs = require('fs'), vm = require('vm'), Module = require('module');
const file = ${JSON.stringify(bundle)}, cacheFile = file + '.v8cache';
let cachedData; try { cachedData = fs.readFileSync(cacheFile); } catch {}
const script = new vm.Script(Module.wrap(fs.readFileSync(file, 'utf8')), { filename: file, cachedData });
const mod = { exports: {} };
script.runInThisContext().call(mod.exports, mod.exports, require, mod, file, __dirname);
process.on('exit', () => { if (!cachedData || script.cachedDataRejected) fs.writeFileSync(cacheFile, script.createCachedData()); });
`,
    );
    out.push({ name: '(b) one esbuild bundle of it', argv: [node, bundle], expect: 3 });
    out.push({ name: '(b) the bundle with a V8 code cache (v8-compile-cache style)', argv: [node, cached], expect: 3 });
    // Node 20's snapshot builder cannot load node:http at build time (its module init fails there): made lazy.
    const snapSrc = readFileSync(bundle, 'utf8').replace(
      /var (import_node_http\d*) = __toESM\(require\("node:http"\), 1\);/,
      'var $1 = { get default() { return require("node:http"); } };',
    );
    const snapFile = path.join(work, 'snap.cjs');
    writeFileSync(snapFile, snapSrc);
    const blob = path.join(work, 'glue.blob');
    const built = spawnSync(node, ['--snapshot-blob', blob, '--build-snapshot', snapFile], {
      cwd: work,
      env: { PATH: process.env.PATH, SNAPSHOT: '1' },
      encoding: 'utf8',
    });
    if (built.status === 0)
      out.push({ name: '(b) the bundle as a startup snapshot', argv: [node, '--snapshot-blob', blob], expect: 3 });
    else process.stderr.write(`snapshot not built: ${built.stderr.slice(-400)}\n`);
  } catch (e) {
    process.stderr.write(`(b) bundle variants skipped: ${(e as Error).message}\n`);
  }
  // (c) the forwarders: a node one speaking the same wire (no peer check: Node cannot read SO_PEERCRED), and perl's.
  const nodeForward = path.join(work, 'node-forward.mjs');
  writeFileSync(
    nodeForward,
    `import net from 'node:net';
import { residentSettings } from ${JSON.stringify(path.join(REPO, 'dist/glue/resident/place.js'))};
const s = net.connect(process.env.KILN_GLUE_SOCKET);
const cmd = Buffer.from(process.env.SSH_ORIGINAL_COMMAND), set = residentSettings(process.env, process.cwd(), ${JSON.stringify(kiln)}), n = (b) => { const h = Buffer.alloc(4); h.writeUInt32BE(b.length); return h; };
s.write(Buffer.concat([Buffer.from('KGF1'), n(cmd), cmd, n(set), set])); s.end();
let buf = Buffer.alloc(0);
s.on('data', (c) => { buf = Buffer.concat([buf, c]);
  while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) { const t = buf[0], p = buf.subarray(5, 5 + buf.readUInt32BE(1)); buf = buf.subarray(5 + p.length);
    if (t === 0x4f) process.stdout.write(p); else if (t === 0x45) process.stderr.write(p); else if (t === 0x58) process.exitCode = p[0]; } });
`,
  );
  out.push({
    name: '(c) node forwarder stub + resident (the same wire and settings, no peer check)',
    argv: [node, nodeForward],
    env: { KILN_GLUE_SOCKET: socket },
    expect: 3,
  });
  out.push({
    name: '(c) bin/kiln → perl forwarder + resident (chosen)',
    argv: [path.join(REPO, 'bin/kiln'), 'glue'],
    env: { KILN_GLUE_SOCKET: socket },
    expect: 3,
  });
  return out;
}

async function startupTable(): Promise<{ rows: Row[]; compileCacheFiles: number }> {
  const t = tempDir('kiln-bench-start-');
  const dataDir = path.join(t.dir, 'data');
  const socket = path.join(t.dir, 'run', 'glue.sock');
  const baseEnv = {
    PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`,
    KILN_DATA_DIR: dataDir,
    SSH_ORIGINAL_COMMAND: 'build.status 1 1',
  };
  try {
    const variants = await startupVariants(t.dir, socket);
    // The resident: started on demand by the first requests (which run in-process meanwhile).
    for (let i = 0; i < 200 && !existsSync(pidFileOf(socket)); i++)
      spawnSync(path.join(REPO, 'bin/kiln'), ['glue'], { env: { ...baseEnv, KILN_GLUE_SOCKET: socket } });
    const times = new Map<Variant, number[]>(variants.map((v) => [v, []]));
    for (const v of variants) spawnSync(v.argv[0]!, v.argv.slice(1), { env: { ...baseEnv, ...v.env } }); // warm caches
    for (let i = 0; i < START_RUNS; i++) {
      for (const v of variants) {
        const s = process.hrtime.bigint();
        const r = spawnSync(v.argv[0]!, v.argv.slice(1), { env: { ...baseEnv, ...v.env }, encoding: 'utf8' });
        times.get(v)!.push(Number(process.hrtime.bigint() - s) / 1e6);
        if (v.expect !== undefined && r.status !== v.expect)
          throw new Error(`${v.name}: exit ${r.status}, ${r.stderr.slice(0, 300)}`);
      }
    }
    await stopResident(socket);
    return {
      rows: variants.map((v) => stats(v.name, '', times.get(v)!)),
      compileCacheFiles: readdirSync(path.join(t.dir, 'compile-cache')).length,
    };
  } finally {
    t.cleanup();
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const loadBefore = os.loadavg()[0]!.toFixed(1);
  const g = await startTestGlue();
  const dirB = tempDir('kiln-bench-openssh-');
  const runnerB = new LocalBackend({ dataDir: dirB.dir, sdkCommand: writeFakeSdk(dirB.dir), pollMs: 50 });
  await runnerB.start();
  const inProcess = await startOpenSshGlue({ dataDir: dirB.dir, clientKey: g.clientKey });
  const resident = await startOpenSshGlue({ dataDir: dirB.dir, clientKey: g.clientKey, resident: true });
  try {
    await prepare(g.client);
    await prepare(inProcess.client);
    rows.push(...(await door('built-in ssh2', g.client, () => g.newClient(), CALLS, 50)));
    rows.push(
      ...(await door(
        'OpenSSH + kiln glue in-process',
        inProcess.client,
        () => inProcess.newClient(),
        OPENSSH_CALLS,
        5,
      )),
    );
    // The first request starts the resident (and runs in-process); the measured calls begin once it listens.
    for (let i = 0; i < 200 && !existsSync(pidFileOf(resident.socketPath!)); i++) await status(resident.client);
    rows.push(...(await door('OpenSSH + resident glue', resident.client, () => resident.newClient(), CALLS, 20)));
    // sshd's own share: the same sshd, its forced command replaced by one that prints the answer it would give.
    const answer = JSON.stringify(await status(resident.client)).replaceAll("'", "'\\''");
    writeFileSync(path.join(resident.dir, 'kiln-glue'), `#!/bin/sh\nprintf '%s\\n' '${answer}'\n`);
    rows.push(
      ...(await door(
        'OpenSSH + a canned answer (sshd alone)',
        resident.client,
        () => resident.newClient(),
        OPENSSH_CALLS,
        5,
      )),
    );
  } finally {
    await resident.cleanup();
    await inProcess.cleanup();
    await runnerB.close();
    dirB.cleanup();
    await g.cleanup();
  }
  const loadMid = os.loadavg()[0]!.toFixed(1);
  const start = await startupTable();
  const loadAfter = os.loadavg()[0]!.toFixed(1);

  const sshd = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr.split(',')[0] ?? 'OpenSSH';
  const perl = /\(v[\d.]+\)/.exec(spawnSync('perl', ['-v'], { encoding: 'utf8' }).stdout)?.[0] ?? '';
  const table = [
    '| door | connection | calls | p50 ms | p90 ms | p99 ms | mean ms | max ms |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) => `| ${r.door} | ${r.mode} | ${r.calls} | ${r.p50} | ${r.p90} | ${r.p99} | ${r.mean} | ${r.max} |`,
    ),
  ].join('\n');
  const startTable = [
    '| forced command (no SSH) | runs | p50 ms | p90 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|---:|',
    ...start.rows.map((r) => `| ${r.door} | ${r.calls} | ${r.p50} | ${r.p90} | ${r.p99} | ${r.max} |`),
  ].join('\n');
  const md = `# Glue round trip over SSH (build.status)

Measured by \`bench/glue.ts\` (\`make bench-glue\`) on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores
(${os.cpus()[0]?.model ?? 'cpu'}), Node ${process.version}, perl ${perl.slice(1, -1)}, ${sshd.trim() || 'OpenSSH'}, loopback.
Load average (1 min) at start / after the SSH rows / at the end: ${loadBefore} / ${loadMid} / ${loadAfter} (other work
shares this 2-core machine; the tails grow with it). Client: the web's ssh2 GluePort (pinned ed25519 host key,
ed25519 client key). Servers: the built-in ssh2 server (in the same process as the client here), and a real OpenSSH
sshd whose forced command runs \`kiln glue\`, either in-process (no KILN_GLUE_SOCKET: one node per request, as before)
or handed to the resident glue by bin/kiln-glue-forward (KILN_GLUE_SOCKET set). Backend: local, one finished build.
Calls are sequential (one in flight).

${table}

Target for the OpenSSH door (issue 13): p50 <= 100 ms, p99 <= 250 ms, on this loaded machine.

## What one forced command costs, without SSH (the options weighed)

From spawn to exit, \`build.status 1 1\` (not found, exit 3) on the bench's data directory, with the environment sshd
gives a forced command; ${START_RUNS} runs of each, interleaved. \`NODE_COMPILE_CACHE\` left ${start.compileCacheFiles} files in its
directory: Node 20 ignores it (\`module.enableCompileCache\` arrives in Node 22.1).

${startTable}

Reading it:
- A reused connection costs one SSH channel (open, exec, reply, exit-status, close) per call. Both ends set
  TCP_NODELAY: without it, Nagle plus delayed ACKs made the same reused-connection call take ~92 ms at p50.
- A new connection adds the TCP connect, key exchange, host key check and public-key authentication.
- The OpenSSH session itself (sshd forks, runs \`/bin/sh -c wrapper\`) costs a few ms. The old 514 ms p50 included
  ~0.4 s of this machine's root ~/.bashrc (pyenv), which Debian's bash reads under sshd; the test sshd now sets
  SHLVL=1 to skip it (a deployed glue user has /bin/sh).
- In-process, every request starts node and loads zod, pino, the config and the backend: zod alone costs more than
  the target. A lazy entry (a) cannot go below node + zod; Node 20 has no compile cache (b), and what it offers
  instead (a bundle, V8's code cache, a startup snapshot, which needs node:http made lazy by hand) still starts node
  and runs the app's module code each time.
- (c) The perl forwarder starts in a few ms and hands the request to the resident glue (the same dispatcher, already
  loaded); node as the forwarder would add node's own start (the stub row) and could not check the resident's uid.
- OpenSSH in-process rows use fewer calls (${OPENSSH_CALLS} reused, ${Math.ceil(OPENSSH_CALLS / 2)} new) because each takes a node start-up;
  pass \`npx tsx bench/glue.ts <calls> <openssh-calls> <start-runs>\` for more.
`;
  const out = path.join(REPO, 'bench', 'RESULTS-glue.md');
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
