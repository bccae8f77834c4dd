import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assembleDisk, planDisk } from '../../src/sdk/disk.js';
import { exportRootfs } from '../../src/sdk/export.js';
import { extractRootfs, type ExtractStats } from '../../src/sdk/extract.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { CapabilityScanner, describeCapability } from '../../src/sdk/xattr.js';
import { run } from '../../src/shared/subprocess.js';
import { listTree, tempDir } from '../helpers/tmp.js';

/**
 * File capabilities through the export: binary-safe capture of `SCHILY.xattr.security.capability` (values with 0x80+
 * bytes, which a UTF-8 decode of the PAX value destroys), applied only inside the staging tree, and kept by the disk.
 */

// vfs_cap_data v2, effective, permitted = cap_setuid (bit 7) + cap_net_raw (bit 13): byte 4 is 0x80.
const CAP = Buffer.from('0100000280200000000000000000000000000000', 'hex');
const CAP_HEX = `0x${CAP.toString('hex')}`;

/** The capability of a file as hex (getfattr, an independent reader), or undefined when it has none. */
async function capOf(file: string): Promise<string | undefined> {
  const r = await run('getfattr', ['--absolute-names', '-h', '-e', 'hex', '-n', 'security.capability', file], {
    timeoutMs: 10_000,
  });
  return /security\.capability=(0x[0-9a-f]+)/.exec(r.stdout)?.[1];
}

/** Every xattr of a file (any namespace), as getfattr dumps it; '' when none. */
async function allXattrs(file: string): Promise<string> {
  const r = await run('getfattr', ['--absolute-names', '-h', '-d', '-m', '-', '-e', 'hex', file], {
    timeoutMs: 10_000,
  });
  return r.stdout.trim();
}

// A minimal tar writer, so the tests can put raw bytes in PAX values and use GNU long names and base-256 sizes
// (tar-stream's packer writes PAX values as text).
function header(o: {
  name: string;
  type: string;
  size?: number;
  linkname?: string;
  mode?: number;
  base256?: boolean;
}): Buffer {
  const b = Buffer.alloc(512);
  const str = (s: string, off: number, len: number) => {
    Buffer.from(s, 'utf8').copy(b, off, 0, len);
  };
  const oct = (n: number, off: number, len: number) => str(`${n.toString(8).padStart(len - 1, '0')}\0`, off, len);
  str(o.name, 0, 100);
  oct(o.mode ?? 0o755, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  if (o.base256) {
    b[124] = 0x80;
    b.writeUInt32BE(o.size ?? 0, 132);
  } else {
    oct(o.size ?? 0, 124, 12);
  }
  oct(1_700_000_000, 136, 12);
  b.write(o.type, 156, 'latin1');
  if (o.linkname) str(o.linkname, 157, 100);
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  b.fill(32, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  str(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return b;
}
const padded = (body: Buffer) => Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = rest.length + 1;
  while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}
function pax(records: [string, Buffer][]): Buffer {
  const body = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
  return Buffer.concat([header({ name: 'PaxHeaders/x', type: 'x', size: body.length, mode: 0o644 }), padded(body)]);
}
const capPax = (v: Buffer = CAP) => pax([['SCHILY.xattr.security.capability', v]]);
function file(name: string, body: string, extra: { base256?: boolean } = {}): Buffer {
  const data = Buffer.from(body);
  return Buffer.concat([header({ name, type: '0', size: data.length, ...extra }), padded(data)]);
}
const dir = (name: string) => header({ name, type: '5' });
const symlink = (name: string, target: string) => header({ name, type: '2', linkname: target });
const hardlink = (name: string, target: string) => header({ name, type: '1', linkname: target });
function gnuLong(name: string): Buffer {
  const data = Buffer.from(`${name}\0`);
  return Buffer.concat([header({ name: '././@LongLink', type: 'L', size: data.length, mode: 0o644 }), padded(data)]);
}
const end = () => Buffer.alloc(1024);

describe('file capabilities from a real GNU tar --xattrs', () => {
  const t = tempDir('kiln-sdk-xattr-gnu-');
  const src = path.join(t.dir, 'src');
  const stage = path.join(t.dir, 'stage');
  const root = path.join(stage, 'root');
  const longDir = `opt/${'a'.repeat(90)}/${'b'.repeat(40)}`;
  let stats: ExtractStats;
  const warnings: string[] = [];

  beforeAll(async () => {
    await fsp.mkdir(path.join(src, 'bin'), { recursive: true });
    await fsp.mkdir(path.join(src, longDir), { recursive: true });
    await fsp.mkdir(stage, { mode: 0o700 });
    await fsp.copyFile('/bin/true', path.join(src, 'bin/ping'));
    await fsp.copyFile('/bin/true', path.join(src, longDir, 'tool'));
    await fsp.writeFile(path.join(src, 'bin/plain'), 'no capability\n');
    await fsp.chmod(path.join(src, 'bin/ping'), 0o755);
    await fsp.chmod(path.join(src, longDir, 'tool'), 0o750);
    // setcap computes the bytes itself; cap_setuid is bit 7, so the value has a 0x80 byte a UTF-8 decode would mangle.
    for (const f of ['bin/ping', `${longDir}/tool`]) {
      const r = await run('setcap', ['cap_setuid,cap_net_raw+ep', path.join(src, f)], { timeoutMs: 10_000 });
      expect(r.code, r.stderr).toBe(0);
    }
    expect(await capOf(path.join(src, 'bin/ping'))).toBe(CAP_HEX);
    const tar = path.join(t.dir, 'rootfs.tar');
    const r = await run('tar', ['--xattrs', '--xattrs-include=security.capability', '-C', src, '-cf', tar, '.'], {
      timeoutMs: 30_000,
    });
    expect(r.code, r.stderr).toBe(0);
    stats = await extractRootfs(Readable.from(await fsp.readFile(tar)), root, { onWarning: (m) => warnings.push(m) });
  });
  afterAll(() => t.cleanup());

  it('the staging files carry the identical capability bytes; others have none', async () => {
    expect(await capOf(path.join(root, 'bin/ping'))).toBe(CAP_HEX);
    expect(await capOf(path.join(root, longDir, 'tool'))).toBe(CAP_HEX);
    expect(await allXattrs(path.join(root, 'bin/plain'))).toBe('');
    expect(stats.capabilityCount).toBe(2);
    expect(stats.capabilityFailures).toBe(0);
    expect(stats.capabilities.map((c) => c.name).sort()).toEqual(['bin/ping', `${longDir}/tool`].sort());
    expect(stats.capabilities[0]!.capability).toBe('v2 permitted=0x2080 effective');
    expect(warnings).toEqual([]);
    // Mode and contents as before: the capability is set after chmod/chown, which would clear it.
    expect((await fsp.stat(path.join(root, longDir, 'tool'))).mode & 0o7777).toBe(0o750);
    expect(await fsp.readFile(path.join(root, 'bin/ping'))).toEqual(await fsp.readFile('/bin/true'));
  });

  it('mkfs.ext4 -d (the disk stage) keeps the capability in the root filesystem', async () => {
    const kernel = path.join(t.dir, 'vmlinuz');
    await fsp.writeFile(kernel, 'not a kernel');
    const layout = planDisk({ rootBytes: stats.blockBytes, entries: stats.entries, bootPayloadBytes: 12 });
    const out = path.join(t.dir, 'disk.raw');
    await assembleDisk({ layout, rootDir: root, kernelFile: kernel, workDir: stage, out });
    const r = await run(
      'debugfs',
      ['-R', 'ea_get -x /bin/ping security.capability', `${out}?offset=${layout.root.startSector * 512}`],
      { timeoutMs: 30_000 },
    );
    expect(r.stdout.replace(/\s+/g, ' ')).toContain(`= ${CAP.toString('hex').match(/../g)!.join(' ')}`);
  }, 60_000);

  it('mksquashfs (the ISO stage) keeps it too', async () => {
    const sq = path.join(t.dir, 'fs.squashfs');
    const r = await run('mksquashfs', [root, sq, '-comp', 'zstd', '-noappend', '-no-progress', '-quiet'], {
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const un = path.join(t.dir, 'unsquashed');
    const u = await run('unsquashfs', ['-q', '-d', un, sq], { timeoutMs: 60_000 });
    expect(u.code, u.stderr).toBe(0);
    expect(await capOf(path.join(un, 'bin/ping'))).toBe(CAP_HEX);
  }, 60_000);
});

describe('hostile capabilities never land outside the staging dir', () => {
  const t = tempDir('kiln-sdk-xattr-hostile-');
  const outside = path.join(t.dir, 'outside');
  const victim = path.join(outside, 'victim');
  const stage = path.join(t.dir, 'stage');
  const root = path.join(stage, 'root');
  const longName = `deep/${'d'.repeat(120)}/tool`;
  const paxName = `usr/sbin/${'p'.repeat(110)}`;
  let stats: ExtractStats;
  const warnings: string[] = [];

  beforeAll(async () => {
    await fsp.mkdir(path.join(outside, 'dir'), { recursive: true });
    await fsp.writeFile(victim, 'host file\n');
    await fsp.mkdir(stage, { mode: 0o700 });
    const bad = Buffer.alloc(20, 0xff); // not a vfs_cap_data: the kernel refuses it
    const tar = Buffer.concat([
      dir('./'),
      dir('bin/'),
      capPax(),
      file('bin/ping', 'ping'),
      // A hard link inside the tree to an extracted file: same inode, fine.
      capPax(),
      hardlink('bin/ping2', 'bin/ping'),
      // A capability on a symlink entry to a host file.
      capPax(),
      symlink('victim-link', victim),
      // A file under a symlinked directory.
      symlink('sub', path.join(outside, 'dir')),
      capPax(),
      file('sub/planted', 'x'),
      // Hard links to a host file.
      capPax(),
      hardlink('hl-up', '../outside/victim'),
      capPax(),
      hardlink('hl-abs', victim),
      // A file with a capability later replaced by a symlink to the host file.
      capPax(),
      file('swap', 'first'),
      symlink('swap', victim),
      // A refused entry of the same name changes nothing: the file keeps its capability.
      capPax(),
      file('keep', 'kept'),
      hardlink('keep', '../outside/victim'),
      // A symlink to the host file later replaced by a file with a capability: the file gets it, the host file not.
      symlink('swap2', victim),
      capPax(),
      file('swap2', 'second'),
      // GNU long name, PAX path, base-256 size: the capability follows the entry's final name.
      capPax(),
      gnuLong(longName),
      file(longName.slice(0, 99), 'long'),
      pax([
        ['path', Buffer.from(paxName)],
        ['SCHILY.xattr.security.capability', CAP],
      ]),
      file(paxName.slice(0, 99), 'pax'),
      capPax(),
      file('big256', 'hello', { base256: true }),
      // Values that are not capabilities: too long (skipped with a warning) or refused by the kernel (warned, build goes on).
      capPax(Buffer.alloc(100, 0x80)),
      file('huge-cap', 'x'),
      capPax(bad),
      file('bad-cap', 'x'),
      // Only regular files: a directory with a capability gets none.
      capPax(),
      dir('etc/'),
      file('after', 'still extracted'),
      end(),
    ]);
    stats = await extractRootfs(Readable.from(tar), root, { onWarning: (m) => warnings.push(m) });
  });
  afterAll(() => t.cleanup());

  it('the host file and directory stay untouched, without any xattr', async () => {
    expect(listTree(outside)).toEqual(['dir', 'victim']);
    expect(await fsp.readFile(victim, 'utf8')).toBe('host file\n');
    expect(await allXattrs(victim)).toBe('');
    expect(await allXattrs(path.join(outside, 'dir'))).toBe('');
  });

  it('applies capabilities to extracted regular files only, by their final names', async () => {
    expect(await capOf(path.join(root, 'bin/ping'))).toBe(CAP_HEX);
    expect((await fsp.stat(path.join(root, 'bin/ping2'))).nlink).toBe(2);
    expect(await capOf(path.join(root, 'bin/ping2'))).toBe(CAP_HEX);
    expect(await capOf(path.join(root, 'swap2'))).toBe(CAP_HEX);
    expect(await capOf(path.join(root, 'keep'))).toBe(CAP_HEX);
    expect(await fsp.readFile(path.join(root, 'keep'), 'utf8')).toBe('kept');
    expect(await fsp.readFile(path.join(root, 'swap2'), 'utf8')).toBe('second');
    expect(await capOf(path.join(root, longName))).toBe(CAP_HEX);
    expect(await fsp.readFile(path.join(root, longName), 'utf8')).toBe('long');
    expect(await capOf(path.join(root, paxName))).toBe(CAP_HEX);
    expect(await capOf(path.join(root, 'big256'))).toBe(CAP_HEX);
    expect(await fsp.readFile(path.join(root, 'big256'), 'utf8')).toBe('hello');
    expect(await fsp.readFile(path.join(root, 'after'), 'utf8')).toBe('still extracted');
    for (const f of ['victim-link', 'swap', 'etc', 'huge-cap', 'bad-cap'])
      expect(await allXattrs(path.join(root, f)), f).toBe('');
    expect((await fsp.lstat(path.join(root, 'swap'))).isSymbolicLink()).toBe(true);
    expect(stats.capabilities.map((c) => c.name).sort()).toEqual(
      ['big256', 'bin/ping', 'bin/ping2', 'keep', longName, paxName, 'swap2'].sort(),
    );
  });

  it('warns about what it did not apply, and does not fail the extraction', () => {
    expect(stats.capabilityFailures).toBe(1);
    expect(warnings.some((w) => /huge-cap.*100 bytes is not a capability/.test(w))).toBe(true);
    expect(warnings.some((w) => /bad-cap.*not applied: Invalid argument/.test(w))).toBe(true);
    expect(Object.fromEntries(stats.skipped.map((s) => [s.name, s.reason]))).toMatchObject({
      'sub/planted': expect.stringMatching(/not a directory/),
      'hl-up': expect.stringMatching(/hard link/),
      'hl-abs': expect.stringMatching(/hard link/),
    });
  });
});

describe('CapabilityScanner', () => {
  it('passes bytes through unchanged and caps how many capabilities it keeps', async () => {
    const warnings: string[] = [];
    const s = new CapabilityScanner({ maxKept: 2, onWarning: (m) => warnings.push(m) });
    const tar = Buffer.concat([capPax(), file('a', '1'), capPax(), file('b', '2'), capPax(), file('c', '3'), end()]);
    const out: Buffer[] = [];
    // Odd chunk sizes: headers and PAX records split across chunks.
    for (let i = 0; i < tar.length; i += 77) s.write(tar.subarray(i, i + 77));
    s.end();
    for await (const c of s) out.push(c as Buffer);
    expect(Buffer.concat(out)).toEqual(tar);
    expect(s.capabilityOf(0)).toEqual({ name: 'a', value: CAP });
    expect(s.capabilityOf(1)).toEqual({ name: 'b', value: CAP });
    expect(s.capabilityOf(2)).toBeUndefined();
    expect(warnings.join('\n')).toMatch(/more than 2 files with capabilities/);
    expect(describeCapability(CAP)).toBe('v2 permitted=0x2080 effective');
  });
});

describe('a real build whose Dockerfile runs setcap', () => {
  const repo = path.resolve(import.meta.dirname, '../..');
  const t = tempDir('kiln-sdk-xattr-engine-');
  afterAll(() => t.cleanup());
  const out = path.join(t.dir, 'out');
  const bin = '/usr/local/bin/kiln-cap';

  beforeAll(async () => {
    const df = path.join(t.dir, 'Dockerfile');
    await fsp.writeFile(
      df,
      [
        'FROM debian:bookworm',
        'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin && rm -rf /var/lib/apt/lists/*',
        `RUN cp /bin/true ${bin} && setcap cap_setuid,cap_net_raw+ep ${bin} && getcap ${bin}`,
        // The app service reports, from the booted machine's own root filesystem, what the kernel there sees.
        `CMD ["/bin/sh", "-c", "echo kiln-cap-check: $(getcap ${bin}); exec sleep infinity"]`,
        '',
      ].join('\n'),
    );
    const code = await new Promise<number | null>((resolve, reject) => {
      const p = spawn(
        path.join(repo, 'bin/kiln'),
        ['sdk', 'build', '--dockerfile', df, '--out', out, '--format', 'raw,tar', '--boot-firmware', 'bios'],
        { stdio: 'ignore' },
      );
      p.on('error', reject);
      p.on('close', resolve);
    });
    const log = await fsp.readFile(path.join(out, 'build.log'), 'utf8').catch(() => '');
    expect(code, log.slice(-3000)).toBe(0);
    // A build and a boot under TCG: the bound is only a net (at load 14 this took over 5 minutes).
  }, 3_600_000);

  it("the export stage reads the engine's capability into the staging tree, bytes intact", async () => {
    const m = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8')) as { image: { tag: string } };
    const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
    const stage = path.join(t.dir, 'stage');
    await fsp.mkdir(stage, { mode: 0o700 });
    const root = path.join(stage, 'root');
    const stats = await exportRootfs(
      docker,
      m.image.tag,
      root,
      { maxBytes: 4 * 2 ** 30, maxEntries: 1_000_000 },
      new Reporter(undefined, 1 << 20, () => undefined),
    );
    expect(await capOf(path.join(root, bin))).toBe(CAP_HEX);
    expect(stats.capabilities).toContainEqual({
      name: bin.slice(1),
      capability: 'v2 permitted=0x2080 effective',
      value: CAP.toString('hex'),
    });
    expect(stats.capabilityFailures).toBe(0);
    const log = await fsp.readFile(path.join(out, 'build.log'), 'utf8');
    expect(log).toContain(`file capabilities kept on`);
    expect(log).toContain(`${bin} (v2 permitted=0x2080 effective)`);
    const manifest = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8')) as {
      fileCapabilities?: unknown[];
    };
    expect(manifest.fileCapabilities).toContainEqual({
      path: bin,
      capability: 'v2 permitted=0x2080 effective',
      value: CAP.toString('hex'),
    });
  }, 120_000);

  it("the raw disk's root filesystem has it (debugfs, nothing mounted)", async () => {
    const m = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8')) as {
      disk: { sectorSize: number; partitions: { label: string; startSector: number }[] };
    };
    const rootPart = m.disk.partitions.find((p) => p.label === 'root')!;
    const r = await run(
      'debugfs',
      [
        '-R',
        `ea_get -x ${bin} security.capability`,
        `${path.join(out, 'image.raw')}?offset=${rootPart.startSector * m.disk.sectorSize}`,
      ],
      { timeoutMs: 60_000 },
    );
    expect(r.stdout.replace(/\s+/g, ' '), r.stderr).toContain(`= ${CAP.toString('hex').match(/../g)!.join(' ')}`);
  }, 60_000);

  it('the booted machine sees it (getcap in the guest, printed on the serial console)', async () => {
    const serial = await fsp.readFile(path.join(out, 'serial-image.raw.log'), 'utf8');
    expect(serial).toContain(`kiln-cap-check: ${bin} cap_setuid,cap_net_raw=ep`);
  });

  it('rootfs.tar.zst has it: GNU tar --xattrs restores it', async () => {
    const x = path.join(t.dir, 'fromtar');
    await fsp.mkdir(x);
    const r = await run(
      'tar',
      [
        '--zstd',
        '--xattrs',
        '--xattrs-include=security.capability',
        '-C',
        x,
        '-xf',
        path.join(out, 'rootfs.tar.zst'),
        `.${bin}`,
      ],
      { timeoutMs: 60_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await capOf(path.join(x, bin))).toBe(CAP_HEX);
  }, 60_000);
});
