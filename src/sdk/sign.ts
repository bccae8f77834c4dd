import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';

/**
 * Signatures with `ssh-keygen -Y sign` (SSHSIG): OpenSSH is on every build host and verifier already, keys are
 * plain Ed25519 files, and the namespace ties a signature to its purpose. minisign would need an extra package,
 * OpenPGP a keyring. The signature covers SHA256SUMS, which lists every other file.
 */
export const SIG_NAMESPACE = 'kiln-image';
export const SIG_IDENTITY = 'kiln';

export async function signSums(dir: string, keyFile: string): Promise<string> {
  const sums = path.join(dir, 'SHA256SUMS');
  await fsp.rm(`${sums}.sig`, { force: true });
  const r = await run('ssh-keygen', ['-Y', 'sign', '-f', keyFile, '-n', SIG_NAMESPACE, sums], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new KilnError('build_failed', `Signing SHA256SUMS failed: ${r.stderr.trim().slice(-300)}`);
  return `${sums}.sig`;
}

/** The public key of a private key file (`ssh-keygen -y`). */
export async function publicKeyOf(keyFile: string): Promise<string> {
  const r = await run('ssh-keygen', ['-y', '-f', keyFile], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new KilnError('invalid_input', `Cannot read the signing key: ${r.stderr.trim().slice(-200)}`);
  return r.stdout.trim();
}

export async function verifySums(dir: string, publicKey: string, workDir: string): Promise<{ ok: boolean; message: string }> {
  const allowed = path.join(workDir, 'allowed_signers');
  await fsp.writeFile(allowed, `${SIG_IDENTITY} namespaces="${SIG_NAMESPACE}" ${publicKey.trim()}\n`);
  const sums = await fsp.readFile(path.join(dir, 'SHA256SUMS'));
  const r = await run('ssh-keygen', ['-Y', 'verify', '-f', allowed, '-I', SIG_IDENTITY, '-n', SIG_NAMESPACE, '-s', path.join(dir, 'SHA256SUMS.sig')], { timeoutMs: 30_000, input: sums });
  return { ok: r.code === 0, message: (r.stdout + r.stderr).trim().slice(-300) };
}
