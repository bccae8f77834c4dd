import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kilnRun, type Run } from '../helpers/kiln.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Base names as CI writes them, through the real SDK and engine: one build whose stages start from
 * `docker.io/library/debian:bookworm-slim`, `debian:${V}` with V=12, a point release and a dated tag. Each stage
 * installs `hello` (docs, a man page, an info page, translations) and lists what of it landed, so the same build
 * shows that -slim's dpkg exclusions hold for a user's own apt-get and that the non-slim base keeps everything.
 * Format tar only: no disk boot (the boot of a mapped name is in test/e2e/base-names.test.ts).
 */
const DOCKERFILE = `ARG V=12
FROM docker.io/library/debian:bookworm-slim AS slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hello \\
 && { find /usr/share/doc/hello /usr/share/man /usr/share/info /usr/share/locale -path '*hello*' | sort; ls /etc/dpkg/dpkg.cfg.d; } > /hello-files.txt
FROM debian:12.5 AS point
FROM debian:bookworm-20240513 AS dated
FROM debian:\${V}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hello \\
 && { find /usr/share/doc/hello /usr/share/man /usr/share/info /usr/share/locale -path '*hello*' | sort; ls /etc/dpkg/dpkg.cfg.d; } > /hello-files-full.txt
COPY --from=slim /hello-files.txt /hello-files-slim.txt
`;

interface BaseRecord {
  name: string;
  id: string;
  suite: string;
  mirror: string;
  slim: boolean;
  requestedAs: { line: number; written: string; image: string; via: string; mapping?: string }[];
}

describe('FROM debian:12 and FROM docker.io/library/debian:bookworm-slim build (real SDK and engine)', () => {
  const t = tempDir('kiln-sdk-basenames-');
  const out = path.join(t.dir, 'out');
  let run: Run;
  let log = '';
  let manifest: { baseImages: BaseRecord[] };
  let deps: { uri: string; digest: { sha256: string }; annotations: Record<string, unknown> }[];
  const fromTar = (name: string) =>
    execFileSync('tar', ['--zstd', '-xOf', path.join(out, 'rootfs.tar.zst'), `./${name}`], { encoding: 'utf8' });

  beforeAll(async () => {
    const df = path.join(t.dir, 'Dockerfile');
    await fsp.writeFile(df, DOCKERFILE);
    run = await kilnRun(['sdk', 'build', '--dockerfile', df, '--out', out, '--format', 'tar']);
    log = await fsp.readFile(path.join(out, 'build.log'), 'utf8');
    if (run.code === 0) {
      manifest = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8'));
      deps = JSON.parse(await fsp.readFile(path.join(out, 'provenance.json'), 'utf8')).predicate.buildDefinition
        .resolvedDependencies;
    }
  }, 30 * 60_000);
  afterAll(() => t.cleanup());

  it('builds', () => {
    expect(run.code, `${run.stderr}\n${log.slice(-4000)}`).toBe(0);
  });

  it('the build log says which base each FROM got: name as written -> Kiln base -> image id, suite, mirror, slim or not', () => {
    const id = (n: string) => manifest.baseImages.find((b) => b.name === n)!.id;
    expect(log).toContain(
      `[kiln] FROM docker.io/library/debian:bookworm-slim (line 2) -> Kiln base debian:bookworm-slim = ${id('debian:bookworm-slim')} (bookworm from http://deb.debian.org/debian, slim)`,
    );
    expect(log).toContain(
      `[kiln] FROM debian:\${V} (debian:12) (line 7) -> Kiln base debian:bookworm = ${id('debian:bookworm')} (bookworm from http://deb.debian.org/debian, not slim; via sdk.baseNames debian:12)`,
    );
    expect(log).toContain(
      '[kiln] debian:12.5 is a point release of debian:12: Kiln builds bookworm as http://deb.debian.org/debian has it now (set sdk.snapshot to pin a date), not the image Docker Hub published under that tag',
    );
    expect(log).toContain(
      '[kiln] debian:bookworm-20240513 is a dated tag of debian:bookworm: Kiln builds bookworm as http://deb.debian.org/debian has it now',
    );
    // The engine was given image ids, never the names: nothing for it to pull.
    expect(log).toMatch(/Step 2\/\d+ : FROM sha256:[0-9a-f]{64} AS slim/);
    expect(log).not.toMatch(/Step \d+\/\d+ : FROM (docker\.io|debian)/);
  });

  it('manifest.json and provenance.json name each base with the names the Dockerfile used for it', () => {
    const byName = Object.fromEntries(manifest.baseImages.map((b) => [b.name, b]));
    expect(Object.keys(byName).sort()).toEqual(['debian:bookworm', 'debian:bookworm-slim']);
    expect(byName['debian:bookworm-slim']).toMatchObject({
      suite: 'bookworm',
      slim: true,
      mirror: 'http://deb.debian.org/debian',
      requestedAs: [
        {
          line: 2,
          written: 'docker.io/library/debian:bookworm-slim',
          image: 'docker.io/library/debian:bookworm-slim',
          via: 'base',
        },
      ],
    });
    expect(byName['debian:bookworm']).toMatchObject({
      suite: 'bookworm',
      slim: false,
      requestedAs: [
        {
          line: 5,
          written: 'debian:12.5',
          image: 'debian:12.5',
          via: 'point-release',
          mapping: 'debian:12',
          source: 'config',
        },
        { line: 6, written: 'debian:bookworm-20240513', via: 'dated-tag', mapping: 'debian:bookworm' },
        { line: 7, written: 'debian:${V}', image: 'debian:12', via: 'name', mapping: 'debian:12', source: 'config' },
      ],
    });
    for (const b of manifest.baseImages) {
      const d = deps.find((x) => x.uri === `docker-image://${b.name}`)!;
      expect(`sha256:${d.digest.sha256}`).toBe(b.id);
      expect(d.annotations).toMatchObject({ suite: 'bookworm', slim: b.slim, mirror: 'http://deb.debian.org/debian' });
    }
    expect(deps.find((x) => x.uri === 'docker-image://debian:bookworm')!.annotations.requestedAs).toEqual([
      'debian:12.5',
      'debian:bookworm-20240513',
      'debian:12',
    ]);
  });

  it('-slim keeps its meaning: after apt-get install hello its docs, man and info pages and translations are absent, its copyright present; on the non-slim base all are there', () => {
    const slim = fromTar('hello-files-slim.txt').split('\n').filter(Boolean);
    expect(slim).toEqual(['/usr/share/doc/hello', '/usr/share/doc/hello/copyright', 'docker']);
    const full = fromTar('hello-files-full.txt').split('\n').filter(Boolean);
    expect(full).toEqual(
      expect.arrayContaining([
        '/usr/share/doc/hello/copyright',
        '/usr/share/doc/hello/NEWS.gz',
        '/usr/share/man/man1/hello.1.gz',
        '/usr/share/info/hello.info.gz',
      ]),
    );
    expect(full.some((f) => /^\/usr\/share\/locale\/[^/]+\/LC_MESSAGES\/hello\.mo$/.test(f))).toBe(true);
    expect(full).not.toContain('docker');
  });
});

describe('names the SDK refuses (no engine needed)', () => {
  const t = tempDir('kiln-sdk-basenames-no-');
  afterAll(() => t.cleanup());
  const check = async (text: string, ...args: string[]) => {
    const df = path.join(t.dir, `Dockerfile.${Math.random().toString(36).slice(2)}`);
    await fsp.writeFile(df, text);
    return kilnRun(['sdk', 'check', '--dockerfile', df, ...args]);
  };

  it('a digest is refused with the reason', async () => {
    const r = await check(`FROM debian:12@sha256:${'a'.repeat(64)}\n`);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('line 1: FROM debian:12@sha256:aaaa');
    expect(r.stdout).toContain("Docker Hub's exact bytes, which Kiln never uses");
    expect(r.stdout).toContain("without it, debian:12 means Kiln's base debian:bookworm");
  });

  it("the site's name for a base this host does not allow is refused by kiln sdk check and by kiln sdk build, before the engine", async () => {
    const text = 'FROM corp/debian:unstable\nRUN true\n';
    const ok = await check('FROM corp/debian:12\n', '--base-name', 'corp/debian:12=debian:bookworm');
    expect(ok.stdout).toContain('ok: no findings (1 stage; bases: debian:bookworm)');
    const c = await check(text, '--base-name', 'corp/debian:unstable=debian:sid');
    expect(c.code).toBe(1);
    expect(c.stdout).toContain(
      "line 1: FROM corp/debian:unstable is not an allowed base image: the site's admin maps it to debian:sid, which this build host does not allow",
    );
    const df = path.join(t.dir, 'Dockerfile.sid');
    await fsp.writeFile(df, text);
    const out = path.join(t.dir, 'out');
    const b = await kilnRun([
      'sdk',
      'build',
      '--dockerfile',
      df,
      '--out',
      out,
      '--format',
      'raw',
      '--base-name',
      'corp/debian:unstable=debian:sid',
    ]);
    expect(b.code).toBe(1);
    const res = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(res).toMatchObject({ ok: false, error: { code: 'policy_violation' } });
    expect(res.error.message).toContain("the site's admin maps it to debian:sid, which this build host does not allow");
    expect(res.stages.map((s: { name: string }) => s.name)).toEqual(['policy']);
  });

  it('--base-name takes NAME=BASE image names only', async () => {
    for (const bad of [
      'corp/debian:12',
      'corp/debian:12=debian:bookworm=x',
      '-x=debian:bookworm',
      'a b=debian:bookworm',
      `x=debian@sha256:${'a'.repeat(64)}`,
    ]) {
      const r = await check('FROM debian:12\n', `--base-name=${bad}`);
      expect(r.code, bad).toBe(2);
      expect(r.stderr, bad).toContain('--base-name must be NAME=BASE');
    }
  });
});
