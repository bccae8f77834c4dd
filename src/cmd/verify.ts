import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { KilnError, toKilnError } from '../shared/errors.js';
import { EXIT } from '../shared/exit-status.js';
import { firstKeyLine } from '../shared/sshsig.js';
import { verifyDir } from '../sdk/verify.js';

const USAGE = `usage: kiln verify DIR [--key FILE | --key-url URL] [--require-signature] [--skip-sbom] [--release NAME]

Checks a downloaded build or release: every file in SHA256SUMS, the SSH signature SHA256SUMS.sig (made by the Kiln
web that served it) against --key (a .pub file) or --key-url (e.g. https://kiln.example.org/.well-known/kiln-signing-key),
and that sbom.spdx.json lists exactly the packages of the image's dpkg database (needs sfdisk and debugfs, and
qemu-img for a qcow2; --skip-sbom leaves that one out). A release (DIR holds release.json) must be signed and every
file in it listed in SHA256SUMS; --release NAME also requires it to be the release of that name.
Prints a JSON report. Exit status: 0 every check passed, ${EXIT.verification} a check failed, ${EXIT.usage} bad usage or an unreadable
--key, ${EXIT.unavailable} --key-url could not be fetched.
`;

const MAX_KEY_BYTES = 16 * 1024;

/** The public key published at `url` (http or https, small, one key line). Also `kiln client`'s. */
export async function fetchKey(url: string): Promise<string> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new KilnError('invalid_input', `--key-url is not a URL: ${url.slice(0, 200)}`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new KilnError('invalid_input', '--key-url must be http or https');
  const res = await fetch(u, { redirect: 'error', signal: AbortSignal.timeout(30_000) }).catch((e: unknown) => {
    throw new KilnError(
      'backend_unavailable',
      `Cannot fetch the signing key from ${u.origin}: ${(e as Error).message}`,
    );
  });
  const body = Buffer.from(await res.arrayBuffer());
  if (!res.ok) throw new KilnError('backend_unavailable', `Fetching the signing key answered HTTP ${res.status}`);
  if (body.length > MAX_KEY_BYTES) throw new KilnError('invalid_input', 'The signing key document is too large');
  const key = firstKeyLine(body.toString('utf8'));
  if (!key) throw new KilnError('invalid_input', 'The signing key document holds no key');
  return key;
}

/** Composition root for `kiln verify`. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        key: { type: 'string' },
        'key-url': { type: 'string' },
        'require-signature': { type: 'boolean' },
        'skip-sbom': { type: 'boolean' },
        release: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`kiln verify: ${(e as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [dir, ...extra] = parsed.positionals;
  if (!dir || extra.length || (parsed.values.key && parsed.values['key-url'])) {
    process.stderr.write(USAGE);
    return EXIT.usage;
  }
  try {
    let publicKey: string | undefined;
    if (parsed.values.key) {
      const file = parsed.values.key;
      publicKey = firstKeyLine(
        await readFile(file, 'utf8').catch(() => {
          throw new KilnError('invalid_input', `Cannot read the key file ${file}`);
        }),
      );
    } else if (parsed.values['key-url']) publicKey = await fetchKey(parsed.values['key-url']);
    const report = await verifyDir(dir, {
      publicKey,
      requireSignature: parsed.values['require-signature'],
      sbom: !parsed.values['skip-sbom'],
      ...(parsed.values.release !== undefined ? { release: parsed.values.release } : {}),
    });
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    for (const c of report.checks) if (!c.ok) process.stderr.write(`kiln verify: FAILED ${c.name}: ${c.message}\n`);
    return report.ok ? EXIT.succeeded : EXIT.verification;
  } catch (e) {
    const ke = toKilnError(e);
    process.stderr.write(JSON.stringify({ error: ke.toJSON() }) + '\n');
    // The key could not be had: the command's input (a file, a URL) or the site; nothing was checked.
    return ke.code === 'invalid_input' ? EXIT.usage : ke.code === 'backend_unavailable' ? EXIT.unavailable : EXIT.other;
  }
}
