/**
 * What describes the build beside its images: every deliverable hashed, manifest.json, the SPDX SBOM, SLSA
 * provenance, and SHA256SUMS: the builder's claim, never signed here (a builder holds no key; the web re-hashes
 * what it received and signs its own).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { baseRecords } from '../base-use.js';
import type { BaseImage } from '../base.js';
import { trustRecord } from '../build-trust.js';
import { KERNEL_CMDLINE, type DiskLayout } from '../disk.js';
import { buildManifest, buildSpdx, imageLabels, writeSha256Sums } from '../manifest.js';
import { buildProvenance } from '../provenance.js';
import { sha256File, type Artifact } from '../result.js';
import { SDK_VERSION } from '../version.js';
import type { BuiltImage } from './image.js';
import type { CheckedInput } from './input.js';
import type { BuildRun } from './run.js';
import type { FinishedTree } from './tree.js';

export interface RecordInputs {
  input: CheckedInput;
  bases: BaseImage[];
  image: BuiltImage;
  tree: FinishedTree;
  layout: DiskLayout;
  /** Describes the deliverables (convertImages): waits for their hashing. */
  describe: () => Promise<Artifact[]>;
  startedAt: string;
}

/** Hashes the deliverables (into run.artifacts) and writes manifest.json, sbom.spdx.json, provenance.json and SHA256SUMS. */
export function writeRecords(run: BuildRun, r: RecordInputs): Promise<void> {
  const { o, s, outDir, trust, proxy } = run;
  const { input, image, tree } = r;
  const { dockerfileSha256, contextSha256 } = input;
  return run.rep.stage('checksum', 75, 'checksums, manifest, SBOM, provenance', async () => {
    const artifacts = await r.describe();
    run.artifacts.push(...artifacts);
    const createdAt = new Date().toISOString();
    const baseInfo = baseRecords(input.policy.froms, r.bases);
    const manifest = buildManifest({
      sdkVersion: SDK_VERSION,
      createdAt,
      dockerfileSha256,
      contextSha256,
      source: o.source,
      buildArgs: { ...o.buildArgs },
      bases: baseInfo,
      image: { id: image.imageId, tag: image.built.tag, labels: imageLabels(image.runtime.Labels) },
      os: image.check.osRelease,
      kernel: { version: image.check.boot!.version, cmdline: KERNEL_CMDLINE },
      init: image.check.init!,
      packages: tree.packages,
      layout: r.layout,
      rootfs: image.stats,
      artifacts,
      notes: run.notes,
      runtime: tree.runtime,
      buildTrust: trust && trustRecord(trust, tree.trustRemoval),
      buildProxy: proxy && { ...proxy.summary, inImage: false },
    });
    await fsp.writeFile(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    const sbom = buildSpdx({
      name: `kiln-image-${dockerfileSha256.slice(0, 12)}`,
      createdAt,
      sdkVersion: SDK_VERSION,
      os: image.check.osRelease,
      packages: tree.packages,
      artifacts,
    });
    await fsp.writeFile(path.join(outDir, 'sbom.spdx.json'), JSON.stringify(sbom, null, 2) + '\n');
    const provenance = buildProvenance({
      artifacts,
      extraSubjects: [
        { name: 'manifest.json', sha256: await sha256File(path.join(outDir, 'manifest.json')) },
        { name: 'sbom.spdx.json', sha256: await sha256File(path.join(outDir, 'sbom.spdx.json')) },
      ],
      dockerfileSha256,
      contextSha256,
      source: o.source,
      formats: run.formats,
      buildArgNames: Object.keys(o.buildArgs).sort(),
      bases: baseInfo,
      labels: imageLabels(image.runtime.Labels),
      sdkVersion: SDK_VERSION,
      settings: {
        buildNetwork: s.buildNetwork,
        memoryMb: s.memoryMb,
        cpus: s.cpus,
        buildTimeoutSeconds: s.buildTimeoutSeconds,
        maxImageMb: s.maxImageMb,
        pidsLimit: s.pidsLimit,
      },
      buildTrust: trust && {
        caSha256: trust.certs.map((c) => c.sha256),
        inImage: trust.keepInImage ? 'kept' : 'removed',
      },
      buildProxy: proxy?.summary,
      startedOn: r.startedAt,
      finishedOn: new Date().toISOString(),
    });
    await fsp.writeFile(path.join(outDir, 'provenance.json'), JSON.stringify(provenance, null, 2) + '\n');
    await writeSha256Sums(
      outDir,
      [...artifacts.map((a) => a.name), 'manifest.json', 'sbom.spdx.json', 'provenance.json'],
      new Map(artifacts.map((a) => [a.name, a.sha256])),
    );
  });
}
