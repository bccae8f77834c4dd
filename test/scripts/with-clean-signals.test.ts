import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const script = path.resolve(import.meta.dirname, '../../scripts/with-clean-signals');

/**
 * The signals `grep` run as given has blocked and ignored, as masks. Of the ignored ones only 1-31: glibc reserves
 * 32 and 33 for itself and refuses to change them (coreutils' env and perl alike), and a runner may hand one on
 * ignored (seen in a CI-like run: 32).
 */
function signalState(argv: string[]): { blocked: bigint; ignored: bigint } {
  const r = spawnSync('env', [...argv, 'grep', '-E', '^Sig(Blk|Ign):', '/proc/self/status'], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const f = Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/:\s+/) as [string, string]),
  );
  return { blocked: BigInt(`0x${f.SigBlk}`), ignored: BigInt(`0x${f.SigIgn}`) & 0x7fffffffn };
}

describe('scripts/with-clean-signals (how scripts/ensure-dockerd.sh starts the engine)', () => {
  it('runs its command with no signal blocked or ignored (1-31), whatever its caller blocked or ignored', () => {
    const dirty = ['--block-signal=USR1', '--block-signal=CHLD', '--ignore-signal=USR2', '--ignore-signal=HUP'];
    // The premise: env really hands these on (else the check below proves nothing).
    expect(signalState(dirty)).toEqual({ blocked: (1n << 9n) | (1n << 16n), ignored: (1n << 11n) | 1n });
    expect(signalState([...dirty, script])).toEqual({ blocked: 0n, ignored: 0n });
  });

  it('passes its arguments through as they are, and fails clearly for a missing program', () => {
    const r = spawnSync(script, ['printf', '%s|', 'a b', '$HOME', ''], { encoding: 'utf8' });
    expect(r.stdout).toBe('a b|$HOME||');
    const missing = spawnSync(script, ['/nonexistent/program'], { encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('with-clean-signals: cannot run /nonexistent/program');
  });
});
