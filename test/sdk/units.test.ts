import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { appCommand, appUnit, initKind, installAppService, resetSshHostKeys, systemdQuote } from '../../src/sdk/app.js';
import { finishRootfs } from '../../src/sdk/finish.js';
import { editInittab, renderSysvRunner, shQuote, sysvRunnerProblem } from '../../src/sdk/initscript.js';
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
    expect(() => parseSha256Sums(`${'a'.repeat(64)}  image.raw\n${'b'.repeat(64)}  image.raw\n`)).toThrow(/twice/);
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

const tmp = tempDir('kiln-sdk-units-');
afterAll(() => tmp.cleanup());
let seq = 0;
const fresh = (name: string) => { const d = path.join(tmp.dir, `${++seq}-${name}`); mkdirSync(d, { recursive: true }); return d; };
const quiet = () => new Reporter(undefined, 1 << 20, () => undefined, () => undefined);

// Words a user might put in ENV/CMD/WORKDIR that a careless shell would expand, split or execute.
const HOSTILE = ["it's", '$HOME', '${PATH}', '`touch PWNED-backtick`', '$(touch PWNED-subst)', 'a b  c', 'line1\nline2', '"dq"', '\\', '*', ';', '|', '&', '-n', '', '\t tab'];

/** Writes the runner with its console pointed at a file, runs it with sh (as this root user), returns the console text. */
function runRunner(argv: string[], config: Parameters<typeof renderSysvRunner>[0]['config'], dir: string): { code: number | null; out: string } {
  const consoleFile = path.join(dir, 'console.log');
  const script = path.join(dir, 'app.sh');
  writeFileSync(script, renderSysvRunner({ argv, config, setpriv: '/usr/bin/setpriv', console: consoleFile }));
  expect(spawnSync('sh', ['-n', script]).status).toBe(0);
  const r = spawnSync('sh', [script], { cwd: dir, timeout: 20_000 });
  return { code: r.status, out: existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8') : '' };
}

describe('ENTRYPOINT/CMD on sysvinit (/etc/inittab + /etc/kiln/app.sh)', () => {
  it('quotes words for /bin/sh so they come back verbatim', () => {
    expect(shQuote('a b')).toBe("'a b'");
    expect(shQuote("it's")).toBe("'it'\\''s'");
    expect(shQuote('$(x) `y`')).toBe("'$(x) `y`'");
    expect(shQuote('')).toBe("''");
    expect(() => shQuote('a\0b')).toThrow();
    for (const w of HOSTILE) expect(execFileSync('sh', ['-c', `printf %s ${shQuote(w)}`]).toString()).toBe(w);
  });

  it('the runner passes hostile argv, ENV and WORKDIR through untouched (sh -n, then run with sh)', () => {
    const dir = fresh('runner');
    const wd = path.join(dir, "w 'q' $(touch PWNED-wd) `id`\nx");
    mkdirSync(wd);
    const env = ['PATH=/usr/bin:/bin', ...HOSTILE.map((w, i) => `V${i}=${w}`), 'dotted.name=ok', '-opt=ignored', 'noequals'];
    const { code, out } = runRunner(['/bin/sh', '-c', 'printf "pwd=[%s]\\n" "$(pwd)"; printf "arg=[%s]\\n" "$@"', 'sh', ...HOSTILE], { Env: env, WorkingDir: wd }, dir);
    expect(code).toBe(0);
    expect(out.startsWith(`kiln-app: started as root (uid 0 gid 0) in ${wd}\n`)).toBe(true);
    expect(out).toContain(`pwd=[${wd}]\n`);
    expect(out).toContain(HOSTILE.map((w) => `arg=[${w}]\n`).join(''));
    expect(out).toContain('kiln-app: exited with status 0, not restarted');
    // The environment, printed by env itself (a shell would drop names like dotted.name, as it does under Docker).
    const e = runRunner(['/usr/bin/env'], { Env: env, WorkingDir: wd }, dir);
    expect(e.code).toBe(0);
    for (const [i, w] of HOSTILE.entries()) expect(e.out).toContain(`\nV${i}=${w}\n`);
    expect(e.out).toContain('\ndotted.name=ok\n');
    expect(e.out).toContain('\nHOME=/root\n');
    expect(e.out).toContain('\nPATH=/usr/bin:/bin\n');
    expect(e.out).not.toMatch(/^-opt=|^noequals/m);
    // Only what Docker would set: nothing of this test runner's environment leaks in.
    expect(e.out).not.toContain('VITEST');
    expect(execFileSync('find', [tmp.dir, '-name', 'PWNED*']).toString()).toBe('');
  });

  it('USER: name, name:group, a uid missing from passwd (gid 0, like Docker), and an unknown name', () => {
    const dir = fresh('users');
    const id = (user: string) => runRunner(['/usr/bin/id'], { User: user, WorkingDir: '/' }, dir);
    expect(id('root').out).toContain('uid=0(root) gid=0(root)');
    expect(id('nobody:nogroup').out).toMatch(/uid=65534\(nobody\) gid=65534\(nogroup\) groups=65534\(nogroup\)/);
    expect(id('12345').out).toContain('uid=12345 gid=0(root) groups=0(root)');
    expect(id('1:12345').out).toContain('uid=1(daemon) gid=12345');
    const missing = id('no-such-user');
    expect(missing.code).toBe(1);
    expect(missing.out).toBe('kiln-app: cannot start: USER no-such-user is not in /etc/passwd\n');
    const nodir = runRunner(['/bin/true'], { WorkingDir: path.join(dir, 'absent') }, dir);
    expect(nodir.code).toBe(1);
    expect(nodir.out).toContain('kiln-app: cannot start: WORKDIR');
  });

  it('restarts the program after a failure (2 s later) and stops after a clean exit', () => {
    const dir = fresh('restart');
    const counter = path.join(dir, 'runs');
    // Fails on the first run, succeeds on the second.
    const script = `echo x >> ${shQuote(counter)}; [ "$(wc -l < ${shQuote(counter)})" -ge 2 ] || exit 3; echo second run ok`;
    const t0 = Date.now();
    const r = runRunner(['/bin/sh', '-c', script], { WorkingDir: '/' }, dir);
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    expect(r.out.replace(/kiln-app: started as root \(uid 0 gid 0\) in \//g, 'STARTED')).toBe(
      'STARTED\nkiln-app: exited with status 3, restarting in 2 s\nSTARTED\nsecond run ok\nkiln-app: exited with status 0, not restarted\n');
  });

  it('refuses USER values that are not names and NUL bytes', () => {
    const base = { argv: ['/app'], setpriv: '/usr/bin/setpriv' };
    expect(sysvRunnerProblem({ ...base, config: { User: "a'; rm -rf /" } })).toMatch(/not a user name/);
    expect(sysvRunnerProblem({ ...base, config: { User: 'a\nb' } })).toMatch(/not a user name/);
    expect(sysvRunnerProblem({ ...base, config: { User: 'app:$(id)' } })).toMatch(/not a user name/);
    expect(sysvRunnerProblem({ ...base, argv: ['/app', 'a\0b'], config: {} })).toMatch(/NUL/);
    expect(sysvRunnerProblem({ ...base, config: { User: 'app:grp' } })).toBeUndefined();
    expect(() => renderSysvRunner({ ...base, config: { User: 'a b' } })).toThrow();
  });

  const DEBIAN_INITTAB = 'id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\nl2:2:wait:/etc/init.d/rc 2\n1:2345:respawn:/sbin/getty --noclear 38400 tty1\n#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n';

  it('edits /etc/inittab idempotently: keygen after rcS, serial getty once, app entry last', () => {
    const once = editInittab(DEBIAN_INITTAB, { app: true, serialGetty: true, sshKeygen: true });
    expect(once.text).toBe('id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\nkssh::sysinit:/usr/bin/ssh-keygen -A\nl2:2:wait:/etc/init.d/rc 2\n' +
      '1:2345:respawn:/sbin/getty --noclear 38400 tty1\n#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n' +
      'kS0:2345:respawn:/sbin/getty -L ttyS0 115200 vt102\nkapp:2345:once:/etc/kiln/app.sh\n');
    expect(editInittab(once.text, { app: true, serialGetty: true, sshKeygen: true }).text).toBe(once.text);
    // An image that already runs a getty on the serial port keeps its own.
    const own = 'si::sysinit:/etc/init.d/rcS\nT0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n';
    expect(editInittab(own, { serialGetty: true })).toEqual({ text: own, added: [] });
  });

  /** A fake root filesystem with what decides the init: /usr/sbin/init, /etc/inittab, systemd, setpriv, sshd. */
  function fakeRoot(o: { init: 'sysvinit' | 'systemd'; osRelease?: string; systemdBinary?: boolean }): string {
    const root = fresh(`root-${o.init}`);
    for (const d of ['usr/sbin', 'usr/bin', 'usr/lib/systemd', 'etc/ssh', 'etc/apt/apt.conf.d']) mkdirSync(path.join(root, d), { recursive: true });
    symlinkSync('usr/sbin', path.join(root, 'sbin'));
    if (o.init === 'sysvinit') {
      writeFileSync(path.join(root, 'usr/sbin/init'), '\x7fELF...INIT_VERSION=sysvinit-3.06...');
      writeFileSync(path.join(root, 'etc/inittab'), DEBIAN_INITTAB);
    } else {
      symlinkSync('../lib/systemd/systemd', path.join(root, 'usr/sbin/init'));
    }
    if (o.init === 'systemd' || o.systemdBinary) writeFileSync(path.join(root, 'usr/lib/systemd/systemd'), 'ELF');
    writeFileSync(path.join(root, 'usr/bin/setpriv'), 'ELF');
    writeFileSync(path.join(root, 'usr/bin/ssh-keygen'), 'ELF');
    writeFileSync(path.join(root, 'usr/sbin/sshd'), 'ELF');
    writeFileSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'), 'SECRET');
    writeFileSync(path.join(root, 'etc/os-release'), o.osRelease ?? 'ID=debian\n');
    return root;
  }

  it('Devuan (sysvinit-core added by bootPackages) gets the inittab path, getty and keygen, once, even with a systemd binary present', async () => {
    const os = parseOsRelease('PRETTY_NAME="Devuan GNU/Linux 5 (daedalus)"\nID=devuan\nID_LIKE=debian\n');
    expect(bootPackages(os)).toContain('sysvinit-core');
    const root = fakeRoot({ init: 'sysvinit', osRelease: 'ID=devuan\nID_LIKE=debian\n', systemdBinary: true });
    expect(await initKind(root)).toBe('sysvinit');
    const cfg = { Entrypoint: ['/app'], Cmd: ["it's $(id)"], Env: ['A=1'], WorkingDir: '/srv', User: 'app' };
    for (let i = 0; i < 2; i++) {
      await finishRootfs(root, quiet());
      expect(await resetSshHostKeys(root, quiet())).toMatch(/ssh-keygen -A/);
      const app = await installAppService(root, cfg, quiet());
      expect(app?.note).toContain('/etc/inittab entry kapp starts /etc/kiln/app.sh');
      expect(app?.boot?.expect.map(String)).toEqual(['/kiln-app: started as /']);
    }
    const inittab = readFileSync(path.join(root, 'etc/inittab'), 'utf8');
    expect(inittab).toBe(editInittab(DEBIAN_INITTAB, { app: true, serialGetty: true, sshKeygen: true }).text);
    const runner = path.join(root, 'etc/kiln/app.sh');
    expect(statSync(runner).mode & 0o777).toBe(0o755);
    expect(readFileSync(runner, 'utf8')).toContain(`-- '/app' 'it'\\''s $(id)'\n`);
    expect(existsSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'))).toBe(false);
    expect(existsSync(path.join(root, 'etc/systemd/system/kiln-app.service'))).toBe(false);
  });

  it('systemd images keep the unit; an inittab that is a link is never followed', async () => {
    const sd = fakeRoot({ init: 'systemd' });
    expect(await initKind(sd)).toBe('systemd');
    const app = await installAppService(sd, { Cmd: ['/app'] }, quiet());
    expect(app?.note).toContain('kiln-app.service');
    expect(existsSync(path.join(sd, 'etc/kiln/app.sh'))).toBe(false);
    const evil = fakeRoot({ init: 'sysvinit' });
    const outside = path.join(fresh('outside'), 'inittab');
    writeFileSync(outside, 'host file\n');
    execFileSync('rm', [path.join(evil, 'etc/inittab')]);
    symlinkSync(outside, path.join(evil, 'etc/inittab'));
    expect(await initKind(evil)).toBeUndefined();
    await finishRootfs(evil, quiet());
    expect((await installAppService(evil, { Cmd: ['/app'] }, quiet()))?.note).toMatch(/no service was created/);
    expect(readFileSync(outside, 'utf8')).toBe('host file\n');
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
    // Only what is missing: a sysvinit image without a kernel keeps its init (apt would swap it for systemd-sysv).
    expect(bootPackages({ ID: 'debian' }, { kernel: true, init: false })).toEqual(['linux-image-amd64']);
    expect(bootPackages({ ID: 'devuan' }, { kernel: false, init: true })).toEqual(['sysvinit-core']);
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
    const r = new Reporter(undefined, 90, (s) => out.push(s), () => capped++);
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
    expect(out.slice(4)).toEqual(['[kiln] log truncated: it reached the cap of 90 bytes (sdk.logCapBytes); the build\'s further output is dropped\n', '[kiln] FAILED (limit_exceeded): why\n']);
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

  it('removes the trees of SDKs that were killed (pid and start time in the name), never a live SDK\'s', async () => {
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
