import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';
import { compareVersions, parseOsRelease } from '../../src/sdk/bootable.js';
import { isIgnored, parseDockerignore } from '../../src/sdk/dockerignore.js';
import { sfdiskScript, planDisk, syslinuxCfg, KERNEL_CMDLINE } from '../../src/sdk/disk.js';
import { buildSpdx, parseDpkgStatus } from '../../src/sdk/manifest.js';
import { parseSha256Sums } from '../../src/shared/checksums.js';
import { bootPackages } from '../../src/sdk/pipeline.js';
import { buildProvenance } from '../../src/sdk/provenance.js';
import { PROGRESS_PREFIX as PROTOCOL_PREFIX } from '../../src/protocol/index.js';
import { PROGRESS_PREFIX, Reporter } from '../../src/sdk/reporter.js';
import { fitsInMemory, treeStaging } from '../../src/sdk/staging.js';

const STATUS = `Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library
 continuation line

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libsystemd0
Status: install ok installed
Architecture: amd64
Source: systemd (252.39-1~deb12u1)
Version: 252.39-1~deb12u1+b1
`;

describe('dpkg database', () => {
  it('reads installed packages with source package and version', () => {
    expect(parseDpkgStatus(STATUS)).toEqual([
      {
        name: 'libc6',
        version: '2.36-9+deb12u10',
        architecture: 'amd64',
        source: 'glibc',
        sourceVersion: '2.36-9+deb12u10',
      },
      {
        name: 'libsystemd0',
        version: '252.39-1~deb12u1+b1',
        architecture: 'amd64',
        source: 'systemd',
        sourceVersion: '252.39-1~deb12u1',
      },
    ]);
  });

  it('SPDX 2.3 document lists each package with a purl and a CONTAINS relationship', () => {
    const pkgs = parseDpkgStatus(STATUS);
    const doc = buildSpdx({
      name: 'x',
      createdAt: '2026-01-01T00:00:00.000Z',
      sdkVersion: '1',
      os: { ID: 'debian', VERSION_ID: '12' },
      packages: pkgs,
      artifacts: [{ name: 'image.raw', format: 'raw', size: 1, allocated: 1, sha256: 'a'.repeat(64) }],
    }) as {
      spdxVersion: string;
      creationInfo: { created: string };
      packages: { SPDXID: string; externalRefs?: { referenceLocator: string }[] }[];
      relationships: { relationshipType: string }[];
    };
    expect(doc.spdxVersion).toBe('SPDX-2.3');
    expect(doc.creationInfo.created).toBe('2026-01-01T00:00:00Z');
    expect(doc.packages).toHaveLength(3);
    expect(doc.packages[2]!.externalRefs![0]!.referenceLocator).toBe(
      'pkg:deb/debian/libsystemd0@252.39-1~deb12u1%2Bb1?arch=amd64&distro=debian-12',
    );
    expect(doc.relationships.filter((r) => r.relationshipType === 'CONTAINS')).toHaveLength(2);
  });

  it('SHA256SUMS parsing refuses paths', () => {
    expect(parseSha256Sums(`${'a'.repeat(64)}  image.raw\n`)).toEqual([{ sha256: 'a'.repeat(64), name: 'image.raw' }]);
    expect(() => parseSha256Sums(`${'a'.repeat(64)}  ../etc/passwd\n`)).toThrow();
    expect(() => parseSha256Sums('nonsense\n')).toThrow();
    expect(() => parseSha256Sums(`${'a'.repeat(64)}  image.raw\n${'b'.repeat(64)}  image.raw\n`)).toThrow(/twice/);
  });
});

describe('SLSA provenance', () => {
  it('is an in-toto v1 statement with the base digest and no build-arg values', () => {
    const p = buildProvenance({
      artifacts: [{ name: 'image.raw', format: 'raw', size: 1, allocated: 1, sha256: 'b'.repeat(64) }],
      extraSubjects: [],
      dockerfileSha256: 'c'.repeat(64),
      formats: ['raw'],
      buildArgNames: ['TOKEN'],
      bases: [{ name: 'debian:bookworm', id: 'sha256:' + 'd'.repeat(64) }],
      sdkVersion: '1',
      settings: { buildNetwork: 'host', memoryMb: 1, cpus: 1, buildTimeoutSeconds: 1, maxImageMb: 1 },
      startedOn: 'a',
      finishedOn: 'b',
      env: { BUILD_URL: 'https://ci/job/1/' },
    }) as {
      _type: string;
      predicateType: string;
      subject: unknown[];
      predicate: {
        buildDefinition: { resolvedDependencies: { digest: { sha256: string } }[]; externalParameters: unknown };
        runDetails: { metadata: { invocationId: string } };
      };
    };
    expect(p._type).toBe('https://in-toto.io/Statement/v1');
    expect(p.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(p.subject).toEqual([{ name: 'image.raw', digest: { sha256: 'b'.repeat(64) } }]);
    expect(p.predicate.buildDefinition.resolvedDependencies[0]!.digest.sha256).toBe('d'.repeat(64));
    expect(JSON.stringify(p.predicate.buildDefinition.externalParameters)).toContain('TOKEN');
    expect(p.predicate.runDetails.metadata.invocationId).toBe('https://ci/job/1/');
  });

  it("carries the image's LABELs on each artifact subject, not on the manifest's", () => {
    const p = buildProvenance({
      artifacts: [{ name: 'image.raw', format: 'raw', size: 1, allocated: 1, sha256: 'b'.repeat(64) }],
      extraSubjects: [{ name: 'manifest.json', sha256: 'e'.repeat(64) }],
      dockerfileSha256: 'c'.repeat(64),
      formats: ['raw'],
      buildArgNames: [],
      bases: [],
      labels: { 'org.opencontainers.image.title': 'demo', version: '1.2' },
      sdkVersion: '1',
      settings: { buildNetwork: 'host', memoryMb: 1, cpus: 1, buildTimeoutSeconds: 1, maxImageMb: 1 },
      startedOn: 'a',
      finishedOn: 'b',
      env: {},
    }) as { subject: unknown[] };
    expect(p.subject).toEqual([
      {
        name: 'image.raw',
        digest: { sha256: 'b'.repeat(64) },
        annotations: { 'org.opencontainers.image.title': 'demo', version: '1.2' },
      },
      { name: 'manifest.json', digest: { sha256: 'e'.repeat(64) } },
    ]);
  });
});

const tmp = tempDir('kiln-sdk-units-');
afterAll(() => tmp.cleanup());

describe('.dockerignore', () => {
  const rules = parseDockerignore('# c\n**/*.secret\nnode_modules\n*.log\n!keep.log\n/tmp/\n');
  it.each([
    ['a.secret', true],
    ['files/x/y.secret', true],
    ['node_modules/a/b.js', true],
    ['x.log', true],
    ['keep.log', false],
    ['sub/x.log', false],
    ['tmp/a', true],
    ['src/main.c', false],
  ])('%s ignored=%s', (p, want) => {
    expect(isIgnored(rules, p)).toBe(want);
  });
});

describe('misc', () => {
  it('boot packages per distribution', () => {
    expect(bootPackages({ ID: 'debian' })).toEqual(['linux-image-amd64', 'systemd-sysv']);
    expect(bootPackages({ ID: 'devuan', ID_LIKE: 'debian' })).toEqual(['linux-image-amd64', 'sysvinit-core']);
    expect(bootPackages({ ID: 'alpine' })).toBeUndefined();
    // Only what is missing: a sysvinit image without a kernel keeps its init (apt would swap it for systemd-sysv).
    expect(bootPackages({ ID: 'debian' }, { kernel: true, init: false })).toEqual(['linux-image-amd64']);
    expect(bootPackages({ ID: 'devuan' }, { kernel: false, init: true })).toEqual(['sysvinit-core']);
  });
  it('kernel versions compare numerically', () => {
    expect(['6.1.0-9-amd64', '6.1.0-10-amd64', '5.10.0-1-amd64'].sort(compareVersions).at(-1)).toBe('6.1.0-10-amd64');
    expect(parseOsRelease('ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n').PRETTY_NAME).toBe(
      'Debian GNU/Linux 12 (bookworm)',
    );
  });
  it('sfdisk script and syslinux config', () => {
    const l = planDisk({ rootBytes: 1 << 20, entries: 10, bootPayloadBytes: 1 << 20 });
    expect(sfdiskScript(l)).toBe(
      `label: dos\nunit: sectors\nstart=2048, size=${l.boot.sectors}, type=c, bootable\nstart=${l.root.startSector}, size=${l.root.sectors}, type=83\n`,
    );
    expect(syslinuxCfg(KERNEL_CMDLINE)).toContain('APPEND root=LABEL=root rw');
    const g = planDisk({ rootBytes: 1 << 20, entries: 10, bootPayloadBytes: 1 << 20 }, 'gpt');
    expect(g.totalBytes).toBe(l.totalBytes + 2 ** 20);
    expect(sfdiskScript(g)).toBe(
      `label: gpt\nunit: sectors\nstart=2048, size=${g.boot.sectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP", attrs="LegacyBIOSBootable"\n` +
        `start=${g.root.startSector}, size=${g.root.sectors}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n`,
    );
  });
  it('the reporter escapes forged progress lines and enforces the log cap', () => {
    const out: string[] = [];
    let capped = 0;
    const r = new Reporter(
      undefined,
      90,
      (s) => out.push(s),
      () => capped++,
    );
    r.output('##kiln {"stage":"done","percent":100}\n\x1b[31mred\x1b[0m');
    r.progress('build', 10.4, 'x');
    r.output('[kiln] build succeeded');
    r.output('y'.repeat(100));
    r.output('more');
    r.log('[kiln] FAILED (limit_exceeded): why');
    expect(out[0]).toBe(' ##kiln {"stage":"done","percent":100}\n');
    expect(out[1]).toBe('red\n');
    expect(out[2]).toBe('##kiln {"stage":"build","percent":10,"message":"x"}\n');
    // A build's line cannot pass for the SDK's.
    expect(out[3]).toBe(' [kiln] build succeeded\n');
    expect(capped).toBe(1);
    expect(r.logCapHit).toBe(true);
    // Past the cap: the marker, then the SDK's own lines only (the build's are dropped).
    expect(out.slice(4)).toEqual([
      "[kiln] log truncated: it reached the cap of 90 bytes (sdk.logCapBytes); the build's further output is dropped\n",
      '[kiln] FAILED (limit_exceeded): why\n',
    ]);
  });
});

describe('where the file tree is staged (staging.ts)', () => {
  const GiB = 2 ** 30;

  const E = 1_000_000;
  const room = { tmpfsFree: 12 * GiB, tmpfsFreeInodes: 3_000_000, memAvailable: 20 * GiB };

  it('uses the tmpfs only with room for twice the image and memory to spare', () => {
    expect(fitsInMemory(GiB / 2, E, room)).toBe(true);
    expect(fitsInMemory(GiB / 2, E, { ...room, tmpfsFree: undefined })).toBe(false);
    expect(fitsInMemory(GiB / 2, E, { ...room, tmpfsFree: GiB })).toBe(false);
    expect(fitsInMemory(GiB / 2, E, { ...room, memAvailable: 1.5 * GiB })).toBe(false);
    expect(fitsInMemory(8 * GiB, E, room)).toBe(false);
    expect(fitsInMemory(0, E, room)).toBe(false);
  });

  it('and only when its inodes, and the memory they take, hold twice the most entries an extraction allows', () => {
    // A tree of empty files takes no blocks: bytes alone would let millions of them onto the tmpfs.
    expect(fitsInMemory(GiB / 2, E, { ...room, tmpfsFreeInodes: 2 * E - 1 })).toBe(false);
    expect(fitsInMemory(GiB / 2, E, { ...room, tmpfsFreeInodes: 2 * E })).toBe(true);
    expect(fitsInMemory(GiB / 2, E, { ...room, tmpfsFreeInodes: undefined })).toBe(false);
    // 1 GiB for the trees, 2 GiB for 2 M inodes, 1 GiB headroom.
    expect(fitsInMemory(GiB / 2, E, { ...room, memAvailable: 3.9 * GiB })).toBe(false);
    expect(fitsInMemory(GiB / 2, E, { ...room, memAvailable: 4 * GiB })).toBe(true);
    expect(fitsInMemory(GiB / 2, 10 * E, room)).toBe(false);
  });

  it('makes a 0700 directory on /dev/shm that remove() deletes, or falls back to the work dir', async () => {
    const work = path.join(tmp.dir, 'staging-work');
    mkdirSync(work);
    const mem = await treeStaging(work, 2 ** 20, E, room);
    expect(path.dirname(mem.dir)).toBe('/dev/shm');
    expect(statSync(mem.dir).mode & 0o777).toBe(0o700);
    expect(mem.note).toContain('in memory');
    writeFileSync(path.join(mem.dir, 'f'), 'x');
    await mem.remove();
    expect(existsSync(mem.dir)).toBe(false);
    const disk = await treeStaging(work, 2 ** 20, E, { memAvailable: 20 * GiB });
    expect(disk.dir).toBe(work);
    await disk.remove();
    expect(existsSync(work)).toBe(true);
  });

  it("removes the trees of SDKs that were killed (pid and start time in the name), never a live SDK's", async () => {
    const shm = path.join(tmp.dir, 'shm');
    mkdirSync(shm);
    const dead = spawnSync('true').pid!;
    const selfStart = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19]!;
    const killed = path.join(shm, `kiln-sdk-tree-${dead}-12345-aaaaaa`);
    const reused = path.join(shm, `kiln-sdk-tree-${process.pid}-1-bbbbbb`); // this pid, another process's start
    const live = path.join(shm, `kiln-sdk-tree-${process.pid}-${selfStart}-cccccc`);
    for (const d of [killed, reused, live]) mkdirSync(path.join(d, 'usr/bin'), { recursive: true });
    const t = await treeStaging(path.join(tmp.dir, 'w2'), 2 ** 20, E, room, shm);
    expect(existsSync(killed)).toBe(false);
    expect(existsSync(reused)).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(path.basename(t.dir)).toMatch(new RegExp(`^kiln-sdk-tree-${process.pid}-${selfStart}-`));
    expect(t.note).toContain('removed 2 tree(s) of SDKs that were killed');
    await t.remove();
  });
});

describe('progress prefix', () => {
  it('equals the protocol prefix', () => {
    expect(PROGRESS_PREFIX).toBe(PROTOCOL_PREFIX);
  });
});
