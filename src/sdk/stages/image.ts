/**
 * The image: the Dockerfile built by the engine (each FROM pinned to the base it was checked against, or to the
 * build-trust layer on it), its filesystem exported into the staging tree, and a bootable layer added when the
 * image lacks a kernel or an init.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { pinBaseImages } from '../../dockerfile/pin.js';
import { KilnError } from '../../shared/errors.js';
import type { ImageRuntimeConfig } from '../app.js';
import type { BaseImage } from '../base.js';
import { checkBootable, type BootCheck } from '../bootable.js';
import { trustLayers } from '../build-trust.js';
import { buildTag, dockerBuild } from '../docker-build.js';
import { imageInfo } from '../docker-util.js';
import { exportRootfs } from '../export.js';
import type { ExtractStats } from '../extract.js';
import { consoleExpectations, type ConsoleExpectation } from '../expect-console.js';
import { lstatIn } from '../fsroot.js';
import { treeStaging, type TreeStaging } from '../staging.js';
import type { CheckedInput } from './input.js';
import type { BuildRun } from './run.js';

/**
 * What the SDK adds when an image lacks a kernel or an init, per distribution family. Only what is missing: an
 * image that has sysvinit-core and no kernel must not get systemd-sysv, which apt would install by removing it.
 */
export function bootPackages(
  os: Record<string, string>,
  need: { kernel: boolean; init: boolean } = { kernel: true, init: true },
): string[] | undefined {
  const ids = [os.ID ?? '', ...(os.ID_LIKE ?? '').split(/\s+/)].map((s) => s.toLowerCase());
  const pick = (init: string) => [...(need.kernel ? ['linux-image-amd64'] : []), ...(need.init ? [init] : [])];
  if (ids.includes('devuan')) return pick('sysvinit-core');
  if (ids.includes('debian') || ids.includes('ubuntu')) return pick('systemd-sysv');
  return undefined;
}

/**
 * The layer that installs Debian packages on top of a built image (the bootable layer, live-boot for the ISO). `from`
 * is the image's id, not a tag: the layer builds on exactly the image that was checked (no ONBUILD triggers).
 */
export function aptLayer(from: string, pkgs: string[]): { dockerfileText: string; buildArgs: Record<string, string> } {
  return {
    dockerfileText: `FROM ${from}\nUSER root\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${pkgs.join(' ')} && apt-get clean && rm -rf /var/lib/apt/lists/*\n`,
    buildArgs: {},
  };
}

/**
 * The engine runs a base image's ONBUILD triggers in whatever builds on it: Kiln's own layers (bootable, live ISO)
 * would run the built image's triggers, which no policy saw where they fire. Such an image is refused.
 */
export function refuseOnBuild(config: { OnBuild?: string[] | null } | undefined): void {
  const triggers = config?.OnBuild ?? [];
  if (!triggers.length) return;
  throw new KilnError(
    'policy_violation',
    `The built image declares ONBUILD triggers (${triggers.map((t) => JSON.stringify(t.slice(0, 80))).join(', ')}); ` +
      'Kiln builds its own layers on the image (the bootable layer, the live ISO), where they would run: remove ONBUILD from the final stage',
  );
}

function missingParts(c: BootCheck): string[] {
  const m: string[] = [];
  if (!c.boot) m.push('a kernel');
  else if (!c.boot.initrd) m.push('an initrd');
  if (!c.init) m.push('an init');
  return m;
}

export interface BuiltImage {
  /** The engine's image of the Dockerfile itself. */
  built: { id: string; tag: string };
  /** The image the tree was exported from: `built`, or Kiln's bootable layer on it. */
  imageId: string;
  /** The image config (ENTRYPOINT, CMD, ENV, USER, WORKDIR, LABELs...) the machine runs. */
  runtime: ImageRuntimeConfig;
  /** Console text every boot test waits for: `--expect-console` and LABEL io.kiln.expect-console. */
  expectText: ConsoleExpectation[];
  staged: TreeStaging;
  rootDir: string;
  stats: ExtractStats;
  check: BootCheck;
  /** Export limits (bytes, entries), also for the live ISO's tree. */
  limits: { maxBytes: number; maxEntries: number };
}

/** Builds the Dockerfile, exports its filesystem, and makes it bootable when it is not. */
export async function buildImage(run: BuildRun, input: CheckedInput, bases: BaseImage[]): Promise<BuiltImage> {
  const { deps, o, s, rep, buildSettings, trust } = run;
  // The engine gets each base by the id just checked, whatever name the Dockerfile used for it (dockerfile/pin.ts);
  // with build trust, by the id of Kiln's layer of CA certificates on it (build-trust.ts), so the tag follows too.
  const baseIds = Object.fromEntries(bases.map((b) => [b.name, b.id]));
  const buildIds = trust
    ? await rep.stage('trust', 8, 'build CA certificates on each base', () =>
        trustLayers(deps.docker, bases, trust, buildSettings, run.work, rep),
      )
    : baseIds;
  const pinned = pinBaseImages(input.text, input.policy.froms, buildIds);
  const req = { dockerfileText: pinned, contextTar: o.contextTar, buildArgs: { ...o.buildArgs } };
  const built = await rep.stage('build', 10, 'building the Dockerfile', () =>
    dockerBuild(deps.docker, req, buildTag(req, input.contextSha256 ?? ''), buildSettings, rep),
  );
  rep.log(`[kiln] built image ${built.id} (${built.tag})`);
  const builtInfo = await imageInfo(deps.docker, built.id);
  refuseOnBuild(builtInfo?.Config);
  const runtime = (builtInfo?.Config ?? {}) as ImageRuntimeConfig;
  const expectText = consoleExpectations(o.expectConsole, runtime.Labels);
  if (expectText.length)
    rep.log(
      `[kiln] the boot tests pass only when the console shows ${expectText.map((e) => `${JSON.stringify(e.text)} (${e.source})`).join(', ')}`,
    );

  const staged = await treeStaging(run.work, builtInfo?.Size ?? 0, s.maxImageEntries);
  run.trees = staged;
  rep.log(`[kiln] ${staged.note}`);
  const rootDir = path.join(staged.dir, 'rootfs');
  const limits = { maxBytes: s.maxImageMb * 2 ** 20, maxEntries: s.maxImageEntries };
  const exported = await rep.stage('export', 45, 'exporting the filesystem', () =>
    exportRootfs(deps.docker, built.id, rootDir, limits, rep),
  );
  const first = { imageId: built.id, stats: exported, check: await checkBootable(rootDir) };
  const bootable = missingParts(first.check).length
    ? await addBootableLayer(run, built.id, rootDir, limits, first.check)
    : first;
  rep.log(
    `[kiln] export: ${bootable.stats.files} files, ${bootable.stats.dirs} dirs, ${bootable.stats.symlinks} symlinks, ${(bootable.stats.dataBytes / 2 ** 20).toFixed(0)} MiB`,
  );
  return { built, runtime, expectText, staged, rootDir, limits, ...bootable };
}

/** The image lacks a kernel or an init: Kiln adds them in a layer of its own (Debian family only) and exports again. */
async function addBootableLayer(
  run: BuildRun,
  builtId: string,
  rootDir: string,
  limits: BuiltImage['limits'],
  check: BootCheck,
): Promise<{ imageId: string; stats: ExtractStats; check: BootCheck }> {
  const { deps, rep } = run;
  const missing = missingParts(check);
  const pkgs = bootPackages(check.osRelease, { kernel: !check.boot?.initrd, init: !check.init });
  const hasApt = (await lstatIn(rootDir, '/usr/bin/apt-get'))?.isFile();
  if (!pkgs || !hasApt) {
    throw new KilnError(
      'build_failed',
      `The image lacks ${missing.join(' and ')}, and Kiln cannot add them to ` +
        `${check.osRelease.PRETTY_NAME ?? 'an unknown distribution'}${hasApt ? '' : ' (no apt-get)'}: install a kernel with its initrd ` +
        '(Debian: linux-image-amd64) and an init (Debian: systemd-sysv) in the Dockerfile',
    );
  }
  return rep.stage('bootable', 50, `adding ${pkgs.join(' and ')}`, async () => {
    const note = `the image had no ${missing.map((m) => m.replace(/^an? /, '')).join('/')}: Kiln added ${pkgs.join(', ')} in an extra layer`;
    rep.log(`[kiln] bootable: ${note}`);
    run.notes.push(note);
    const layer = aptLayer(builtId, pkgs);
    const extra = await dockerBuild(deps.docker, layer, buildTag(layer, 'bootable'), run.buildSettings, rep);
    await fsp.rm(rootDir, { recursive: true, force: true });
    const stats = await exportRootfs(deps.docker, extra.id, rootDir, limits, rep);
    const after = await checkBootable(rootDir);
    const still = missingParts(after);
    if (still.length)
      throw new KilnError(
        'build_failed',
        `Even after adding ${pkgs.join(', ')} the image lacks ${still.join(' and ')}`,
      );
    return { imageId: extra.id, stats, check: after };
  });
}
