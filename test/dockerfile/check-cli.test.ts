import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kilnRun, type Run } from '../helpers/kiln.js';
import { tempDir } from '../helpers/tmp.js';

/** `kiln sdk check` as an operator runs it, with the allowed bases set explicitly. */
function check(args: string[]): Promise<Run> {
  return kilnRun(['sdk', 'check', ...args], {
    KILN_SDK_BASES: 'debian:bookworm,debian:trixie',
    KILN_SDK_ALLOW_REMOTE_ADD: 'false',
  });
}

describe('kiln sdk check', () => {
  const t = tempDir('kiln-check-');
  afterAll(() => t.cleanup());
  const file = (name: string, text: string) => {
    const f = path.join(t.dir, name);
    writeFileSync(f, text);
    return f;
  };

  it('exits 0 on a clean Dockerfile, with or without --build-arg and --context', async () => {
    const df = file(
      'clean',
      'ARG SUITE=bookworm\nFROM debian:$SUITE AS build\nENV APP=/srv/app\nWORKDIR $APP\nFROM debian:bookworm\nCOPY --from=build /srv/app /srv/app\n',
    );
    const plain = await check(['--dockerfile', df]);
    expect(plain, plain.stderr).toMatchObject({ code: 0, stderr: '' });
    expect(plain.stdout).toMatch(/^ok: no findings \(2 stages; bases: debian:bookworm\)/);
    const other = await check(['--dockerfile', df, '--build-arg', 'SUITE=trixie', '--context', t.dir]);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout).toContain('bases: debian:trixie, debian:bookworm');
  });

  it('case 39: refuses hostile forms with their line numbers, on stdout and as policy_violation JSON on stderr', async () => {
    const df = file(
      'hostile',
      [
        'ARG IMG=debian:bookworm',
        'FROM $IMG AS a',
        'ARG U=http://169.254.169.254/latest/meta-data/',
        'ADD $U /x',
        'ONBUILD WORKDIR /proc/self/fd/7',
        'FROM a',
        'RUN --network=host curl http://jenkins:8080',
      ].join('\n'),
    );
    const r = await check(['--dockerfile', df, '--build-arg', 'IMG=10.0.0.5:5000/img']);
    expect(r.code).toBe(1);
    expect(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.replace(/:.*/, '')),
    ).toEqual(['line 2', 'line 4', 'line 5', 'line 7']);
    expect(r.stdout).toContain('line 2: FROM $IMG (10.0.0.5:5000/img) is not an allowed base image');
    const err = JSON.parse(r.stderr.trim().split('\n').pop()!) as {
      error: { code: string; message: string; findings: { line: number; message: string }[] };
    };
    expect(err.error.code).toBe('policy_violation');
    expect(err.error.message).toMatch(/line 4: ADD of a remote URL \(http:\/\/169\.254\.169\.254/);
    expect(err.error.findings.map((f) => f.line)).toEqual([2, 4, 5, 7]);
  });

  it('keeps control characters of the Dockerfile off the terminal', async () => {
    const r = await check(['--dockerfile', file('ctl', 'FROM debian:bookworm\nWORKDIR /proc/\x1b[2Jx\n')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('WORKDIR /proc/\\x1b[2Jx is not allowed');
    expect(r.stdout).not.toContain('\x1b');
  });

  it('says what is wrong with its arguments (exit 2)', async () => {
    const df = file('ok', 'FROM debian:bookworm\n');
    expect(await check([])).toMatchObject({ code: 2 });
    const missing = await check(['--dockerfile', path.join(t.dir, 'nope')]);
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.stderr).error.code).toBe('invalid_input');
    expect((await check(['--dockerfile', df, '--context', path.join(t.dir, 'nope')])).code).toBe(2);
    expect((await check(['--dockerfile', df, '--build-arg', 'no-equals'])).code).toBe(2);
  });
});
