import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KilnError } from './errors.js';
import { run } from './subprocess.js';

/**
 * Signatures with `ssh-keygen -Y sign` (SSHSIG) over a SHA256SUMS text: OpenSSH is on every host and verifier
 * already, keys are plain Ed25519 files, and the namespace ties a signature to its purpose. minisign would need an
 * extra package, OpenPGP a keyring. The signature covers SHA256SUMS, which lists every other file.
 *
 * Who signs is the web (after re-hashing what it received), never a builder; `kiln verify` checks.
 */
export const SIG_NAMESPACE = 'kiln-image';
export const SIG_IDENTITY = 'kiln';

/** Signs `text` with the private key in `keyFile`; returns the armored signature (`SHA256SUMS.sig`'s content). */
export async function signText(text: string, keyFile: string): Promise<string> {
  // No file operand: ssh-keygen signs stdin and writes the signature to stdout, so nothing is left on disk.
  const r = await run('ssh-keygen', ['-Y', 'sign', '-f', keyFile, '-n', SIG_NAMESPACE], {
    timeoutMs: 60_000,
    input: text,
  });
  if (r.code !== 0 || !r.stdout.startsWith('-----BEGIN SSH SIGNATURE-----')) {
    throw new KilnError('internal', 'Signing SHA256SUMS failed', { detail: r.stderr.trim().slice(-300) });
  }
  return r.stdout;
}

/** The public key (one authorized_keys line) of a private key file (`ssh-keygen -y`). */
export async function publicKeyOf(keyFile: string): Promise<string> {
  const r = await run('ssh-keygen', ['-y', '-f', keyFile], { timeoutMs: 30_000 });
  if (r.code !== 0)
    throw new KilnError('invalid_input', `Cannot read the signing key ${keyFile}: ${r.stderr.trim().slice(-200)}`);
  return r.stdout.trim();
}

/** The first key line of a `.pub` / well-known text (comments and blank lines skipped), or undefined. */
export function firstKeyLine(text: string): string | undefined {
  return text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('#'));
}

/** Checks `signature` over `text` against `publicKey` in Kiln's namespace. */
export async function verifyText(
  text: string | Buffer,
  signature: string | Buffer,
  publicKey: string,
): Promise<{ ok: boolean; message: string }> {
  const key = firstKeyLine(publicKey);
  // One line, key type and base64 only: the allowed_signers file must not gain options or a second principal.
  if (!key || !/^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( [^\n]*)?$/.test(key))
    return { ok: false, message: 'not an SSH public key' };
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-sshsig-'));
  try {
    const allowed = path.join(work, 'allowed_signers');
    const sig = path.join(work, 'sig');
    await fsp.writeFile(
      allowed,
      `${SIG_IDENTITY} namespaces="${SIG_NAMESPACE}" ${key.split(' ').slice(0, 2).join(' ')}\n`,
    );
    await fsp.writeFile(sig, signature);
    const r = await run(
      'ssh-keygen',
      ['-Y', 'verify', '-f', allowed, '-I', SIG_IDENTITY, '-n', SIG_NAMESPACE, '-s', sig],
      { timeoutMs: 30_000, input: text },
    );
    return { ok: r.code === 0, message: (r.stdout + r.stderr).trim().slice(-300) };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
