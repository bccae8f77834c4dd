/**
 * The overhead the glue and Jenkins add to one triggered build: the web's SSH client calls job.build (glue ->
 * jenkins client -> the Jenkins double), follows build.status until the build is final, and we subtract the time
 * the same (instant) SDK command takes when run directly. The double keeps Jenkins' timing rules: the quiet period
 * (the glue triggers with `delay=1sec`, whatever the controller's default), executor pick-up, shell step, archiving.
 * Run: `make bench-jenkins` (or `npx tsx bench/jenkins.ts [builds]`). Writes bench/RESULTS-jenkins.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/index.js';
import { startGlueServer } from '../src/glue/index.js';
import { silentLogger } from '../src/shared/logger.js';
import { sshGlueClientFromConfig } from '../src/glue-client/ssh.js';
import { startJenkinsDouble } from '../test/jenkins-double/index.js';
import { fakeSpec, writeFakeSdk } from '../test/helpers/glue.js';
import { tempDir } from '../test/helpers/tmp.js';

const BUILDS = Number(process.argv[2] ?? 10);
const user = { name: 'kiln-glue', token: 'bench0123456789abcdef0123456789ab' };
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const r1 = (x: number) => Math.round(x * 10) / 10;

async function scenario(quiet: number, sdk: string[], dir: string) {
  const double = await startJenkinsDouble({
    users: [user],
    quietPeriodSeconds: quiet,
    dataDir: path.join(dir, `jenkins-q${quiet}`),
  });
  const cfg = loadConfig(
    {},
    {
      dataDir: path.join(dir, `glue-q${quiet}`),
      ssh: { host: '127.0.0.1', port: 0, timeoutMs: 60_000 },
      glue: { backend: 'jenkins', jenkins: { url: double.url, user: user.name, token: user.token, sdkCommand: sdk } },
    },
  );
  const glue = await startGlueServer(cfg, silentLogger);
  const client = await sshGlueClientFromConfig(cfg, { port: glue.port, hostFingerprint: glue.hostFingerprint });
  await client.call('job.put', [1], JSON.stringify(fakeSpec()));
  const toNumber: number[] = [];
  const toFinal: number[] = [];
  for (let i = 0; i < BUILDS; i++) {
    const t0 = performance.now();
    const { build } = await client.call('job.build', [1, `bench${quiet}x${i}xkey`]);
    toNumber.push(performance.now() - t0);
    for (;;) {
      const st = await client.call('build.status', [1, build]);
      if (st.state === 'succeeded') break;
      if (st.state === 'failed' || st.state === 'cancelled')
        throw new Error(`bench build ${build} ${st.state}: ${st.reason}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    toFinal.push(performance.now() - t0);
  }
  await client.close();
  await glue.close();
  await double.stop();
  return {
    quiet,
    toNumber: median(toNumber) / 1000,
    toFinal: median(toFinal) / 1000,
    max: Math.max(...toFinal) / 1000,
  };
}

async function main() {
  const tmp = tempDir('kiln-bench-jenkins-');
  try {
    const sdk = writeFakeSdk(tmp.dir);
    // The floor: the same SDK command run directly, as the job's shell step would.
    const out = path.join(tmp.dir, 'direct-out');
    mkdirSync(out);
    writeFileSync(path.join(tmp.dir, 'Dockerfile'), 'FROM debian:bookworm\n');
    const direct: number[] = [];
    for (let i = 0; i < BUILDS; i++) {
      const t0 = performance.now();
      spawnSync(sdk[0]!, ['--dockerfile', path.join(tmp.dir, 'Dockerfile'), '--out', out, '--format', 'raw']);
      direct.push(performance.now() - t0);
    }
    const floor = median(direct) / 1000;
    const rows = [await scenario(5, sdk, tmp.dir)];
    const lines = [
      '# Overhead of the glue and Jenkins on one triggered build',
      '',
      `Measured by \`bench/jenkins.ts\` on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}.`,
      "The web's SSH client calls `job.build` on the built-in glue (jenkins backend, real `jenkins` client) against the",
      'Jenkins double on loopback, then polls `build.status` every 50 ms until the build succeeded. The SDK is an',
      `instant script, so what remains is overhead. ${BUILDS} builds per row, one at a time; medians.`,
      '',
      `SDK run directly (the floor): ${r1(floor * 1000)} ms.`,
      '',
      '| trigger -> build number | trigger -> succeeded | max | overhead over the direct run |',
      '|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.toNumber.toFixed(2)} s | ${r.toFinal.toFixed(2)} s | ${r.max.toFixed(2)} s | ${(r.toFinal - floor).toFixed(2)} s |`,
      ),
      '',
      "Reading it: about 1 s is deliberate. The glue triggers with a 1 s quiet period (`delay=1sec`, so the controller's",
      'default of 5 s does not apply) and looks for a duplicate of the same idempotency key 0.6 s into it, so a retried',
      'trigger can withdraw its item before it starts: that is what makes "never two builds" hold. The rest (SSH call,',
      'API-token requests without crumbs, queue follow, executor start, shell step, archiving, status polls) is about',
      '0.25 s. Against a real image build (minutes: see RESULTS-sdk.md) the overhead is under 1 %.',
      '',
    ];
    writeFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS-jenkins.md'), lines.join('\n'));
    process.stdout.write(lines.join('\n'));
  } finally {
    tmp.cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
