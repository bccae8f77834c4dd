import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const script = path.resolve(import.meta.dirname, '../../scripts/with-clean-signals');

/** The signal lines of /proc/self/status of `grep` run as given. */
function signalState(argv: string[]): Record<string, string> {
  const r = spawnSync('env', [...argv, 'grep', '-E', '^Sig(Blk|Ign):', '/proc/self/status'], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/:\s+/) as [string, string]),
  );
}

describe('scripts/with-clean-signals (how scripts/ensure-dockerd.sh starts the engine)', () => {
  it('runs its command with no signal blocked or ignored, whatever its caller blocked or ignored', () => {
    const dirty = ['--block-signal=USR1', '--block-signal=CHLD', '--ignore-signal=USR2', '--ignore-signal=HUP'];
    // The premise: env really hands these on (else the check below proves nothing).
    expect(signalState(dirty)).not.toEqual({ SigBlk: '0000000000000000', SigIgn: '0000000000000000' });
    expect(signalState([...dirty, script])).toEqual({ SigBlk: '0000000000000000', SigIgn: '0000000000000000' });
  });

  it('passes its arguments through as they are, and fails clearly for a missing program', () => {
    const r = spawnSync(script, ['printf', '%s|', 'a b', '$HOME', ''], { encoding: 'utf8' });
    expect(r.stdout).toBe('a b|$HOME||');
    const missing = spawnSync(script, ['/nonexistent/program'], { encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('with-clean-signals: cannot run /nonexistent/program');
  });
});
