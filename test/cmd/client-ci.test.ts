/**
 * A CI job simulated from a shell: test/cmd/ci-job.sh (what the README's pipeline snippets run) against the real
 * `kiln serve` process, with the fake SDK (test/helpers/glue.ts; the real SDK's run of the same job is in
 * test/e2e/embedded.test.ts). The token is made as the README says, with `kiln user token` on the server's machine.
 * The script gets its arguments as argv and the settings as environment variables, as a CI runner passes them.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFakeSdk } from '../helpers/glue.js';
import { kiln, kilnRun, type Run } from '../helpers/kiln.js';
import { startKilnServe, type KilnServe } from '../helpers/serve.js';
import { tempDir } from '../helpers/tmp.js';
import { ciEnv, runKiln } from '../helpers/client.js';

const JOB = path.resolve(import.meta.dirname, 'ci-job.sh');

describe('a CI job simulated from a shell: kiln client build --wait --download against kiln serve, then kiln verify', () => {
  const tmp = tempDir('kiln-ci-job-');
  const data = path.join(tmp.dir, 'data');
  let serve: KilnServe;
  let env: Record<string, string>;

  /** Runs the job script: `bash ci-job.sh KILN NAME DOCKERFILE CONTEXT OUT --skip-sbom` with the CI's variables. */
  const job = (name: string, out: string, ci: Record<string, string>): Promise<Run> =>
    new Promise((resolve, reject) => {
      const dockerfile = path.join(tmp.dir, `${name}.Dockerfile`);
      // The fake SDK's image is no disk to read a dpkg database from: the SBOM check belongs to the real e2e run.
      const p = spawn('bash', [JOB, kiln, name, dockerfile, path.join(tmp.dir, 'ctx'), out, '--skip-sbom'], {
        env: { ...env, ...ci },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  beforeAll(async () => {
    const sdk = writeFakeSdk(tmp.dir)[0]!;
    serve = await startKilnServe(tmp.dir, {
      KILN_DATA_DIR: data,
      KILN_GLUE_SDK_COMMAND: sdk,
      KILN_SDK_FORMATS: 'raw',
    });
    // Bootstrapping the pipeline from the server's shell: a user and a build-scoped token for it.
    const server = { KILN_DATA_DIR: data, KILN_LOG_LEVEL: 'silent' };
    expect((await kilnRun(['user', 'add', 'ci-bot'], server)).code).toBe(0);
    const t = await kilnRun(['user', 'token', 'ci-bot', '--scope', 'build', '--name', 'pipeline'], server);
    expect(t.code, t.stderr).toBe(0);
    env = ciEnv({ KILN_URL: serve.url, KILN_TOKEN: t.stdout.trim() });

    mkdirSync(path.join(tmp.dir, 'ctx/app'), { recursive: true });
    writeFileSync(path.join(tmp.dir, 'ctx/app/hello.txt'), 'hello\n');
    writeFileSync(path.join(tmp.dir, 'ctx/.dockerignore'), '*.secret\n');
    writeFileSync(path.join(tmp.dir, 'ctx/token.secret'), 'never uploaded\n');
    const df = (name: string, text: string) => writeFileSync(path.join(tmp.dir, `${name}.Dockerfile`), text);
    df('app', 'FROM debian:bookworm\n# fake-packages: a=1 b=2\n# fake-lines: 3\nCOPY app /app\n');
    df('broken', 'FROM debian:bookworm\n# fake: fail\nRUN true\n');
    df('refused', 'FROM debian:bookworm\nRUN --network=host true\n');
  });
  afterAll(async () => {
    await serve?.stop();
    tmp.cleanup();
  });

  const builds = async (name: string): Promise<Array<{ id: number; state: string }>> => {
    const r = await runKiln(['client', 'list', '--dockerfile', name, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { builds: Array<{ id: number; state: string }> }).builds;
  };

  it('the job builds, streams the log, downloads verified artifacts, and kiln verify accepts them: exit 0', async () => {
    const out = path.join(tmp.dir, 'out-1');
    const r = await job('app', out, { CI_JOB_ID: '1001' });
    expect(r.code, r.stderr).toBe(0);
    // The build's log on stdout, as it ran.
    expect(r.stdout).toMatch(/^line 1\nline 2\nline 3\n/m);
    expect(r.stdout).toContain('[kiln] build succeeded');
    expect(r.stderr).toMatch(/build context .*: 3 entries, 1 left out by \.dockerignore/);
    expect(r.stderr).toMatch(/downloaded \d+ files of build \d+ .*checksums and signature verified/);
    // kiln verify's report follows the log on stdout.
    const report = JSON.parse(r.stdout.slice(r.stdout.indexOf('{\n'))) as {
      ok: boolean;
      checks: Array<{ name: string; ok: boolean }>;
    };
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['sha256 image.raw', 'sha256 sbom.spdx.json', 'signature']),
    );
    expect(readdirSync(out).sort()).toEqual(
      ['SHA256SUMS', 'SHA256SUMS.sig', 'image.raw', 'manifest.json', 'result.json', 'sbom.spdx.json'].sort(),
    );
    expect(readFileSync(path.join(out, 'image.raw'), 'utf8')).toBe('RAW-IMAGE-BYTES');
    // The context Kiln stored: what .dockerignore leaves, packed by the client (the secret never left the job).
    const res = await fetch(`${serve.url}/api/v1/dockerfiles/app`, {
      headers: { authorization: `Bearer ${env.KILN_TOKEN}` },
    });
    const df = (await res.json()) as { dockerfile: { context: { entries: Array<{ name: string }> } } };
    expect(df.dockerfile.context.entries.map((e) => e.name)).toEqual(['.dockerignore', 'app', 'app/hello.txt']);
  });

  it('the same job retried (same CI_JOB_ID) gets the build it already made; the next job builds again', async () => {
    const before = await builds('app');
    expect(before).toHaveLength(1);
    const again = await job('app', path.join(tmp.dir, 'out-2'), { CI_JOB_ID: '1001' });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(
      new RegExp(`build ${before[0]!.id} was already requested with this idempotency key \\(from CI_JOB_ID\\)`),
    );
    expect(await builds('app')).toEqual(before);
    const next = await job('app', path.join(tmp.dir, 'out-3'), { CI_JOB_ID: '1002' });
    expect(next.code, next.stderr).toBe(0);
    expect((await builds('app')).map((b) => b.state)).toEqual(['succeeded', 'succeeded']);
  });

  it('a broken Dockerfile: the job exits 1 and prints the failing line; nothing is downloaded', async () => {
    const out = path.join(tmp.dir, 'out-broken');
    const r = await job('broken', out, { CI_JOB_ID: '1003' });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Step 2/2 : RUN true');
    expect(r.stderr).toMatch(/build \d+ failed: RUN step 2 failed: exit 100/);
    expect(r.stderr).toContain('the failing Dockerfile line is 3 (stage build): RUN true');
    expect(existsSync(out)).toBe(false);
  });

  it("a Dockerfile the policy refuses: the job exits 4 and prints the finding's line; no build is made", async () => {
    const out = path.join(tmp.dir, 'out-refused');
    const r = await job('refused', out, { CI_JOB_ID: '1004' });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('line 2: RUN --network is not allowed');
    expect(existsSync(out)).toBe(false);
    const list = await runKiln(['client', 'list', '--json'], env);
    expect(
      JSON.parse(list.stdout).builds.map((b: { dockerfile: { name: string } }) => b.dockerfile.name),
    ).not.toContain('refused');
  });
});
