import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const script = path.resolve(import.meta.dirname, '../../scripts/with-clean-signals');

/**
 * Ignores the given signals with the raw rt_sigaction system call, then runs argv: the way CI's runner hands on
 * signal 32 ignored, which glibc (so coreutils' env) refuses to touch.
 */
function ignoringRaw(signals: number[], argv: string[]): string[] {
  const perl = `my $act = pack("Q4", 1, 0, 0, 0);
    for my $s (${signals.join(',')}) { syscall(13, $s + 0, $act, 0, 8) == 0 or die "rt_sigaction($s): $!" }
    exec { $ARGV[0] } @ARGV or die "exec: $!"`;
  return ['perl', '-e', perl, ...argv];
}

/** The signals `grep` run after argv has blocked and ignored, as masks. */
function signalState(argv: string[]): { blocked: bigint; ignored: bigint } {
  const [cmd, ...args] = [...argv, 'grep', '-E', '^Sig(Blk|Ign):', '/proc/self/status'];
  const r = spawnSync(cmd!, args, { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const f = Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/:\s+/) as [string, string]),
  );
  return { blocked: BigInt(`0x${f.SigBlk}`), ignored: BigInt(`0x${f.SigIgn}`) };
}

describe('scripts/with-clean-signals (how scripts/ensure-dockerd.sh starts the engine)', () => {
  it('runs its command with no signal blocked or ignored, whatever its caller blocked or ignored', () => {
    const dirty = ['env', '--block-signal=USR1', '--block-signal=CHLD', '--ignore-signal=USR2', '--ignore-signal=HUP'];
    // The premise: env really hands these on (else the check below proves nothing), over what this test itself was
    // handed (a CI runner's signal 32, ignored).
    const base = signalState([]);
    expect(signalState(dirty)).toEqual({
      blocked: base.blocked | (1n << 9n) | (1n << 16n),
      ignored: base.ignored | (1n << 11n) | 1n,
    });
    expect(signalState([...dirty, script])).toEqual({ blocked: 0n, ignored: 0n });
  });

  it("resets 32 and 33 too, which glibc reserves (CI's runner hands on 32 ignored; dockerd passed it to containers)", () => {
    const dirty = ignoringRaw([32, 33, 40], []);
    const base = signalState([]);
    expect(signalState(dirty)).toEqual({
      blocked: base.blocked,
      ignored: base.ignored | (1n << 31n) | (1n << 32n) | (1n << 39n),
    });
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
