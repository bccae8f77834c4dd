import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { diagnoseBoot, explain, failedUnits } from '../../src/sdk/boot-diagnosis.js';
import { tempDir } from '../helpers/tmp.js';

const repo = path.resolve(import.meta.dirname, '../..');
const t = tempDir('kiln-sdk-diag-');
afterAll(() => t.cleanup());

const KERNEL = '[    0.000000] Linux version 6.1.0-40-amd64 (debian-kernel@lists.debian.org)\n';

describe('boot diagnosis from the serial console', () => {
  it.each([
    [
      'Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)',
      /could not mount the root filesystem/,
      /MODULES=most/,
    ],
    [
      'Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.',
      /no init program/,
      /systemd-sysv/,
    ],
    [
      'Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100',
      /init program \(\/sbin\/init\) exited/,
      /real init/,
    ],
    [
      'Gave up waiting for root file system device.  Common problems:\nALERT!  LABEL=root does not exist.  Dropping to a shell!',
      /could not find the root partition/,
      /MODULES=most/,
    ],
    ['You are in emergency mode. After logging in, type "journalctl -xb"', /emergency mode/, /fstab/],
    ['[  OK  ] Reached target multi-user.target - Multi-User System.', /nothing offered a login/, /serial-getty@ttyS0/],
  ])('%s', (line, what, fix) => {
    const f = diagnoseBoot(`${KERNEL}[    5.1] something\n${line}\n`)!;
    expect(f.what).toMatch(what);
    expect(f.fix).toMatch(fix);
    expect(f.evidence.length).toBeGreaterThan(10);
    expect(line).toContain(f.evidence);
  });

  it('no kernel output at all points at the firmware and boot loader', () => {
    expect(diagnoseBoot('SeaBIOS (version 1.16.2-debian)\nBooting from Hard Disk...\n')?.what).toMatch(
      /kernel never wrote/,
    );
  });

  it('a normal boot has nothing to say; failed units are listed once, colours stripped', () => {
    expect(diagnoseBoot(`${KERNEL}[    9.0] systemd[1]: Started foo.service.\n`)).toBeUndefined();
    const serial =
      `${KERNEL}\x1b[0;1;31mFAILED\x1b[0m] Failed to start networking.service - Raise network interfaces.\n` +
      '[FAILED] Failed to start networking.service - Raise network interfaces.\n[FAILED] Failed to start kiln-app.service\n';
    expect(failedUnits(serial)).toEqual(['networking.service', 'kiln-app.service']);
    expect(explain(serial)).toBe('failed units: networking.service, kiln-app.service');
  });
});

describe('a real image whose /sbin/init returns', () => {
  it('fails its boot test at once, and the reason says why and what to change', async () => {
    const df = path.join(t.dir, 'Dockerfile');
    // debian-minimal's kernel layer (shared through the engine's cache), then an init that exits.
    const base = await fsp.readFile(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');
    await fsp.writeFile(df, `${base}\nRUN ln -sf /bin/true /sbin/init\n`);
    const out = path.join(t.dir, 'out');
    const code = await new Promise<number | null>((resolve, reject) => {
      const p = spawn(
        path.join(repo, 'bin/kiln'),
        ['sdk', 'build', '--dockerfile', df, '--out', out, '--format', 'raw', '--boot-firmware', 'bios'],
        { stdio: 'ignore' },
      );
      p.on('error', reject);
      p.on('close', resolve);
    });
    const result = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(code).toBe(1);
    expect(result.ok).toBe(false);
    expect(result.bootTests[0].passed).toBe(false);
    expect(result.bootTests[0].reason).toMatch(/init program \(\/sbin\/init\) exited/);
    expect(result.bootTests[0].reason).toMatch(/Attempted to kill init/);
    expect(result.error.message).toMatch(
      /BIOS boot test of image\.raw failed: .*Fix: \/sbin\/init must be a real init/,
    );
    // Stopped at the panic (a dead end), not at the boot timeout, whose reason would say "within 300 s".
    expect(result.bootTests[0].reason).toMatch(/^the boot reached a dead end/);
  }, 900_000);
});
