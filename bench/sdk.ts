/**
 * `make bench-sdk`: cold and warm end-to-end times of dockerfiles/debian-minimal by stage, the SDK's overhead (export
 * → disk → convert → checksums) against the floor of copying the same bytes (`docker export` of the built image read
 * to the end and dropped), and image sizes. Writes bench/RESULTS-sdk.md.
 *
 * Cold means: no base image and no layer cache. The existing debian:bookworm is kept under a temporary tag while
 * the SDK makes a fresh one (mmdebstrap + import), then put back, so other users of the engine keep their cache.
 * KILN_BENCH_COLD=0 skips the cold run.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Dockerode from 'dockerode';

const repo = path.resolve(import.meta.dirname, '..');
const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
const BASE = 'debian:bookworm';
const SAVED = 'kiln-bench-saved:bookworm';

interface Result {
  ok: boolean;
  error?: { message: string };
  artifacts: { name: string; size: number; allocated: number }[];
  bootTests: { artifact: string; firmware: string; seconds: number; passed: boolean }[];
  stages: { name: string; seconds: number }[];
}

function sh(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('close', (c) => resolve(c ?? 1));
  });
}

async function build(label: string): Promise<{ wall: number; result: Result; manifest: { image: { tag: string } } }> {
  const out = mkdtempSync(path.join(os.tmpdir(), `kiln-bench-${label}-`));
  const t0 = Date.now();
  const code = await sh(path.join(repo, 'bin/kiln'), [
    'sdk',
    'build',
    '--dockerfile',
    path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'),
    '--out',
    out,
    '--format',
    'raw,qcow2',
  ]);
  const wall = (Date.now() - t0) / 1000;
  const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as Result;
  // A failed build's directory (build.log, serial logs) is kept for diagnosis.
  if (code !== 0 || !result.ok) throw new Error(`${label} build failed: ${result.error?.message} (logs in ${out})`);
  const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as { image: { tag: string } };
  rmSync(out, { recursive: true, force: true });
  return { wall, result, manifest };
}

/** The copy floor: the same exported bytes read and dropped. */
async function exportFloor(image: string): Promise<{ seconds: number; bytes: number }> {
  const c = await docker.createContainer({ Image: image, Entrypoint: ['/none'], Cmd: [], NetworkDisabled: true });
  try {
    const t0 = Date.now();
    const stream = (await c.export()) as unknown as NodeJS.ReadableStream;
    let bytes = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) bytes += chunk.length;
    return { seconds: (Date.now() - t0) / 1000, bytes };
  } finally {
    await c.remove({ force: true });
  }
}

const stage = (r: Result, n: string) => r.stages.filter((s) => s.name === n).reduce((a, s) => a + s.seconds, 0);
const f1 = (n: number) => n.toFixed(1);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const load = os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  const runs: { label: string; wall: number; result: Result; manifest: { image: { tag: string } } }[] = [];
  // Warm first: base present; a first run that missed the layer cache (fresh machine) does not count. Several warm
  // runs, and the one with the median wall time is reported: this VM's disk and CPU are noisy.
  const warmCount = Math.max(1, Number(process.env.KILN_BENCH_WARM_RUNS ?? 3));
  let first = await build('warm');
  if (stage(first.result, 'build') > 10) first = await build('warm');
  const warmRuns = [first];
  while (warmRuns.length < warmCount) warmRuns.push(await build('warm'));
  const byWall = [...warmRuns].sort((a, b) => a.wall - b.wall);
  const warmRun = byWall[Math.floor((byWall.length - 1) / 2)]!;
  if (process.env.KILN_BENCH_COLD !== '0') {
    await docker.getImage(BASE).tag({ repo: 'kiln-bench-saved', tag: 'bookworm' });
    await docker.getImage(BASE).remove({ noprune: true });
    try {
      runs.push({ label: 'cold', ...(await build('cold')) });
    } finally {
      await docker.getImage(SAVED).tag({ repo: 'debian', tag: 'bookworm' });
      await docker.getImage(SAVED).remove({ noprune: true });
    }
  }
  runs.push({ label: 'warm', ...warmRun });
  const warm = runs.at(-1)!;
  const floors = [];
  for (let i = 0; i < 3; i++) floors.push(await exportFloor(warm.manifest.image.tag));
  const floor = floors.sort((a, b) => a.seconds - b.seconds)[1]!;

  const names = ['policy', 'base', 'build', 'export', 'finish', 'disk', 'convert', 'checksum', 'boot'];
  const overheadStages = ['export', 'finish', 'disk', 'convert', 'checksum'];
  const overhead = overheadStages.reduce((a, n) => a + stage(warm.result, n), 0);
  const raw = warm.result.artifacts.find((a) => a.name === 'image.raw')!;
  const q = warm.result.artifacts.find((a) => a.name === 'image.qcow2')!;
  const bootQcow2 = warm.result.bootTests.find((b) => b.artifact === 'image.qcow2' && b.firmware === 'bios')!;
  const toBootingQcow2 =
    warm.wall - warm.result.bootTests.filter((b) => b !== bootQcow2).reduce((a, b) => a + b.seconds, 0);

  const lines = [
    '# SDK benchmark: dockerfiles/debian-minimal',
    '',
    `Run ${new Date().toISOString()} on ${os.cpus().length} cores, load average at start ${load} (other work shares this machine).`,
    'Formats raw + qcow2; boot tests: BIOS for each format, UEFI once; TCG. Times in seconds.',
    '',
    `| stage | ${runs.map((r) => r.label).join(' | ')} |`,
    `|---|${runs.map(() => '---:').join('|')}|`,
    ...names.map((n) => `| ${n} | ${runs.map((r) => f1(stage(r.result, n))).join(' | ')} |`),
    `| **total (wall)** | ${runs.map((r) => `**${f1(r.wall)}**`).join(' | ')} |`,
    '',
    `Warm runs: ${warmRuns.length}; the table shows the median by wall time. All warm walls: ${warmRuns.map((r) => f1(r.wall)).join(', ')} s;`,
    `SDK overhead in each: ${warmRuns.map((r) => f1(overheadStages.reduce((a, n) => a + stage(r.result, n), 0))).join(', ')} s.`,
    '',
    `Boot tests (warm): ${warm.result.bootTests.map((b) => `${b.artifact} ${b.firmware} ${f1(b.seconds)} s`).join(', ')}.`,
    `Warm Dockerfile to a booting qcow2 (wall time without the other boot tests): **${f1(toBootingQcow2)} s** (target 42 s).`,
    '',
    '## SDK overhead against the copy floor (warm run)',
    '',
    `- SDK: ${overheadStages.join(' + ')} = **${f1(overhead)} s**`,
    `- Floor: \`docker export\` of the same image read and dropped: **${f1(floor.seconds)} s** (${mib(floor.bytes)}; median of ${floors.map((f) => f1(f.seconds)).join(', ')} s)`,
    `- Ratio: **${(overhead / floor.seconds).toFixed(2)}x** (target at most 2x)`,
    '',
    '## Sizes (warm run)',
    '',
    `- image.raw apparent ${mib(raw.size)}, allocated ${mib(raw.allocated)}`,
    `- image.qcow2 (zstd-compressed) ${mib(q.size)}`,
    '',
  ];
  const file = path.join(repo, 'bench/RESULTS-sdk.md');
  writeFileSync(file, lines.join('\n'));
  process.stdout.write(lines.join('\n') + `\nwritten to ${file}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench-sdk: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
