/**
 * `kiln sdk build`: policy → engine → bases → build → export (+ bootable layer when needed) → finish → tar/ISO →
 * disk → qcow2 → checksums/manifest/SBOM/provenance/SHA256SUMS → boot. Each stage is a function of its own
 * (stages/), taking the run (stages/run.ts) and returning what it made. SHA256SUMS is the builder's claim, never
 * signed here: a builder holds no key (the web re-hashes and signs). Always writes DIR/result.json (ok:false plus
 * error on failure) and DIR/build.log; removes its staging area whatever happens.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KilnError, toKilnError } from '../shared/errors.js';
import { buildNetworkUrls, buildProxy } from './build-proxy.js';
import type { BuildSettings } from './docker-build.js';
import { recordInternalError } from './internal-error.js';
import { Reporter } from './reporter.js';
import { writeResult, type BuildResult } from './result.js';
import { bootTests } from './stages/boot.js';
import { assembleRawDisk, convertImages } from './stages/disk.js';
import { buildImage } from './stages/image.js';
import { checkInput, enterEngineAndBases } from './stages/input.js';
import { writeRecords } from './stages/records.js';
import type { BuildRun, SdkBuildOptions, SdkDeps } from './stages/run.js';
import { finishTree, writeLiveIso, writeRootfsTar } from './stages/tree.js';
import { SDK_VERSION } from './version.js';

export type { SdkBuildOptions, SdkDeps, SdkSettings } from './stages/run.js';
export { readDockerfile } from './stages/input.js';
export { bootPackages, refuseOnBuild } from './stages/image.js';
export { OVMF_CODE, OVMF_VARS } from './stages/boot.js';

const SUPPORTED: Record<string, { name: string }> = {
  raw: { name: 'image.raw' },
  qcow2: { name: 'image.qcow2' },
  tar: { name: 'rootfs.tar.zst' },
  iso: { name: 'image.iso' },
};

export async function sdkBuild(deps: SdkDeps, o: SdkBuildOptions): Promise<BuildResult> {
  const s = deps.settings;
  const startedAt = new Date().toISOString();
  const outDir = path.resolve(o.outDir);
  await fsp.mkdir(outDir, { recursive: true });
  let limitHit = false;
  const rep = new Reporter(
    path.join(outDir, 'build.log'),
    s.logCapBytes,
    deps.out,
    () => {
      limitHit = true;
    },
    o.signal,
  );
  // 0700: the staging tree keeps the guest's setuid files; no other host user may reach it.
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-sdk-'));
  await fsp.chmod(work, 0o700);
  const proxy = buildProxy(s.buildProxy);
  for (const secret of proxy?.secrets ?? []) rep.mask(secret);
  const egress = { subnet: s.buildSubnet, allow: s.egressAllow, rules: s.egressRules, mirrors: buildNetworkUrls(s) };
  const buildSettings: BuildSettings = {
    network: s.buildNetwork,
    egress,
    memoryMb: s.memoryMb,
    cpus: s.cpus,
    pidsMax: s.pidsLimit,
    maxDiskBytes: s.maxBuildDiskMb * 2 ** 20,
    timeoutSeconds: s.buildTimeoutSeconds,
    proxyArgs: proxy?.args,
    signal: o.signal,
  };
  const run: BuildRun = {
    deps,
    o,
    s,
    rep,
    outDir,
    work,
    formats: [...new Set(o.formats)],
    buildSettings,
    ...(proxy ? { proxy } : {}),
    notes: [],
    artifacts: [],
    bootTests: [],
  };
  let error: BuildResult['error'];

  try {
    if (!run.formats.length) throw new KilnError('invalid_input', 'No output format was asked for');
    for (const f of run.formats)
      if (!SUPPORTED[f])
        throw new KilnError(
          'invalid_input',
          `The output format ${f} is not supported yet (supported: ${Object.keys(SUPPORTED).join(', ')})`,
        );
    rep.log(`[kiln] sdk ${SDK_VERSION}: building ${path.basename(o.dockerfile)} into ${run.formats.join(', ')}`);

    const input = await checkInput(run);
    const bases = await enterEngineAndBases(run, input.policy);
    const image = await buildImage(run, input, bases);
    const tree = await finishTree(run, image);
    const tarArtifact = await writeRootfsTar(run, image.rootDir);
    const iso = await writeLiveIso(run, image);
    // The engine's part is over: a prune may run again (engine-cache.ts).
    await run.engineLock?.release();
    run.engineLock = undefined;
    const { layout, rawPath } = await assembleRawDisk(run, image);
    const { images, describe } = await convertImages(run, rawPath, iso, tarArtifact);
    await writeRecords(run, { input, bases, image, tree, layout, describe, startedAt });
    await bootTests(run, images, layout, iso, tree.appBoot, image.expectText);
  } catch (e) {
    const ke = o.signal?.aborted
      ? new KilnError('build_failed', 'The build was cancelled')
      : limitHit && !(e instanceof KilnError && e.code === 'limit_exceeded')
        ? new KilnError('limit_exceeded', 'The build log grew past the log size limit')
        : toKilnError(e);
    // An internal error's message and detail are the operator's (internal-error.ts); the user sees a reference.
    error = {
      code: ke.code,
      message: ke.code === 'internal' ? await recordInternalError(outDir, e, ke.detail) : ke.message,
    };
    rep.log(`[kiln] FAILED (${error.code}): ${error.message}`);
    if (ke.detail !== undefined && ke.code !== 'internal')
      rep.log(`[kiln] detail: ${JSON.stringify(ke.detail).slice(0, 4000)}`);
  } finally {
    await run.engineLock?.release();
    await run.rootfsRemoval;
    await run.trees?.remove();
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }

  const result: BuildResult = {
    ok: !error,
    sdkVersion: SDK_VERSION,
    startedAt,
    finishedAt: new Date().toISOString(),
    artifacts: run.artifacts,
    bootTests: run.bootTests,
    stages: rep.stages,
    ...(error ? { error } : {}),
  };
  await writeResult(outDir, result);
  rep.progress('done', 100, error ? `failed: ${error.message.slice(0, 200)}` : 'image ready');
  rep.log(`[kiln] ${error ? 'build failed' : 'build succeeded'}`);
  await rep.close();
  return result;
}
