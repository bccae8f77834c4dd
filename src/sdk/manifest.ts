import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { formatSha256Sums, type SumEntry } from '../shared/checksums.js';
import type { BaseRecord } from './base-use.js';
import { readFileIn } from './fsroot.js';
import type { DiskLayout } from './disk.js';
import type { Artifact } from './result.js';
import { sha256File } from './result.js';
import type { GitSource } from '../protocol/index.js';

export interface DebPackage {
  name: string;
  version: string;
  architecture: string;
  source: string;
  sourceVersion: string;
}

/**
 * Reads installed packages from a dpkg status file (the image's own database: no tool runs inside the image).
 * `Source: foo (1.2)` names the source package and its version when they differ from the binary's.
 */
export function parseDpkgStatus(text: string): DebPackage[] {
  const out: DebPackage[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const f: Record<string, string> = {};
    let last = '';
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line)) {
        if (last) f[last] += '\n' + line.trim();
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) {
        last = m[1]!.toLowerCase();
        f[last] = m[2]!;
      }
    }
    if (!f.package || !f.version) continue;
    if (f.status && !/\binstalled$/.test(f.status.trim())) continue;
    const src = /^(\S+)(?:\s+\(([^)]+)\))?/.exec(f.source ?? '');
    out.push({
      name: f.package,
      version: f.version,
      architecture: f.architecture ?? 'unknown',
      source: src?.[1] ?? f.package,
      sourceVersion: src?.[2] ?? f.version,
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.architecture < b.architecture ? -1 : 1));
}

export async function readPackages(root: string): Promise<DebPackage[]> {
  const buf = await readFileIn(root, '/var/lib/dpkg/status', 64 << 20);
  return buf ? parseDpkgStatus(buf.toString('utf8')) : [];
}

export interface ManifestInput {
  sdkVersion: string;
  createdAt: string;
  dockerfileSha256: string;
  contextSha256?: string;
  /** The git repository and commit the Dockerfile and context came from. */
  source?: GitSource | undefined;
  buildArgs: Record<string, string>;
  /** Each base with the FROMs that named it (name as written -> Kiln base -> image id). */
  bases: BaseRecord[];
  image: { id: string; tag: string; labels?: Record<string, string> };
  os: Record<string, string>;
  kernel: { version: string; cmdline: string };
  init: string;
  packages: DebPackage[];
  layout: DiskLayout;
  rootfs: {
    files: number;
    dirs: number;
    symlinks: number;
    dataBytes: number;
    blockBytes: number;
    capabilities?: { name: string; capability: string; value: string }[];
  };
  artifacts: Artifact[];
  notes: string[];
  /** The extra CA certificates RUN steps trusted and whether the image keeps them (build-trust.ts trustRecord). */
  buildTrust?: Record<string, unknown>;
  /** The proxy RUN steps used: scheme, host and port only (build-proxy.ts). */
  buildProxy?: Record<string, unknown>;
  /** How the image's runtime config was mapped onto the machine (app.ts applyImageConfig). */
  runtime?: Record<string, unknown>;
}

/** The Dockerfile's LABELs (title, version, source...), without Kiln's own bookkeeping labels, bounded in size. */
export function imageLabels(labels: Record<string, string> | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .slice(0, 200)) {
    if (k.startsWith('io.kiln.')) continue;
    out[k.slice(0, 256)] = String(v).slice(0, 4096);
  }
  return out;
}

export function buildManifest(i: ManifestInput): Record<string, unknown> {
  const p = (x: DiskLayout['boot']) => ({
    number: x.number,
    startSector: x.startSector,
    sectors: x.sectors,
    bytes: x.sectors * i.layout.sectorSize,
    type: x.type,
    bootable: x.bootable,
    filesystem: x.fs,
    label: x.label,
  });
  return {
    schema: 'https://kiln.invalid/schemas/manifest/v1',
    sdkVersion: i.sdkVersion,
    createdAt: i.createdAt,
    inputs: {
      dockerfile: { sha256: i.dockerfileSha256 },
      ...(i.contextSha256 ? { context: { sha256: i.contextSha256 } } : {}),
      ...(i.source ? { source: { ...i.source } } : {}),
      buildArgs: Object.keys(i.buildArgs).sort(),
    },
    baseImages: i.bases,
    image: i.image,
    ...(i.buildTrust ? { buildTrust: i.buildTrust } : {}),
    ...(i.buildProxy ? { buildProxy: i.buildProxy } : {}),
    os: {
      id: i.os.ID,
      versionId: i.os.VERSION_ID,
      versionCodename: i.os.VERSION_CODENAME,
      prettyName: i.os.PRETTY_NAME,
    },
    boot: {
      kernel: i.kernel.version,
      cmdline: i.kernel.cmdline,
      init: i.init,
      loader: i.layout.label === 'gpt' ? 'syslinux (BIOS, gptmbr) + systemd-boot (UEFI)' : 'syslinux (BIOS)',
    },
    disk: {
      label: i.layout.label,
      sectorSize: i.layout.sectorSize,
      totalBytes: i.layout.totalBytes,
      partitions: [p(i.layout.boot), p(i.layout.root)],
    },
    sizes: {
      rootfs: {
        files: i.rootfs.files,
        dirs: i.rootfs.dirs,
        symlinks: i.rootfs.symlinks,
        dataBytes: i.rootfs.dataBytes,
        blockBytes: i.rootfs.blockBytes,
      },
      artifacts: Object.fromEntries(i.artifacts.map((a) => [a.name, { size: a.size, allocated: a.allocated }])),
    },
    artifacts: i.artifacts.map((a) => ({ name: a.name, format: a.format, sha256: a.sha256 })),
    packages: i.packages,
    // Like setuid bits, file capabilities grant privilege: listed for review (path, in words, vfs_cap_data in hex).
    ...(i.rootfs.capabilities?.length
      ? {
          fileCapabilities: i.rootfs.capabilities.map((c) => ({
            path: `/${c.name}`,
            capability: c.capability,
            value: c.value,
          })),
        }
      : {}),
    ...(i.runtime ? { runtime: i.runtime } : {}),
    notes: i.notes,
  };
}

/** SPDX 2.3 JSON: the image as the described package, CONTAINS one package per installed deb (with a purl). */
export function buildSpdx(o: {
  name: string;
  createdAt: string;
  sdkVersion: string;
  os: Record<string, string>;
  packages: DebPackage[];
  artifacts: Artifact[];
}): Record<string, unknown> {
  const distro = o.os.ID ?? 'debian';
  const distroQ = o.os.VERSION_ID ? `&distro=${encodeURIComponent(`${distro}-${o.os.VERSION_ID}`)}` : '';
  const id = (s: string) => s.replace(/[^A-Za-z0-9.-]/g, '-');
  const raw = o.artifacts.find((a) => a.format === 'raw') ?? o.artifacts[0];
  const image = {
    SPDXID: 'SPDXRef-Image',
    name: o.name,
    versionInfo: o.createdAt,
    primaryPackagePurpose: 'OPERATING-SYSTEM',
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    ...(raw ? { checksums: [{ algorithm: 'SHA256', checksumValue: raw.sha256 }], packageFileName: raw.name } : {}),
  };
  const pkgs = o.packages.map((p, n) => ({
    SPDXID: `SPDXRef-Package-deb-${id(p.name)}-${n}`,
    name: p.name,
    versionInfo: p.version,
    supplier: 'NOASSERTION',
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    sourceInfo: `built from source package ${p.source} ${p.sourceVersion}`,
    externalRefs: [
      {
        referenceCategory: 'PACKAGE-MANAGER',
        referenceType: 'purl',
        referenceLocator: `pkg:deb/${encodeURIComponent(distro)}/${encodeURIComponent(p.name)}@${encodeURIComponent(p.version)}?arch=${encodeURIComponent(p.architecture)}${distroQ}`,
      },
    ],
  }));
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: o.name,
    documentNamespace: `https://kiln.invalid/spdx/${encodeURIComponent(o.name)}-${randomUUID()}`,
    creationInfo: { created: o.createdAt.replace(/\.\d+Z$/, 'Z'), creators: [`Tool: kiln-sdk-${o.sdkVersion}`] },
    packages: [image, ...pkgs],
    relationships: [
      { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-Image' },
      ...pkgs.map((p) => ({
        spdxElementId: 'SPDXRef-Image',
        relationshipType: 'CONTAINS',
        relatedSpdxElement: p.SPDXID,
      })),
    ],
  };
}

/** The builder's claim: `SHA256SUMS` over `names` in DIR (digests from `known` when given, else hashed here). */
export async function writeSha256Sums(
  dir: string,
  names: string[],
  known: ReadonlyMap<string, string> = new Map(),
): Promise<string> {
  const entries: SumEntry[] = [];
  for (const name of names) entries.push({ name, sha256: known.get(name) ?? (await sha256File(path.join(dir, name))) });
  const text = formatSha256Sums(entries);
  await fsp.writeFile(path.join(dir, 'SHA256SUMS'), text);
  return text;
}
