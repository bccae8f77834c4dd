import { constants as C, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../shared/subprocess.js';
import { parseSha256Sums } from '../shared/checksums.js';
import { verifyText } from '../shared/sshsig.js';
import { RELEASE_JSON, RELEASE_TYPE } from '../protocol/index.js';
import { parseDpkgStatus } from './manifest.js';
import { sha256File } from './result.js';

export interface VerifyCheck {
  name: string;
  ok: boolean;
  message: string;
}
export interface VerifyReport {
  ok: boolean;
  checks: VerifyCheck[];
}

export interface VerifyOptions {
  /** OpenSSH public key line the signature must verify against. */
  publicKey?: string;
  /** Fail when there is no signature. */
  requireSignature?: boolean;
  /**
   * Compare the SBOM with the image's dpkg database (default true). It needs sfdisk, debugfs and, for a qcow2,
   * qemu-img: `kiln client` leaves it out of its downloads' check, so a CI job without disk tools still checks the
   * digests and the signature, and `kiln verify --skip-sbom` does the same.
   */
  sbom?: boolean;
  /**
   * The directory must be a release of this name (release.json's `name`). A directory holding release.json is
   * checked as a release whether or not a name is given: signature required, release.json and every other file
   * listed in the signed SHA256SUMS.
   */
  release?: string;
}

/** A name from SHA256SUMS must be a plain file in DIR: no path, no link. */
async function regularFileIn(dir: string, name: string): Promise<string | undefined> {
  if (name === '.' || name === '..' || name.includes('/') || name.includes('\0')) return undefined;
  const p = path.join(dir, name);
  const fh = await fsp.open(p, C.O_RDONLY | C.O_NOFOLLOW).catch(() => undefined);
  if (!fh) return undefined;
  try {
    return (await fh.stat()).isFile() ? p : undefined;
  } finally {
    await fh.close();
  }
}

/** Reads /var/lib/dpkg/status out of the raw disk's root partition with debugfs: nothing is mounted. */
export async function dpkgStatusFromRaw(raw: string): Promise<string> {
  const pt = await run('sfdisk', ['-J', raw], { timeoutMs: 30_000 });
  if (pt.code !== 0) throw new Error(`no partition table: ${pt.stderr.trim()}`);
  const table = (
    JSON.parse(pt.stdout) as { partitiontable: { sectorsize?: number; partitions: { start: number; type: string }[] } }
  ).partitiontable;
  const root = table.partitions.find(
    (p) =>
      p.type === '83' || /^(0fc63daf-8483-4772-8e79-3d69d8477de4|4f68bce3-e8cd-4db1-96e7-fbcaf984b709)$/i.test(p.type),
  );
  if (!root) throw new Error('no Linux root partition');
  const offset = root.start * (table.sectorsize ?? 512);
  const r = await run('debugfs', ['-R', 'cat /var/lib/dpkg/status', `${raw}?offset=${offset}`], {
    timeoutMs: 60_000,
    maxOutputBytes: 64 << 20,
  });
  if (r.code !== 0 || !r.stdout)
    throw new Error(`debugfs could not read the dpkg database: ${r.stderr.trim().slice(-200)}`);
  return r.stdout;
}

const key = (name: string, version: string, arch: string) => `${name} ${version} ${arch}`;

/**
 * `kiln verify DIR`: SHA256SUMS matches every file it lists (and lists the images), the signature (when present or
 * required) verifies, and (unless `sbom: false`) the SBOM's packages are exactly the packages in the image's dpkg
 * database.
 */
export async function verifyDir(dir: string, o: VerifyOptions = {}): Promise<VerifyReport> {
  const checks: VerifyCheck[] = [];
  const add = (name: string, ok: boolean, message: string) => checks.push({ name, ok, message });
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-verify-'));
  try {
    let sumsText: string | undefined;
    try {
      sumsText = await fsp.readFile(path.join(dir, 'SHA256SUMS'), 'utf8');
    } catch {
      add('checksums', false, 'SHA256SUMS is missing');
    }
    let listed: { sha256: string; name: string }[] = [];
    if (sumsText !== undefined) {
      try {
        listed = parseSha256Sums(sumsText);
      } catch (e) {
        add('checksums', false, (e as Error).message);
      }
      for (const l of listed) {
        const p = await regularFileIn(dir, l.name);
        if (!p) {
          add(`sha256 ${l.name}`, false, 'missing, not a regular file, or not a plain name');
          continue;
        }
        const got = await sha256File(p);
        add(
          `sha256 ${l.name}`,
          got === l.sha256,
          got === l.sha256 ? 'matches' : `mismatch: expected ${l.sha256}, got ${got}`,
        );
      }
      const images = (await fsp.readdir(dir)).filter((n) => /^image\./.test(n));
      for (const n of images)
        if (!listed.some((l) => l.name === n)) add(`sha256 ${n}`, false, 'image not listed in SHA256SUMS');
      if (!listed.length) add('checksums', false, 'SHA256SUMS lists no file');
    }

    const isRelease = o.release !== undefined || (await regularFileIn(dir, RELEASE_JSON)) !== undefined;
    if (isRelease) await checkRelease(dir, listed, o.release, add);
    const sig = path.join(dir, 'SHA256SUMS.sig');
    const hasSig = await fsp.lstat(sig).then(
      (s) => s.isFile(),
      () => false,
    );
    // A release is always signed: one whose signature was removed is not one.
    if (hasSig || o.requireSignature || isRelease) {
      if (!hasSig) add('signature', false, 'SHA256SUMS.sig is missing');
      else if (!o.publicKey)
        add(
          'signature',
          false,
          'SHA256SUMS.sig present but no public key to check it against (--key FILE or --key-url URL)',
        );
      else if (sumsText === undefined) add('signature', false, 'nothing to check it against: SHA256SUMS is missing');
      else {
        const v = await verifyText(
          await fsp.readFile(path.join(dir, 'SHA256SUMS')),
          await fsp.readFile(sig),
          o.publicKey,
        );
        add('signature', v.ok, v.ok ? 'valid (ssh-keygen -Y verify, namespace kiln-image)' : `invalid: ${v.message}`);
      }
    }

    if (o.sbom !== false) await checkSbom(dir, work, add);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  return { ok: checks.length > 0 && checks.every((c) => c.ok), checks };
}

/**
 * A release: release.json of Kiln's release type (and of the name asked for), listed in SHA256SUMS like every other
 * file of the directory, so nothing can be added to or swapped into a release without failing the signed list.
 */
async function checkRelease(
  dir: string,
  listed: ReadonlyArray<{ name: string }>,
  name: string | undefined,
  add: (name: string, ok: boolean, message: string) => void,
): Promise<void> {
  const file = await regularFileIn(dir, RELEASE_JSON);
  if (!file) return add('release', false, `${RELEASE_JSON} is missing: not a Kiln release`);
  let doc: { type?: unknown; name?: unknown };
  try {
    doc = JSON.parse(await fsp.readFile(file, 'utf8')) as typeof doc;
  } catch {
    return add('release', false, `${RELEASE_JSON} is not JSON`);
  }
  const problems: string[] = [];
  if (doc.type !== RELEASE_TYPE) problems.push(`its type is not ${RELEASE_TYPE}`);
  if (name !== undefined && doc.name !== name)
    problems.push(`it is release ${JSON.stringify(String(doc.name).slice(0, 64))}, not ${JSON.stringify(name)}`);
  const signed = new Set(listed.map((l) => l.name));
  const unlisted = (await fsp.readdir(dir)).filter(
    (n) => n !== 'SHA256SUMS' && n !== 'SHA256SUMS.sig' && !signed.has(n),
  );
  if (unlisted.length) problems.push(`SHA256SUMS does not list ${unlisted.slice(0, 5).join(', ')}`);
  add(
    'release',
    problems.length === 0,
    problems.length ? problems.join('; ') : `release ${String(doc.name)}: every file is listed in SHA256SUMS`,
  );
}

/** The SBOM's packages against the dpkg database inside the image (image.raw, or image.qcow2 converted in `work`). */
async function checkSbom(
  dir: string,
  work: string,
  add: (name: string, ok: boolean, message: string) => void,
): Promise<void> {
  const sbomPath = await regularFileIn(dir, 'sbom.spdx.json');
  if (!sbomPath) return add('sbom', false, 'sbom.spdx.json is missing');
  try {
    const sbom = JSON.parse(await fsp.readFile(sbomPath, 'utf8')) as {
      spdxVersion?: string;
      packages?: {
        SPDXID: string;
        name: string;
        versionInfo?: string;
        externalRefs?: { referenceLocator: string }[];
      }[];
    };
    if (sbom.spdxVersion !== 'SPDX-2.3') throw new Error(`not SPDX-2.3 (${String(sbom.spdxVersion)})`);
    const inSbom = new Set<string>();
    for (const p of sbom.packages ?? []) {
      if (p.SPDXID === 'SPDXRef-Image') continue;
      const arch = /[?&]arch=([^&]+)/.exec(p.externalRefs?.[0]?.referenceLocator ?? '')?.[1];
      inSbom.add(key(p.name, p.versionInfo ?? '', decodeURIComponent(arch ?? '')));
    }
    let raw = await regularFileIn(dir, 'image.raw');
    if (!raw) {
      const q = await regularFileIn(dir, 'image.qcow2');
      if (q) {
        raw = path.join(work, 'image.raw');
        const c = await run('qemu-img', ['convert', '-O', 'raw', q, raw], { timeoutMs: 10 * 60_000 });
        if (c.code !== 0) throw new Error(`cannot read image.qcow2: ${c.stderr.trim().slice(-200)}`);
      }
    }
    if (!raw) throw new Error('no image.raw or image.qcow2 to compare with');
    const inImage = new Set(
      parseDpkgStatus(await dpkgStatusFromRaw(raw)).map((p) => key(p.name, p.version, p.architecture)),
    );
    const onlySbom = [...inSbom].filter((k) => !inImage.has(k));
    const onlyImage = [...inImage].filter((k) => !inSbom.has(k));
    const ok = onlySbom.length === 0 && onlyImage.length === 0 && inImage.size > 0;
    add(
      'sbom',
      ok,
      ok
        ? `${inImage.size} packages match the image's dpkg database`
        : `differs from the image: ${onlySbom.length} only in the SBOM (${onlySbom.slice(0, 5).join(', ')}), ${onlyImage.length} only in the image (${onlyImage.slice(0, 5).join(', ')})`,
    );
  } catch (e) {
    add('sbom', false, (e as Error).message);
  }
}
