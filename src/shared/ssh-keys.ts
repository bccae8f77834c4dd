import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import ssh2, { type ParsedKey } from 'ssh2';
import { KilnError } from './errors.js';

const { utils } = ssh2;

export interface KeyPair {
  /** The private key, OpenSSH format (what ssh2's `privateKey` and `hostKeys` take). */
  privateKey: Buffer;
  /** One authorized_keys line: `ssh-ed25519 AAAA... comment`. */
  publicKey: string;
  /** SHA-256 of the public key blob, base64 without padding (`ssh-keygen -l` prints it after `SHA256:`). */
  fingerprint: string;
}

/** Where Kiln keeps its SSH keys when the config names none: inside the data directory, never in the repo. */
export const defaultKeyPaths = (dataDir: string) => ({
  /** The web's client key (the glue authorizes its .pub). */
  client: path.join(dataDir, 'ssh', 'web_ed25519'),
  /** The built-in glue server's host key (the web pins its fingerprint). */
  host: path.join(dataDir, 'ssh', 'glue_host_ed25519'),
});

/** The fingerprint of a public key given as its wire blob or as an authorized_keys/`.pub` line. */
export function fingerprint(key: Buffer | string): string {
  let blob: Buffer;
  if (Buffer.isBuffer(key)) blob = key;
  else {
    const parsed = utils.parseKey(key);
    if (parsed instanceof Error) throw new KilnError('invalid_input', 'Not an SSH public key');
    blob = parsed.getPublicSSH();
  }
  return createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/**
 * Reads the ed25519 key pair at `file` (and `file.pub`), creating it on first use: private key 0600 in a 0700
 * directory, written atomically so two processes starting at once end with one valid key. An existing private key
 * readable by others is tightened to 0600.
 */
export async function ensureKeyPair(file: string, comment = 'kiln'): Promise<KeyPair> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  let pem = await fsp.readFile(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!pem) {
    const kp = utils.generateKeyPairSync('ed25519', { comment });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await fsp.writeFile(tmp, kp.private, { mode: 0o600, flag: 'wx' });
    try {
      // link() fails if another process created the key first; then both use that one.
      await fsp.link(tmp, file).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
    } finally {
      await fsp.rm(tmp, { force: true });
    }
    pem = await fsp.readFile(file);
  }
  const st = await fsp.stat(file);
  if ((st.mode & 0o077) !== 0) await fsp.chmod(file, 0o600);
  const parsed = utils.parseKey(pem);
  if (parsed instanceof Error || !parsed.isPrivateKey()) throw new KilnError('invalid_input', `${file} is not an SSH private key`);
  const blob = parsed.getPublicSSH();
  const publicKey = `${parsed.type} ${blob.toString('base64')} ${comment}`;
  const pubFile = `${file}.pub`;
  const existing = await fsp.readFile(pubFile, 'utf8').catch(() => undefined);
  if (existing?.split(/\s+/)[1] !== blob.toString('base64')) await fsp.writeFile(pubFile, publicKey + '\n', { mode: 0o644 });
  return { privateKey: pem, publicKey, fingerprint: fingerprint(blob) };
}

/** Parses authorized_keys text: one key per line, `#` comments; option prefixes (OpenSSH's) are not supported. */
export function parseAuthorizedKeys(text: string): ParsedKey[] {
  const keys: ParsedKey[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const k = utils.parseKey(line);
    if (k instanceof Error) throw new KilnError('invalid_input', 'authorized keys: a line is not a public key');
    keys.push(k);
  }
  return keys;
}
