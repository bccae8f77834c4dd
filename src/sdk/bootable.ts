import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { hostPath, lstatIn, readFileIn } from './fsroot.js';

export interface BootFiles {
  /** Guest paths of the kernel and initrd (regular files under /boot, found without following links). */
  kernel: string;
  initrd?: string;
  version: string;
}

export interface BootCheck {
  boot?: BootFiles;
  /** The guest path of an init that exists (a regular file or a link), if any. */
  init?: string;
  osRelease: Record<string, string>;
}

/** Compares kernel versions like `6.1.0-28-amd64` numerically, part by part. */
export function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/**
 * Finds the newest kernel in /boot (vmlinuz-<version>) and its initrd (initrd.img-<version>). The /vmlinuz
 * convenience links are not used: they are symlinks, and a hostile image can point them anywhere.
 */
export async function findBootFiles(root: string): Promise<BootFiles | undefined> {
  const bootDir = await hostPath(root, '/boot/x');
  if (!bootDir) return undefined;
  const dir = path.dirname(bootDir);
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  const kernels: string[] = [];
  for (const n of names) {
    if (!n.startsWith('vmlinuz-')) continue;
    const st = await fsp.lstat(path.join(dir, n)).catch(() => undefined);
    if (st?.isFile() && st.size > 0) kernels.push(n.slice('vmlinuz-'.length));
  }
  kernels.sort(compareVersions);
  const version = kernels.at(-1);
  if (!version) return undefined;
  const ist = await fsp.lstat(path.join(dir, `initrd.img-${version}`)).catch(() => undefined);
  return {
    kernel: `/boot/vmlinuz-${version}`,
    initrd: ist?.isFile() ? `/boot/initrd.img-${version}` : undefined,
    version,
  };
}

export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return out;
}

export async function checkBootable(root: string): Promise<BootCheck> {
  const boot = await findBootFiles(root);
  let init: string | undefined;
  for (const p of ['/sbin/init', '/usr/sbin/init', '/lib/systemd/systemd', '/usr/lib/systemd/systemd']) {
    // /sbin is a symlink to usr/sbin on merged-/usr systems: check the path as the guest sees it, via /usr too.
    const st = await lstatIn(root, p);
    if (st && (st.isFile() || st.isSymbolicLink())) {
      init = p;
      break;
    }
  }
  const osText = (await readFileIn(root, '/etc/os-release')) ?? (await readFileIn(root, '/usr/lib/os-release'));
  return { boot, init, osRelease: osText ? parseOsRelease(osText.toString('utf8')) : {} };
}
