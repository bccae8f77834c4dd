import { spawnSync } from 'node:child_process';
import { promises as fsp, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { baseRecipe, ensureBase } from '../../src/sdk/base.js';
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
  try { f(); } catch (e) { return e; }
  throw new Error('expected an error');
}

describe('base recipes', () => {
  it('debian uses the mirror, or snapshot.debian.org when a snapshot date is set', () => {
    expect(baseRecipe('debian:trixie', { mirror: 'http://m/debian' })).toEqual({ mirror: 'http://m/debian', suite: 'trixie' });
    expect(baseRecipe('debian:bookworm', { mirror: 'http://m/debian', snapshot: '20261101T000000Z' }).mirror)
      .toBe('http://snapshot.debian.org/archive/debian/20261101T000000Z/');
  });

  it('devuan needs its mirror and uses its own keyring', () => {
    const e = thrown(() => baseRecipe('devuan:daedalus', { mirror: 'http://m/debian' }));
    expect(isKilnError(e, 'invalid_input')).toBe(true);
    expect((e as Error).message).toContain('sdk.devuanMirror');
    expect(baseRecipe('devuan:daedalus', { mirror: 'x', devuanMirror: 'http://d/merged', devuanKeyring: '/k.gpg' }))
      .toEqual({ mirror: 'http://d/merged', suite: 'daedalus', keyring: '/k.gpg' });
  });

  it('refuses names it cannot make (no registry pulls)', () => {
    for (const n of ['ubuntu:noble', 'debian', 'debian:../x', 'docker.io/library/debian:bookworm']) {
      expect(isKilnError(thrown(() => baseRecipe(n, { mirror: 'x' })), 'invalid_input'), n).toBe(true);
    }
  });
});

describe('making a Devuan base', () => {
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

  it('without the keyring: a clear error before any download, nothing left behind', async () => {
    const work = path.join(t.dir, 'work');
    await fsp.mkdir(work);
    const rep = new Reporter(undefined, 1 << 20, () => undefined);
    const missing = path.join(t.dir, 'no-such-keyring.gpg');
    const err = await ensureBase(docker, 'devuan:kiln-test-none', { mirror: 'x', devuanMirror: 'http://127.0.0.1:9/merged', devuanKeyring: missing }, work, rep)
      .then(() => undefined, (e: unknown) => e);
    expect(isKilnError(err, 'invalid_input')).toBe(true);
    expect((err as Error).message).toContain(missing);
    expect((err as Error).message).toContain('devuan-keyring');
    expect(readdirSync(work)).toEqual([]);
    expect(await docker.getImage('devuan:kiln-test-none').inspect().then(() => true, () => false)).toBe(false);
  });

  it('kiln sdk build of a Devuan Dockerfile without a Devuan mirror fails with a result.json that says so', () => {
    const df = path.join(t.dir, 'Dockerfile');
    writeFileSync(df, 'FROM devuan:daedalus\nRUN true\n');
    const out = path.join(t.dir, 'out');
    const r = spawnSync(path.join(repo, 'bin/kiln'), ['sdk', 'build', '--dockerfile', df, '--out', out, '--format', 'raw'], {
      env: { ...process.env, KILN_SDK_BASES: 'debian:bookworm,devuan:daedalus', KILN_SDK_DEVUAN_MIRROR: '' },
      encoding: 'utf8', timeout: 120_000,
    });
    expect(r.status).not.toBe(0);
    const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as { ok: boolean; error: { code: string; message: string } };
    expect(result.ok).toBe(false);
    expect(result.error.code).toBe('invalid_input');
    expect(result.error.message).toContain('needs a Devuan mirror');
    expect(readdirSync(out).filter((f) => /^image\./.test(f))).toEqual([]);
  });
});
