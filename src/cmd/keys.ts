/**
 * Composition root for `kiln keys`: the web's signing key (the one that signs every build's and release's
 * SHA256SUMS, src/core/signing.ts), made before the first start instead of by it.
 *   kiln keys generate [--out FILE]
 * FILE defaults to what the web would use: KILN_WEB_SIGNING_KEY_FILE (web.signingKeyFile; a secret handed in as a
 * file, such as /run/secrets/kiln-signing-key), else <dataDir>/keys/signing_ed25519. An existing key is never
 * overwritten. Prints the public key, what /.well-known/kiln-signing-key will serve.
 */
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/index.js';
import { defaultSigningKeyFile } from '../core/signing.js';
import { EXIT } from '../shared/exit-status.js';
import { ensureKeyPair } from '../shared/ssh-keys.js';

const USAGE = `usage: kiln keys generate [--out FILE]

Makes the signing key of Kiln's web: an ed25519 private key (OpenSSH format, mode 600, in a 700 directory) at FILE
and its public half at FILE.pub, and prints the public key (what /.well-known/kiln-signing-key serves; users pin it
with \`kiln verify --key\` or KILN_SIGNING_KEY). FILE: --out, else KILN_WEB_SIGNING_KEY_FILE, else
<KILN_DATA_DIR>/keys/signing_ed25519. Give every web and worker the same file (KILN_WEB_SIGNING_KEY_FILE); builders
never get it. An existing file is left alone (exit ${EXIT.refused}).
`;

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    process.stderr.write(`kiln keys: ${(e as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE);
    return EXIT.succeeded;
  }
  if (parsed.positionals.length !== 1 || parsed.positionals[0] !== 'generate') {
    process.stderr.write(USAGE);
    return EXIT.usage;
  }
  let file = parsed.values.out;
  if (!file) {
    const config = loadConfig();
    file = config.web.signingKeyFile ?? defaultSigningKeyFile(config.dataDir);
  }
  file = path.resolve(file);
  if (
    await lstat(file).then(
      () => true,
      () => false,
    )
  ) {
    process.stderr.write(`kiln keys: ${file} exists already; it is not replaced (remove it first to make a new key)\n`);
    return EXIT.refused;
  }
  try {
    const kp = await ensureKeyPair(file, 'kiln-signing');
    process.stderr.write(`kiln keys: the signing key is ${file} (public half ${file}.pub)\n`);
    process.stdout.write(`${kp.publicKey}\n`);
    return EXIT.succeeded;
  } catch (e) {
    process.stderr.write(
      `kiln keys: cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`,
    );
    return EXIT.other;
  }
}
