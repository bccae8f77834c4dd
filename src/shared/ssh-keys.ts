import { createHash, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
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
  /** The users' SSH door's host key (src/ssh-door): its own, never one of the two above. */
  door: path.join(dataDir, 'ssh', 'door_host_ed25519'),
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
    const kp = generateEd25519(comment);
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
  if (parsed instanceof Error || !parsed.isPrivateKey())
    throw new KilnError('invalid_input', `${file} is not an SSH private key`);
  const blob = parsed.getPublicSSH();
  const publicKey = `${parsed.type} ${blob.toString('base64')} ${comment}`;
  const pubFile = `${file}.pub`;
  const existing = await fsp.readFile(pubFile, 'utf8').catch(() => undefined);
  if (existing?.split(/\s+/)[1] !== blob.toString('base64'))
    await fsp.writeFile(pubFile, publicKey + '\n', { mode: 0o644 });
  return { privateKey: pem, publicKey, fingerprint: fingerprint(blob) };
}

/** SSH wire `string`: uint32 length, then the bytes. */
function sshString(b: Buffer | string): Buffer {
  const body = Buffer.isBuffer(b) ? b : Buffer.from(b);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** PKCS#8 v1 for Ed25519 (RFC 8410) up to the 32-byte seed that follows it. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * A new ed25519 key pair in OpenSSH's unencrypted private key format (PROTOCOL.key).
 *
 * Not ssh2's utils.generateKeyPairSync: it strips leading zero bytes from the public key, so about 1 key in 256
 * comes out 31 bytes long and its own parseKey rejects it (mscdex/ssh2#1390, #1513). That made Kiln fail to start,
 * and CI fail, by chance.
 */
export function generateEd25519(comment = ''): { private: string; public: string } {
  // The seed is 32 random bytes (RFC 8032); node:crypto derives the public key from it. Not generateKeyPairSync +
  // export('jwk'): Node 20's JWK export holds the key's mutex while allocating, a GC there runs the finished
  // KeyGenJob's destructor, which takes the same mutex, and the thread deadlocks on itself (seen in CI).
  const seed = randomBytes(32);
  const spki = createPublicKey(
    createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' }),
  ).export({ format: 'der', type: 'spki' });
  const pub = spki.subarray(spki.length - 32);
  const blob = Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
  const check = randomBytes(4);
  let priv = Buffer.concat([check, check, blob, sshString(Buffer.concat([seed, pub])), sshString(comment)]);
  // Pad to the cipher block size ("none": 8) with 1, 2, 3, ...
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const one = Buffer.alloc(4);
  one.writeUInt32BE(1);
  const body = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    one,
    sshString(blob),
    sshString(priv),
  ]);
  const b64 = body.toString('base64').replace(/.{1,70}/g, '$&\n');
  return {
    private: `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`,
    public: `ssh-ed25519 ${blob.toString('base64')}${comment ? ` ${comment}` : ''}`,
  };
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
