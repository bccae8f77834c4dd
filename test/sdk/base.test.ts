import { spawnSync } from 'node:child_process';
import { promises as fsp, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { baseRecipe, ensureBase, SLIM_DPKG_CFG, SLIM_EXCLUDES, SLIM_INCLUDES } from '../../src/sdk/base.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { isKilnError } from '../../src/shared/errors.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Where bases come from. No Devuan mirror is reachable from these machines, so the Devuan path is proven up to the
 * point where it would download: the recipe, and the clear errors when its mirror or keyring is missing.
 */
const repo = path.resolve(import.meta.dirname, '../..');
const t = tempDir('kiln-sdk-base-');
afterAll(() => t.cleanup());

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

describe('base recipes', () => {
  it('debian uses the mirror, or snapshot.debian.org when a snapshot date is set', () => {
    expect(baseRecipe('debian:trixie', { mirror: 'http://m/debian' })).toEqual({
      mirror: 'http://m/debian',
      suite: 'trixie',
      slim: false,
    });
    expect(baseRecipe('debian:bookworm', { mirror: 'http://m/debian', snapshot: '20261101T000000Z' }).mirror).toBe(
      'http://snapshot.debian.org/archive/debian/20261101T000000Z/',
    );
  });

  it('devuan needs its mirror and uses its own keyring', () => {
    const e = thrown(() => baseRecipe('devuan:daedalus', { mirror: 'http://m/debian' }));
    expect(isKilnError(e, 'invalid_input')).toBe(true);
    expect((e as Error).message).toContain('sdk.devuanMirror');
    expect(
      baseRecipe('devuan:daedalus', { mirror: 'x', devuanMirror: 'http://d/merged', devuanKeyring: '/k.gpg' }),
    ).toEqual({ mirror: 'http://d/merged', suite: 'daedalus', slim: false, keyring: '/k.gpg' });
  });

  it('a -slim name is the same suite, slimmed', () => {
    expect(baseRecipe('debian:bookworm-slim', { mirror: 'http://m/debian' })).toEqual({
      mirror: 'http://m/debian',
      suite: 'bookworm',
      slim: true,
    });
    expect(
      baseRecipe('devuan:daedalus-slim', { mirror: 'x', devuanMirror: 'http://d/merged', devuanKeyring: '/k.gpg' }),
    ).toMatchObject({ suite: 'daedalus', slim: true });
    expect(
      isKilnError(
        thrown(() => baseRecipe('debian:-slim', { mirror: 'x' })),
        'invalid_input',
      ),
    ).toBe(true);
  });

  it("slim's dpkg exclusions are debuerreotype's lists (what Docker's -slim images carry), as dpkg.cfg lines", () => {
    // debuerreotype scripts/.slimify-excludes and .slimify-includes, sorted as its slimify script sorts them.
    expect(SLIM_EXCLUDES).toEqual([
      '/usr/share/doc/*',
      '/usr/share/doc/kde/HTML/*/*',
      '/usr/share/gnome/help/*/*',
      '/usr/share/info/*',
      '/usr/share/linda/*',
      '/usr/share/lintian/overrides/*',
      '/usr/share/locale/*',
      '/usr/share/man/*',
      '/usr/share/omf/*/*-*.emf',
    ]);
    expect(SLIM_INCLUDES).toEqual([
      '/usr/share/doc/*/copyright',
      '/usr/share/doc/kde/HTML/C/*',
      '/usr/share/gnome/help/*/C/*',
      '/usr/share/locale/all_languages',
      '/usr/share/locale/currency/*',
      '/usr/share/locale/l10n/*',
      '/usr/share/locale/languages',
      '/usr/share/locale/locale.alias',
      '/usr/share/omf/*/*-C.emf',
    ]);
    const lines = SLIM_DPKG_CFG.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines).toEqual([
      ...SLIM_EXCLUDES.map((p) => `path-exclude ${p}`),
      ...SLIM_INCLUDES.map((p) => `path-include ${p}`),
    ]);
  });

  it('refuses names it cannot make (no registry pulls)', () => {
    for (const n of ['ubuntu:noble', 'debian', 'debian:../x', 'docker.io/library/debian:bookworm']) {
      expect(
        isKilnError(
          thrown(() => baseRecipe(n, { mirror: 'x' })),
          'invalid_input',
        ),
        n,
      ).toBe(true);
    }
  });
});

describe('reusing a base the engine has', () => {
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

  it("a Kiln base under another base's name is refused, not taken for that base", async () => {
    const rep = new Reporter(undefined, 1 << 20, () => undefined);
    await ensureBase(docker, 'debian:bookworm', { mirror: 'http://deb.debian.org/debian' }, t.dir, rep);
    // What `docker tag debian:bookworm debian:<other>-slim` would leave: Kiln's labels, one layer, the wrong kind.
    const name = `debian:kilntest${process.pid}-slim`;
    await docker.getImage('debian:bookworm').tag({ repo: 'debian', tag: name.slice('debian:'.length) });
    try {
      const err = await ensureBase(docker, name, { mirror: 'http://deb.debian.org/debian' }, t.dir, rep).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isKilnError(err, 'backend_unavailable')).toBe(true);
      expect((err as Error).message).toContain('is a Kiln base of another kind (bookworm, minbase)');
    } finally {
      // Only the tag this test made: the image stays (debian:bookworm still names it).
      await docker.getImage(name).remove({ noprune: true });
    }
  }, 600_000);
});

describe('making a Devuan base', () => {
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

  it('without the keyring: a clear error before any download, nothing left behind', async () => {
    const work = path.join(t.dir, 'work');
    await fsp.mkdir(work);
    const rep = new Reporter(undefined, 1 << 20, () => undefined);
    const missing = path.join(t.dir, 'no-such-keyring.gpg');
    const err = await ensureBase(
      docker,
      'devuan:kiln-test-none',
      { mirror: 'x', devuanMirror: 'http://127.0.0.1:9/merged', devuanKeyring: missing },
      work,
      rep,
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKilnError(err, 'invalid_input')).toBe(true);
    expect((err as Error).message).toContain(missing);
    expect((err as Error).message).toContain('devuan-keyring');
    expect(readdirSync(work)).toEqual([]);
    expect(
      await docker
        .getImage('devuan:kiln-test-none')
        .inspect()
        .then(
          () => true,
          () => false,
        ),
    ).toBe(false);
  });

  it('kiln sdk build of a Devuan Dockerfile without a Devuan mirror fails with a result.json that says so', () => {
    const df = path.join(t.dir, 'Dockerfile');
    writeFileSync(df, 'FROM devuan:daedalus\nRUN true\n');
    const out = path.join(t.dir, 'out');
    const r = spawnSync(
      path.join(repo, 'bin/kiln'),
      ['sdk', 'build', '--dockerfile', df, '--out', out, '--format', 'raw'],
      {
        env: { ...process.env, KILN_SDK_BASES: 'debian:bookworm,devuan:daedalus', KILN_SDK_DEVUAN_MIRROR: '' },
        encoding: 'utf8',
        timeout: 120_000,
      },
    );
    expect(r.status).not.toBe(0);
    const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as {
      ok: boolean;
      error: { code: string; message: string };
    };
    expect(result.ok).toBe(false);
    expect(result.error.code).toBe('invalid_input');
    expect(result.error.message).toContain('needs a Devuan mirror');
    expect(readdirSync(out).filter((f) => /^image\./.test(f))).toEqual([]);
  });
});
