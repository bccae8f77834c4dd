/**
 * The boot tests: every image in QEMU until its login prompt (and the image's own program, when it has one). BIOS
 * for every format; UEFI once for the disk formats (raw and qcow2 hold the same bytes) when the disk has an ESP,
 * and once for the ISO when it has its EFI image; UEFI only when OVMF is installed.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../../shared/errors.js';
import type { AppBootCheck } from '../app.js';
import { bootTest } from '../boot-test.js';
import type { DiskLayout } from '../disk.js';
import type { ConsoleExpectation } from '../expect-console.js';
import type { DiskImage } from './disk.js';
import { exists, type BuildRun } from './run.js';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/**
 * Boots each image; every result goes into run.bootTests as it comes (result.json lists them even when the build
 * then fails). Throws build_failed naming the first test that failed.
 */
export async function bootTests(
  run: BuildRun,
  images: DiskImage[],
  layout: DiskLayout,
  iso: { uefi: boolean } | undefined,
  appBoot: AppBootCheck | undefined,
  expectText: ConsoleExpectation[],
): Promise<void> {
  const results = run.bootTests;
  const { o, s, rep, outDir, work } = run;
  const wantFw = o.bootFirmware ?? ['bios', 'uefi'];
  const ovmf = wantFw.includes('uefi') && (await exists(OVMF_CODE)) && (await exists(OVMF_VARS));
  const disks = images.filter((im) => im.format !== 'iso');
  const isoImage = images.find((im) => im.format === 'iso');
  const runs = [
    ...(wantFw.includes('bios') ? images.map((im) => ({ im, firmware: 'bios' as const })) : []),
    ...(ovmf && layout.label === 'gpt' && disks[0] ? [{ im: disks[0], firmware: 'uefi' as const }] : []),
    ...(ovmf && iso?.uefi && isoImage ? [{ im: isoImage, firmware: 'uefi' as const }] : []),
  ];
  await rep.stage(
    'boot',
    80,
    `boot tests: ${runs.map((r) => `${r.im.name} (${r.firmware})`).join(', ')}, ${s.accel}`,
    async () => {
      for (const [i, { im, firmware }] of runs.entries()) {
        rep.progress('boot', 80 + (i * 18) / runs.length, `booting ${im.name} (${firmware})`);
        let vars: string | undefined;
        if (firmware === 'uefi') {
          vars = path.join(work, 'OVMF_VARS.fd');
          await fsp.copyFile(OVMF_VARS, vars);
        }
        const res = await bootTest({
          image: im.file,
          artifact: im.name,
          format: im.format === 'iso' ? 'raw' : im.format,
          media: im.format === 'iso' ? 'cdrom' : 'disk',
          accel: s.accel,
          timeoutSeconds: s.bootTimeoutSeconds,
          firmware,
          ovmfCode: OVMF_CODE,
          ovmfVars: vars,
          serialLogFile: path.join(outDir, `serial-${im.name}${firmware === 'uefi' ? '-uefi' : ''}.log`),
          expect: appBoot?.expect ?? [],
          expectText,
          failOn: appBoot?.failOn ?? [],
          lingerMs: appBoot ? 3000 : 0,
          signal: o.signal,
        });
        results.push(res);
        rep.log(
          `[kiln] boot test ${im.name} (${firmware}): ${res.passed ? 'passed' : 'FAILED'} in ${res.seconds} s${res.reason ? ` (${res.reason})` : ''}`,
        );
      }
    },
  );
  const failed = results.find((b) => !b.passed);
  if (failed)
    throw new KilnError(
      'build_failed',
      `The ${failed.firmware.toUpperCase()} boot test of ${failed.artifact} failed: ${failed.reason ?? 'unknown reason'}`,
    );
}
