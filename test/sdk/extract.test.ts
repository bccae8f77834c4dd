import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBootFiles } from '../../src/sdk/bootable.js';
import { assembleDisk, planDisk } from '../../src/sdk/disk.js';
import { extractRootfs, type ExtractStats } from '../../src/sdk/extract.js';
import { finishRootfs } from '../../src/sdk/finish.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { isKilnError } from '../../src/shared/errors.js';
import { run } from '../../src/shared/subprocess.js';
import { listTree, tempDir } from '../helpers/tmp.js';

type H = Partial<tarStream.Header> & { name: string };

async function makeTar(entries: [H, (string | Buffer)?][]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const [h, body] of entries) {
    if (body !== undefined) pack.entry(h, body);
    else if (h.type === 'file' || !h.type) pack.entry(h, '');
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

// A file the hostile tar tries to write at the host's root, through a symlink to `/`.
const rootProbe = `/kiln-extract-probe-${process.pid}-${Date.now()}`;

describe('safe extraction of a hostile image', () => {
  const t = tempDir('kiln-sdk-extract-');
  // Layout: <tmp>/outside (what must stay untouched), <tmp>/stage/root (the staging tree).
  const outside = path.join(t.dir, 'outside');
  const stage = path.join(t.dir, 'stage');
  const root = path.join(stage, 'root');
  let stats: ExtractStats;

  beforeAll(async () => {
    await fsp.mkdir(outside);
    await fsp.writeFile(path.join(outside, 'secret'), 'host secret\n');
    await fsp.mkdir(stage, { mode: 0o700 });
    const tar = await makeTar([
      [{ name: './', type: 'directory', mode: 0o755 }],
      [{ name: '../escape-dotdot', type: 'file' }, 'x'],
      [{ name: 'a/../../escape-nested', type: 'file' }, 'x'],
      [{ name: '/abs-file', type: 'file', mode: 0o644 }, 'lands inside'],
      // An absolute symlink, then files and a directory written "through" it.
      [{ name: 'etc', type: 'symlink', linkname: outside }],
      [{ name: 'etc/passwd', type: 'file' }, 'root::0:0::/:/bin/sh\n'],
      [{ name: 'etc/sub/', type: 'directory' }],
      // `/etc -> /`: the same through a link to the host's root.
      [{ name: 'hostroot', type: 'symlink', linkname: '/' }],
      [{ name: `hostroot${rootProbe}`, type: 'file' }, 'x'],
      // A relative symlink climbing out, then a file through it.
      [{ name: 'rel', type: 'symlink', linkname: '../../outside' }],
      [{ name: 'rel/planted', type: 'file' }, 'x'],
      // A regular file replaced by a symlink to the outside, then written again: must replace the link, not follow it.
      [{ name: 'swap', type: 'file' }, 'first'],
      [{ name: 'swap', type: 'symlink', linkname: path.join(outside, 'swapped') }],
      [{ name: 'swap', type: 'file' }, 'second'],
      // Hard links to host files (absolute and climbing) are refused; one to an extracted file works.
      [{ name: 'hl-abs', type: 'link', linkname: path.join(outside, 'secret') }],
      [{ name: 'hl-up', type: 'link', linkname: '../outside/secret' }],
      [{ name: 'bin/', type: 'directory', mode: 0o755 }],
      [{ name: 'bin/su', type: 'file', mode: 0o4755, uid: 0, gid: 0 }, '#!/bin/sh\n'],
      [{ name: 'bin/su-again', type: 'link', linkname: 'bin/su' }],
      // Owners other than the extractor's are applied; a directory entry replaces an earlier file of that name.
      [{ name: 'home/app/', type: 'directory', mode: 0o2750, uid: 1000, gid: 1001 }],
      [{ name: 'home/app/data', type: 'file', mode: 0o640, uid: 1000, gid: 1001 }, 'owned'],
      [{ name: 'was-file', type: 'file' }, 'x'],
      [{ name: 'was-file/', type: 'directory', mode: 0o700 }],
      // Device nodes and FIFOs are not created on the host.
      [{ name: 'dev/', type: 'directory' }],
      [{ name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }],
      [{ name: 'dev/mem', type: 'character-device', devmajor: 1, devminor: 1 }],
      [{ name: 'fifo', type: 'fifo' }],
      // A /boot that points outside, with a "kernel" there: boot lookup must not follow it.
      [{ name: 'boot', type: 'symlink', linkname: outside }],
      [{ name: 'vmlinuz', type: 'symlink', linkname: path.join(outside, 'secret') }],
      [{ name: 'usr/lib/os-release', type: 'file' }, 'ID=debian\n'],
      [{ name: 'var/lib/dbus', type: 'symlink', linkname: outside }],
    ]);
    await fsp.writeFile(path.join(outside, 'vmlinuz-9.9.9'), 'not a kernel');
    stats = await extractRootfs(Readable.from(tar), root);
  });
  afterAll(() => t.cleanup());

  it('writes nothing outside the staging dir', () => {
    expect(listTree(outside)).toEqual(['secret', 'vmlinuz-9.9.9']);
    expect(listTree(t.dir).filter((p) => !p.startsWith('stage') && !p.startsWith('outside'))).toEqual([]);
  });

  it('case 44: refuses ../ names, writes through symlinks (to /, or out of the tree) and outside hard links, skips devices', () => {
    const reasons = Object.fromEntries(stats.skipped.map((s) => [s.name, s.reason]));
    expect(Object.keys(reasons).sort()).toEqual(
      [
        '../escape-dotdot',
        'a/../../escape-nested',
        'dev/mem',
        'dev/sda',
        'etc/passwd',
        'etc/sub/',
        'fifo',
        'hl-abs',
        'hl-up',
        'rel/planted',
        `hostroot${rootProbe}`,
      ].sort(),
    );
    expect(existsSync(rootProbe)).toBe(false);
    expect(reasons['etc/passwd']).toMatch(/not a directory/);
  });

  it('case 44: keeps symlinks verbatim, replaces (never follows) links, keeps setuid inside the 0700 staging dir', async () => {
    expect(await fsp.readlink(path.join(root, 'etc'))).toBe(outside);
    expect(await fsp.readFile(path.join(root, 'swap'), 'utf8')).toBe('second');
    expect((await fsp.lstat(path.join(root, 'swap'))).isFile()).toBe(true);
    expect(await fsp.readFile(path.join(root, 'abs-file'), 'utf8')).toBe('lands inside');
    const su = await fsp.stat(path.join(root, 'bin/su'));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect(su.nlink).toBe(2);
    expect((await fsp.stat(stage)).mode & 0o777).toBe(0o700);
    expect(listTree(path.join(root, 'dev'))).toEqual([]);
  });

  it('applies owners and modes, and lets a directory replace a file of the same name', async () => {
    const dir = await fsp.lstat(path.join(root, 'home/app'));
    expect([dir.uid, dir.gid, dir.mode & 0o7777]).toEqual([1000, 1001, 0o2750]);
    const f = await fsp.lstat(path.join(root, 'home/app/data'));
    expect([f.uid, f.gid, f.mode & 0o7777]).toEqual([1000, 1001, 0o640]);
    const wf = await fsp.lstat(path.join(root, 'was-file'));
    expect(wf.isDirectory()).toBe(true);
    expect(wf.mode & 0o777).toBe(0o700);
  });

  it('boot lookup and rootfs finishing do not follow links out of the tree', async () => {
    expect(await findBootFiles(root)).toBeUndefined();
    const rep = new Reporter(undefined, 1 << 20, () => undefined);
    await finishRootfs(root, rep);
    expect(listTree(outside)).toEqual(['secret', 'vmlinuz-9.9.9']);
    expect(await fsp.readFile(path.join(outside, 'secret'), 'utf8')).toBe('host secret\n');
  });

  it('case 44: assembles a disk from the hostile tree without touching the host (no mount, no device node)', async () => {
    const kernel = path.join(t.dir, 'k');
    await fsp.writeFile(kernel, 'fake kernel');
    const layout = planDisk({ rootBytes: stats.blockBytes, entries: stats.entries, bootPayloadBytes: 11 });
    const out = path.join(t.dir, 'disk.raw');
    await assembleDisk({ layout, rootDir: root, kernelFile: kernel, workDir: stage, out });
    expect(listTree(outside)).toEqual(['secret', 'vmlinuz-9.9.9']);
    // The root filesystem holds the symlink as a symlink (debugfs reads the image; nothing is mounted).
    const r = await run('debugfs', ['-R', 'stat /etc', `${out}?offset=${layout.root.startSector * 512}`], {
      timeoutMs: 30_000,
    });
    expect(r.stdout + r.stderr).toMatch(/Type: symlink/);
    const dev = await run('debugfs', ['-R', 'ls -l /dev', `${out}?offset=${layout.root.startSector * 512}`], {
      timeoutMs: 30_000,
    });
    expect(dev.stdout).not.toMatch(/\bsda\b|\bmem\b/);
    expect(existsSync(rootProbe)).toBe(false);
  });
});

describe('finding 7: entries count, not only bytes', () => {
  const t = tempDir('kiln-sdk-entries-');
  afterAll(() => t.cleanup());

  it('refuses a tar of many empty entries (files, short symlinks, hard links, implied directories) past the limit, with a clear error', async () => {
    // 0 bytes of data each: under any byte limit, but each an inode of the staging tmpfs.
    const entries: [H, (string | Buffer)?][] = [[{ name: 'f0', type: 'file' }]];
    for (let i = 1; i <= 12_000; i++) {
      const kind = i % 4;
      if (kind === 0) entries.push([{ name: `e/f${i}`, type: 'file' }]);
      else if (kind === 1) entries.push([{ name: `s/l${i}`, type: 'symlink', linkname: 'x' }]);
      else if (kind === 2) entries.push([{ name: `h/h${i}`, type: 'link', linkname: 'f0' }]);
      else entries.push([{ name: `d/${i}/a/b/c`, type: 'file' }]);
    }
    const tar = await makeTar(entries);
    const root = path.join(t.dir, 'root');
    const err = await extractRootfs(Readable.from(tar), root, { maxBytes: 2 ** 30, maxEntries: 10_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKilnError(err, 'limit_exceeded')).toBe(true);
    expect((err as Error).message).toBe(
      "The image's filesystem has more than 10000 entries (files, directories, links; sdk.maxImageEntries)",
    );
    // It stopped at the limit: what was made before is at most that many inodes.
    expect(listTree(root).length).toBeLessThanOrEqual(10_000);
    // The same tree under a higher limit goes through: the limit, not the kinds of entries, refused it.
    const ok = await extractRootfs(Readable.from(tar), path.join(t.dir, 'ok'), {
      maxBytes: 2 ** 30,
      maxEntries: 30_000,
    });
    expect(ok.hardlinks).toBe(3000);
    expect(ok.symlinks).toBe(3000);
    expect(ok.dataBytes).toBe(0);
  });
});

describe('disk layout', () => {
  it('aligns partitions to 1 MiB and sizes them from the content', () => {
    const l = planDisk({ rootBytes: 600 * 2 ** 20, entries: 15_000, bootPayloadBytes: 45 * 2 ** 20 });
    expect(l.boot.startSector).toBe(2048);
    expect(l.boot.sectors % 2048).toBe(0);
    expect(l.root.startSector).toBe(l.boot.startSector + l.boot.sectors);
    expect(l.root.startSector % 2048).toBe(0);
    expect(l.totalBytes).toBe((l.root.startSector + l.root.sectors) * 512);
    expect(l.boot.sectors * 512).toBeGreaterThanOrEqual(90 * 2 ** 20);
    expect(l.root.sectors * 512).toBeGreaterThan(720 * 2 ** 20);
    expect(l.root.sectors * 512).toBeLessThan(1200 * 2 ** 20);
    expect(l.root.inodes).toBeGreaterThanOrEqual(15_000 * 1.5);
  });

  it('small trees still get a usable disk', () => {
    const l = planDisk({ rootBytes: 4096, entries: 1, bootPayloadBytes: 0 });
    expect(l.boot.sectors).toBe(32 * 2048);
    expect(l.root.inodes).toBe(16_384);
    expect(l.root.sectors * 512).toBeGreaterThanOrEqual(256 * 2 ** 20);
  });
});
