/**
 * The key the web signs builds with. Configured (web.signingKeyFile), or an ed25519 key generated on first start
 * under the data directory (0600 in a 0700 directory). It never leaves the web's host: builders only write their
 * claim (SHA256SUMS), the web re-hashes what it received and signs its own list (attest.ts).
 * Several web instances must be given the same key file, or each signs with its own.
 */
import path from 'node:path';
import { access, constants } from 'node:fs/promises';
import type { FrozenConfig } from '../config/index.js';
import { KilnError } from '../shared/errors.js';
import { ensureKeyPair } from '../shared/ssh-keys.js';
import { publicKeyOf, signText } from '../shared/sshsig.js';

export interface SigningKey {
  /** One authorized_keys line, what /.well-known/kiln-signing-key serves and `kiln verify --key` takes. */
  publicKey: string;
  /** Signs a SHA256SUMS text; returns the armored SSHSIG signature. */
  sign(text: string): Promise<string>;
}

export const defaultSigningKeyFile = (dataDir: string): string => path.join(dataDir, 'keys', 'signing_ed25519');

const loaded = new Map<string, Promise<SigningKey>>();

async function load(file: string, configured: boolean): Promise<SigningKey> {
  let publicKey: string;
  if (configured) {
    // A configured key is the operator's: never generated or re-moded here; ssh-keygen refuses one others can read.
    await access(file, constants.R_OK).catch(() => {
      throw new KilnError('invalid_input', `KILN_WEB_SIGNING_KEY_FILE: cannot read ${file}`);
    });
    publicKey = (await publicKeyOf(file)).split(' ').slice(0, 2).join(' ') + ' kiln-signing';
  } else {
    publicKey = (await ensureKeyPair(file, 'kiln-signing')).publicKey;
  }
  return { publicKey, sign: (text) => signText(text, file) };
}

/** The web's signing key (loaded once per file; the first call creates the default key if it is missing). */
export function signingKey(config: Pick<FrozenConfig, 'dataDir' | 'web'>): Promise<SigningKey> {
  const configured = config.web.signingKeyFile !== undefined;
  const file = path.resolve(config.web.signingKeyFile ?? defaultSigningKeyFile(config.dataDir));
  let p = loaded.get(file);
  if (!p) {
    p = load(file, configured);
    loaded.set(file, p);
    // A failure is not remembered: fixing the file and retrying works without a restart.
    p.catch(() => loaded.delete(file));
  }
  return p;
}
