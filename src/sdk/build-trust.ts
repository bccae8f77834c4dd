import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';
import { buildTag, contextDigest, dockerBuild, type BuildSettings } from './docker-build.js';
import { hostPath, lstatIn, readdirIn, readFileIn, removeIn, symlinkIn, writeFileIn } from './fsroot.js';
import { readPackages } from './manifest.js';
import type { Reporter } from './reporter.js';

/**
 * Extra CA certificates a Dockerfile's RUN steps trust (config `sdk.buildTrust`), e.g. a TLS-intercepting proxy's.
 *
 * The legacy builder has no RUN --mount and passes no build arg to RUN unless the Dockerfile declares it, so the
 * certificates travel as files: a layer of Kiln's own on each base (`FROM <base id>` + `COPY` into
 * /usr/local/share/ca-certificates, the place Debian keeps local CAs), and the Dockerfile's FROMs of that base are
 * pinned to it (../dockerfile/pin.ts). Nothing else: no ENV (it would reach the image's config and the app
 * service's environment), no bundle of Kiln's. Debian's tools trust them once ca-certificates is installed, which
 * every image that fetches over HTTPS installs: its `update-ca-certificates` (also when a later RUN installs or
 * reruns it) puts every local CA into /etc/ssl/certs/ca-certificates.crt, the bundle curl, apt, OpenSSL, Debian's
 * python3 and pip and Debian's nodejs read. The layer's id depends on the certificates, so another set of CAs never
 * reuses layers built on another.
 *
 * After the export, unless `keepInImage`, exactly what Kiln caused goes out of the tree: its files, the links and
 * hash links update-ca-certificates made for them, and their PEM blocks in the bundle (one per file). A Dockerfile
 * that installs the same CA itself (COPY + update-ca-certificates) keeps its copy, its block and a hash link.
 */

export const LOCAL_CA_DIR = '/usr/local/share/ca-certificates';
export const ETC_CERTS = '/etc/ssl/certs';
export const CA_BUNDLE = `${ETC_CERTS}/ca-certificates.crt`;
const FILE_PREFIX = 'kiln-build-trust-';
const MAX_FILE_BYTES = 1 << 20;
const MAX_CERTS = 200;

export interface TrustCert {
  /** sha256 of the DER (lower-case hex): what the manifest records. */
  sha256: string;
  subject: string;
  notAfter: string;
  /** Its name in LOCAL_CA_DIR. */
  fileName: string;
  /** The certificate alone, re-encoded from its DER: nothing else of the admin's file (a key) reaches a build. */
  pem: string;
}

export interface BuildTrust {
  certs: TrustCert[];
  keepInImage: boolean;
}

export interface TrustRemoval {
  removed: string[];
  /** What Kiln could not take out, or did besides removing (a hash link pointed at the Dockerfile's own copy). */
  notes: string[];
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----/g;

/** The DER of each PEM certificate block in a text. */
export function pemCertificates(text: string): Buffer[] {
  return [...text.matchAll(PEM_CERT)].map((m) => Buffer.from(m[1]!.replace(/[\r\n]/g, ''), 'base64'));
}

function toPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/** One line of a distinguished name (`CN=x, O=y`), as the manifest shows it. */
function oneLine(dn: string): string {
  return dn.split('\n').filter(Boolean).join(', ');
}

async function certFiles(entry: string): Promise<string[]> {
  const st = await fsp.stat(entry).catch(() => undefined);
  if (!st) throw new KilnError('invalid_input', `sdk.buildTrust.caFiles: ${entry} does not exist or cannot be read`);
  if (!st.isDirectory()) return [entry];
  const names = (await fsp.readdir(entry)).filter((n) => /\.(?:crt|pem)$/.test(n)).sort();
  const files: string[] = [];
  for (const n of names)
    if ((await fsp.stat(path.join(entry, n)).catch(() => undefined))?.isFile()) files.push(path.join(entry, n));
  if (!files.length)
    throw new KilnError('invalid_input', `sdk.buildTrust.caFiles: the directory ${entry} holds no *.crt or *.pem file`);
  return files;
}

/** Reads `sdk.buildTrust`: every certificate of the files and directories named, once each; undefined when none. */
export async function loadBuildTrust(cfg: {
  caFiles: readonly string[];
  keepInImage: boolean;
}): Promise<BuildTrust | undefined> {
  if (!cfg.caFiles.length) return undefined;
  const certs = new Map<string, TrustCert>();
  for (const entry of cfg.caFiles) {
    for (const file of await certFiles(entry)) {
      const st = await fsp.stat(file);
      if (st.size > MAX_FILE_BYTES)
        throw new KilnError('invalid_input', `sdk.buildTrust.caFiles: ${file} is larger than 1 MiB`);
      const ders = pemCertificates(await fsp.readFile(file, 'latin1'));
      if (!ders.length)
        throw new KilnError(
          'invalid_input',
          `sdk.buildTrust.caFiles: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
        );
      for (const der of ders) {
        let x: X509Certificate;
        try {
          x = new X509Certificate(der);
        } catch (e) {
          throw new KilnError(
            'invalid_input',
            `sdk.buildTrust.caFiles: ${file} holds a certificate that cannot be read`,
            { cause: e },
          );
        }
        const sha256 = x.fingerprint256.replace(/:/g, '').toLowerCase();
        if (certs.has(sha256)) continue;
        certs.set(sha256, {
          sha256,
          subject: oneLine(x.subject),
          notAfter: new Date(x.validTo).toISOString(),
          fileName: `${FILE_PREFIX}${sha256.slice(0, 16)}.crt`,
          pem: toPem(der),
        });
      }
    }
  }
  if (certs.size > MAX_CERTS)
    throw new KilnError('invalid_input', `sdk.buildTrust.caFiles: ${certs.size} certificates; at most ${MAX_CERTS}`);
  return {
    certs: [...certs.values()].sort((a, b) => a.fileName.localeCompare(b.fileName)),
    keepInImage: cfg.keepInImage,
  };
}

/**
 * Kiln's layer on a base: the base (by id) plus the CA files, built with no network. Returns its image id, which the
 * Dockerfile's FROMs of that base then name. The layer cache makes it once per base and set of certificates; its
 * `kiln-build` tag lets the cache prune remove it like any other cache image (it is made again when needed).
 */
export async function trustLayer(
  docker: Dockerode,
  baseId: string,
  trust: BuildTrust,
  settings: BuildSettings,
  workDir: string,
  rep: Reporter,
): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(workDir, 'trust-'));
  try {
    for (const c of trust.certs) {
      const file = path.join(dir, c.fileName);
      await fsp.writeFile(file, c.pem, { mode: 0o644 });
      await fsp.chmod(file, 0o644);
      await fsp.utimes(file, 0, 0);
    }
    const req = {
      dockerfileText: `FROM ${baseId}\nCOPY ${trust.certs.map((c) => c.fileName).join(' ')} ${LOCAL_CA_DIR}/\n`,
      contextTar: dir,
      buildArgs: {},
    };
    const built = await dockerBuild(
      docker,
      req,
      buildTag(req, await contextDigest(dir)),
      { ...settings, network: 'none', proxyArgs: undefined },
      rep,
    );
    return built.id;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Kiln's layer on each base the Dockerfile starts from: base name -> layer id, what the Dockerfile's FROMs of that base
 * are pinned to (../dockerfile/pin.ts) instead of the base's own id.
 */
export async function trustLayers(
  docker: Dockerode,
  bases: readonly { name: string; id: string }[],
  trust: BuildTrust,
  settings: BuildSettings,
  workDir: string,
  rep: Reporter,
): Promise<Record<string, string>> {
  const layers: Record<string, string> = {};
  for (const b of bases) {
    layers[b.name] = await trustLayer(docker, b.id, trust, settings, workDir, rep);
    rep.log(
      `[kiln] build trust: FROM ${b.name} builds on ${layers[b.name]} (${b.name} + ${trust.certs.length} CA certificate(s) in ${LOCAL_CA_DIR})`,
    );
  }
  return layers;
}

/** What the build log says of the certificates, once, before the build. */
export function describeTrust(trust: BuildTrust): string {
  const list = trust.certs
    .map((c) => `${c.subject} (sha256 ${c.sha256.slice(0, 16)}..., until ${c.notAfter.slice(0, 10)})`)
    .join('; ');
  return (
    `build trust: RUN steps trust ${trust.certs.length} extra CA certificate(s) (sdk.buildTrust): ${list}; ` +
    (trust.keepInImage ? 'kept in the image (sdk.buildTrust.keepInImage)' : 'taken out of the image after the build')
  );
}

/** manifest.json's `buildTrust`: which certificates, and whether the image keeps them. */
export function trustRecord(trust: BuildTrust, removal: TrustRemoval | undefined): Record<string, unknown> {
  return {
    caCertificates: trust.certs.map((c) => ({ subject: c.subject, sha256: c.sha256, notAfter: c.notAfter })),
    inImage: trust.keepInImage ? 'kept' : 'removed',
    ...(removal ? { removed: removal.removed, ...(removal.notes.length ? { notes: removal.notes } : {}) } : {}),
  };
}

/** Where a symlink in the tree points (its text), or undefined when the entry is not a symlink reachable without one. */
async function linkTarget(root: string, guestPath: string): Promise<string | undefined> {
  const p = await hostPath(root, guestPath);
  if (!p || !(await fsp.lstat(p).catch(() => undefined))?.isSymbolicLink()) return undefined;
  return fsp.readlink(p);
}

/** The certificate a /etc/ssl/certs entry holds: its own bytes, or its link's target's (one level, as rehash does). */
async function certIn(root: string, name: string): Promise<Buffer | undefined> {
  const guest = `${ETC_CERTS}/${name}`;
  const target = await linkTarget(root, guest);
  const file = target === undefined ? guest : path.posix.resolve(ETC_CERTS, target);
  const buf = await readFileIn(root, file, MAX_FILE_BYTES);
  const ders = buf ? pemCertificates(buf.toString('latin1')) : [];
  return ders.length === 1 ? ders[0] : undefined;
}

/** The name update-ca-certificates gives a local CA's link in /etc/ssl/certs. */
const pemLinkName = (fileName: string) => fileName.replace(/\.crt$/, '.pem');

/**
 * Takes out of an exported tree what Kiln's CA files left there (see the top of this file). Every access goes
 * through fsroot (no link in the tree is followed); what does not look exactly like Kiln's is left alone.
 */
export async function removeBuildTrust(root: string, trust: BuildTrust): Promise<TrustRemoval> {
  const removed: string[] = [];
  const notes: string[] = [];
  const etc = await readdirIn(root, ETC_CERTS);
  // update-ca-certificates links each local CA as <name>.pem in the same run that writes the bundle: where that
  // link is, the bundle was made from Kiln's file and holds one block of it.
  const processed: TrustCert[] = [];
  for (const c of trust.certs) {
    const local = `${LOCAL_CA_DIR}/${c.fileName}`;
    const data = await readFileIn(root, local, MAX_FILE_BYTES);
    if (data?.toString('latin1') === c.pem && (await removeIn(root, local))) removed.push(local);
    const link = `${ETC_CERTS}/${pemLinkName(c.fileName)}`;
    if ((await linkTarget(root, link)) === local && (await removeIn(root, link))) {
      removed.push(link);
      processed.push(c);
    }
  }
  await removeHashLinks(root, etc, trust, removed, notes);
  if (processed.length) await removeBundleBlocks(root, processed, removed);
  if (processed.length && (await lstatIn(root, `${ETC_CERTS}/java/cacerts`))) {
    notes.push(
      `${ETC_CERTS}/java/cacerts may still hold the build CA certificates: ca-certificates-java imports what update-ca-certificates adds, and Kiln does not edit Java keystores`,
    );
  }
  // Kiln's layer made the directory (its bases lack it); ca-certificates' postinst makes it too (and then sets its
  // mode and owner to /usr/local's, as Kiln's layer made it), so it stays when that package is installed.
  const emptied =
    removed.some((r) => r.startsWith(`${LOCAL_CA_DIR}/`)) && (await readdirIn(root, LOCAL_CA_DIR)).length === 0;
  if (emptied) {
    const caInstalled = (await readPackages(root)).some((p) => p.name === 'ca-certificates');
    const dir = await hostPath(root, LOCAL_CA_DIR);
    if (
      !caInstalled &&
      dir &&
      (await fsp.rmdir(dir).then(
        () => true,
        () => false,
      ))
    )
      removed.push(LOCAL_CA_DIR);
  }
  return { removed, notes };
}

/**
 * `openssl rehash` links each certificate in /etc/ssl/certs as <subject hash>.<n>, once per distinct certificate.
 * A link to one of Kiln's goes; if the Dockerfile installed the same certificate itself, rehash skipped that copy as
 * a duplicate, so the link now points at it instead; otherwise the higher numbers of that hash move down, since
 * OpenSSL stops looking at the first number missing.
 */
async function removeHashLinks(
  root: string,
  etc: string[],
  trust: BuildTrust,
  removed: string[],
  notes: string[],
): Promise<void> {
  const ours = new Map(
    trust.certs.flatMap(
      (c) =>
        [
          [pemLinkName(c.fileName), c],
          [`${LOCAL_CA_DIR}/${c.fileName}`, c],
          [`${ETC_CERTS}/${pemLinkName(c.fileName)}`, c],
        ] as const,
    ),
  );
  const links: { hash: string; n: number; cert: TrustCert }[] = [];
  for (const name of etc) {
    const m = /^([0-9a-f]{8})\.(\d+)$/.exec(name);
    if (!m) continue;
    const target = await linkTarget(root, `${ETC_CERTS}/${name}`);
    const cert = target === undefined ? undefined : ours.get(target);
    if (cert) links.push({ hash: m[1]!, n: Number(m[2]), cert });
  }
  // Highest number first, so moving the later ones down never meets a link still to be handled.
  links.sort((a, b) => (a.hash === b.hash ? b.n - a.n : a.hash.localeCompare(b.hash)));
  for (const l of links) {
    const name = `${l.hash}.${l.n}`;
    const own = await ownCopy(root, etc, l.cert, ours);
    if (own) {
      await symlinkIn(root, `${ETC_CERTS}/${name}`, own);
      notes.push(`${ETC_CERTS}/${name} now points at ${own}, the Dockerfile's own copy of ${l.cert.subject}`);
      continue;
    }
    if (await removeIn(root, `${ETC_CERTS}/${name}`)) removed.push(`${ETC_CERTS}/${name}`);
    for (let k = l.n + 1; ; k++) {
      const from = await hostPath(root, `${ETC_CERTS}/${l.hash}.${k}`);
      if (!from || !(await fsp.lstat(from).catch(() => undefined))?.isSymbolicLink()) break;
      await fsp.rename(from, path.join(path.dirname(from), `${l.hash}.${k - 1}`));
    }
  }
}

/** The name of another /etc/ssl/certs entry holding the same certificate (the Dockerfile's own copy), if any. */
async function ownCopy(
  root: string,
  etc: string[],
  cert: TrustCert,
  ours: ReadonlyMap<string, TrustCert>,
): Promise<string | undefined> {
  const der = pemCertificates(cert.pem)[0]!;
  for (const name of [...etc].sort()) {
    if (!/\.(?:pem|crt)$/.test(name) || name === 'ca-certificates.crt' || ours.has(name)) continue;
    if ((await certIn(root, name))?.equals(der)) return name;
  }
  return undefined;
}

/** One block per processed certificate out of the bundle (the same bytes as Kiln's file: update-ca-certificates appends it as is). */
async function removeBundleBlocks(root: string, certs: TrustCert[], removed: string[]): Promise<void> {
  const st = await lstatIn(root, CA_BUNDLE);
  const buf = st?.isFile() ? await readFileIn(root, CA_BUNDLE, 64 << 20) : undefined;
  if (!st || !buf) return;
  let text = buf.toString('latin1');
  let changed = false;
  for (const c of certs) {
    const inside = text.lastIndexOf(`\n${c.pem}`);
    const at = inside >= 0 ? inside + 1 : text.startsWith(c.pem) ? 0 : -1;
    if (at < 0) continue;
    text = text.slice(0, at) + text.slice(at + c.pem.length);
    changed = true;
    removed.push(`${CA_BUNDLE}: ${c.subject} (sha256 ${c.sha256.slice(0, 16)}...)`);
  }
  if (changed) await writeFileIn(root, CA_BUNDLE, Buffer.from(text, 'latin1'), st.mode & 0o7777);
}
