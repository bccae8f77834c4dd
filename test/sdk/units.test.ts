import { describe, expect, it } from 'vitest';
import { appCommand, appUnit, systemdQuote } from '../../src/sdk/app.js';
import { compareVersions, parseOsRelease } from '../../src/sdk/bootable.js';
import { isIgnored, parseDockerignore } from '../../src/sdk/dockerignore.js';
import { sfdiskScript, planDisk, syslinuxCfg, KERNEL_CMDLINE } from '../../src/sdk/disk.js';
import { buildSpdx, parseDpkgStatus, parseSha256Sums } from '../../src/sdk/manifest.js';
import { bootPackages } from '../../src/sdk/pipeline.js';
import { buildProvenance } from '../../src/sdk/provenance.js';
import { Reporter } from '../../src/sdk/reporter.js';

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
      { name: 'libc6', version: '2.36-9+deb12u10', architecture: 'amd64', source: 'glibc', sourceVersion: '2.36-9+deb12u10' },
      { name: 'libsystemd0', version: '252.39-1~deb12u1+b1', architecture: 'amd64', source: 'systemd', sourceVersion: '252.39-1~deb12u1' },
    ]);
  });

  it('SPDX 2.3 document lists each package with a purl and a CONTAINS relationship', () => {
    const pkgs = parseDpkgStatus(STATUS);
    const doc = buildSpdx({ name: 'x', createdAt: '2026-01-01T00:00:00.000Z', sdkVersion: '1', os: { ID: 'debian', VERSION_ID: '12' }, packages: pkgs, artifacts: [{ name: 'image.raw', format: 'raw', size: 1, allocated: 1, sha256: 'a'.repeat(64) }] }) as {
      spdxVersion: string; creationInfo: { created: string }; packages: { SPDXID: string; externalRefs?: { referenceLocator: string }[] }[]; relationships: { relationshipType: string }[];
    };
    expect(doc.spdxVersion).toBe('SPDX-2.3');
    expect(doc.creationInfo.created).toBe('2026-01-01T00:00:00Z');
    expect(doc.packages).toHaveLength(3);
    expect(doc.packages[2]!.externalRefs![0]!.referenceLocator).toBe('pkg:deb/debian/libsystemd0@252.39-1~deb12u1%2Bb1?arch=amd64&distro=debian-12');
    expect(doc.relationships.filter((r) => r.relationshipType === 'CONTAINS')).toHaveLength(2);
  });

  it('SHA256SUMS parsing refuses paths', () => {
    expect(parseSha256Sums(`${'a'.repeat(64)}  image.raw\n`)).toEqual([{ sha256: 'a'.repeat(64), name: 'image.raw' }]);
    expect(() => parseSha256Sums(`${'a'.repeat(64)}  ../etc/passwd\n`)).toThrow();
    expect(() => parseSha256Sums('nonsense\n')).toThrow();
  });
});

describe('SLSA provenance', () => {
  it('is an in-toto v1 statement with the base digest and no build-arg values', () => {
    const p = buildProvenance({
      artifacts: [{ name: 'image.raw', format: 'raw', size: 1, allocated: 1, sha256: 'b'.repeat(64) }], extraSubjects: [],
      dockerfileSha256: 'c'.repeat(64), formats: ['raw'], buildArgNames: ['TOKEN'], bases: [{ name: 'debian:bookworm', id: 'sha256:' + 'd'.repeat(64) }],
      sdkVersion: '1', settings: { buildNetwork: 'host', memoryMb: 1, cpus: 1, buildTimeoutSeconds: 1, maxImageMb: 1 },
      startedOn: 'a', finishedOn: 'b', env: { BUILD_URL: 'https://ci/job/1/' },
    }) as { _type: string; predicateType: string; subject: unknown[]; predicate: { buildDefinition: { resolvedDependencies: { digest: { sha256: string } }[]; externalParameters: unknown }; runDetails: { metadata: { invocationId: string } } } };
    expect(p._type).toBe('https://in-toto.io/Statement/v1');
    expect(p.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(p.subject).toEqual([{ name: 'image.raw', digest: { sha256: 'b'.repeat(64) } }]);
    expect(p.predicate.buildDefinition.resolvedDependencies[0]!.digest.sha256).toBe('d'.repeat(64));
    expect(JSON.stringify(p.predicate.buildDefinition.externalParameters)).toContain('TOKEN');
    expect(p.predicate.runDetails.metadata.invocationId).toBe('https://ci/job/1/');
  });
});

describe('ENTRYPOINT/CMD as a service', () => {
  it('ignores base-image shells and inits', () => {
    expect(appCommand({ Cmd: ['bash'] })).toBeUndefined();
    expect(appCommand({ Cmd: ['/bin/sh'] })).toBeUndefined();
    expect(appCommand({ Cmd: ['/sbin/init'] })).toBeUndefined();
    expect(appCommand({})).toBeUndefined();
    expect(appCommand({ Entrypoint: ['/app'], Cmd: ['--port', '80'] })).toEqual(['/app', '--port', '80']);
    expect(appCommand({ Entrypoint: ['bash'], Cmd: ['-c', 'x'] })).toEqual(['bash', '-c', 'x']);
  });

  it('quotes argv so systemd neither splits nor expands it', () => {
    expect(systemdQuote('a b')).toBe('"a b"');
    expect(systemdQuote('$HOME %h "q" \\')).toBe('"$$HOME %%h \\"q\\" \\\\"');
    expect(systemdQuote('x\ny')).toBe('"x\\ny"');
  });

  it('carries ENV, WORKDIR and USER, and refuses injected unit lines', () => {
    const unit = appUnit(['/app', 'x\n[Service]\nExecStartPre=/bin/evil'], { Env: ['A=1', 'B=two words', 'bad line'], WorkingDir: '/srv/app', User: 'app:grp' });
    expect(unit).toContain('ExecStart="/app" "x\\n[Service]\\nExecStartPre=/bin/evil"');
    expect(unit).toContain('Environment="A=1"');
    expect(unit).toContain('Environment="B=two words"');
    expect(unit).not.toContain('bad line');
    expect(unit).toContain('WorkingDirectory=/srv/app\n');
    expect(unit).toContain('User=app\nGroup=grp\n');
    expect(unit.split('\n').filter((l) => l.startsWith('ExecStartPre'))).toEqual([]);
    const evil = appUnit(['/app'], { WorkingDir: '/x\nUser=root', User: 'a\nb' });
    expect(evil).toContain('WorkingDirectory=/\n');
    expect(evil).not.toMatch(/^User=/m);
  });
});

describe('.dockerignore', () => {
  const rules = parseDockerignore('# c\n**/*.secret\nnode_modules\n*.log\n!keep.log\n/tmp/\n');
  it.each([
    ['a.secret', true], ['files/x/y.secret', true], ['node_modules/a/b.js', true], ['x.log', true], ['keep.log', false],
    ['sub/x.log', false], ['tmp/a', true], ['src/main.c', false],
  ])('%s ignored=%s', (p, want) => {
    expect(isIgnored(rules, p)).toBe(want);
  });
});

describe('misc', () => {
  it('boot packages per distribution', () => {
    expect(bootPackages({ ID: 'debian' })).toEqual(['linux-image-amd64', 'systemd-sysv']);
    expect(bootPackages({ ID: 'devuan', ID_LIKE: 'debian' })).toEqual(['linux-image-amd64', 'sysvinit-core']);
    expect(bootPackages({ ID: 'alpine' })).toBeUndefined();
  });
  it('kernel versions compare numerically', () => {
    expect(['6.1.0-9-amd64', '6.1.0-10-amd64', '5.10.0-1-amd64'].sort(compareVersions).at(-1)).toBe('6.1.0-10-amd64');
    expect(parseOsRelease('ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n').PRETTY_NAME).toBe('Debian GNU/Linux 12 (bookworm)');
  });
  it('sfdisk script and syslinux config', () => {
    const l = planDisk({ rootBytes: 1 << 20, entries: 10, bootPayloadBytes: 1 << 20 });
    expect(sfdiskScript(l)).toBe(`label: dos\nunit: sectors\nstart=2048, size=${l.boot.sectors}, type=c, bootable\nstart=${l.root.startSector}, size=${l.root.sectors}, type=83\n`);
    expect(syslinuxCfg(KERNEL_CMDLINE)).toContain('APPEND root=LABEL=root rw');
    const g = planDisk({ rootBytes: 1 << 20, entries: 10, bootPayloadBytes: 1 << 20 }, 'gpt');
    expect(g.totalBytes).toBe(l.totalBytes + 2 ** 20);
    expect(sfdiskScript(g)).toBe(`label: gpt\nunit: sectors\nstart=2048, size=${g.boot.sectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP", attrs="LegacyBIOSBootable"\n` +
      `start=${g.root.startSector}, size=${g.root.sectors}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n`);
  });
  it('the reporter escapes forged progress lines and enforces the log cap', () => {
    const out: string[] = [];
    let capped = 0;
    const r = new Reporter(undefined, 60, (s) => out.push(s), () => capped++);
    r.log('##kiln {"stage":"done","percent":100}\n\x1b[31mred\x1b[0m');
    r.progress('build', 10.4, 'x');
    r.log('y'.repeat(100));
    r.log('more');
    expect(out[0]).toBe(' ##kiln {"stage":"done","percent":100}\n');
    expect(out[1]).toBe('red\n');
    expect(out[2]).toBe('##kiln {"stage":"build","percent":10,"message":"x"}\n');
    expect(capped).toBe(1);
    expect(r.logCapHit).toBe(true);
  });
});
