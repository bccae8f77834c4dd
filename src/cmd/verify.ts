import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/index.js';
import { toKilnError } from '../shared/errors.js';
import { publicKeyOf } from '../sdk/sign.js';
import { verifyDir } from '../sdk/verify.js';

const USAGE = `usage: kiln verify DIR [--pubkey FILE] [--require-signature]

Checks an SDK output directory: every file in SHA256SUMS, the SSH signature SHA256SUMS.sig (against --pubkey, or
the public half of KILN_SDK_SIGNING_KEY_FILE), and that sbom.spdx.json lists exactly the packages of the image's
dpkg database. Prints a JSON report; exit 0 only when every check passes.
`;

/** Composition root for `kiln verify`. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, strict: true, allowPositionals: true,
      options: { pubkey: { type: 'string' }, 'require-signature': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    process.stderr.write(`kiln verify: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) { process.stdout.write(USAGE); return 0; }
  const [dir, ...extra] = parsed.positionals;
  if (!dir || extra.length) { process.stderr.write(USAGE); return 2; }
  try {
    let publicKey: string | undefined;
    if (parsed.values.pubkey) publicKey = (await readFile(parsed.values.pubkey, 'utf8')).split('\n').find((l) => l.trim() && !l.startsWith('#'));
    else {
      const cfg = loadConfig();
      if (cfg.sdk.signingKeyFile) publicKey = await publicKeyOf(cfg.sdk.signingKeyFile);
    }
    const report = await verifyDir(dir, { publicKey, requireSignature: parsed.values['require-signature'] });
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    for (const c of report.checks) if (!c.ok) process.stderr.write(`kiln verify: FAILED ${c.name}: ${c.message}\n`);
    return report.ok ? 0 : 1;
  } catch (e) {
    const ke = toKilnError(e);
    process.stderr.write(JSON.stringify({ error: ke.toJSON() }) + '\n');
    return 1;
  }
}
