/**
 * The compatibility corpus: realistic CI Dockerfiles that Kiln must build and boot unchanged, each to the marker its
 * program prints on the console. An entry is every `dockerfiles/<name>/` whose Dockerfile declares
 * `LABEL io.kiln.expect-console` (the other examples there have no program of their own). `make compat` runs them
 * all (main.ts); `make test` runs a few through the same `runCompat` (compat.test.ts).
 *
 * Each entry is one real `bin/kiln sdk build` (dist/, built by `make build` or the test setup): its directory as the
 * build context, raw disk, one BIOS boot, one build at a time. It passes when the SDK exits 0 with every boot test
 * passed (the SDK's boot test waits for the label's text and for the entry's --expect-console texts), the build log
 * shows that the label was taken as an expectation, and the serial log holds `KILN-COMPAT-OK <name>`. Outputs go to
 * one temporary directory, removed at the end (COMPAT_KEEP=1 keeps the failed entries' directories).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const REPO = path.resolve(import.meta.dirname, '../..');
export const KILN = path.join(REPO, 'bin/kiln');
export const DOCKERFILES = path.join(REPO, 'dockerfiles');
export const MARKER_PREFIX = 'KILN-COMPAT-OK';

/**
 * What the pipeline passes besides the Dockerfile, per entry (as a CI job's `docker build` line would): build
 * arguments, and console text that shows they arrived (the label alone, expanded from the same ARG, could not tell).
 */
export const ENTRY_OPTIONS: Record<string, { buildArgs?: Record<string, string>; expectConsole?: string[] }> = {
  'build-args': {
    buildArgs: { APP_VERSION: '2.4.1', GIT_SHA: '3f9c2e1' },
    expectConsole: ['KILN-COMPAT-OK build-args: version 2.4.1, channel stable, revision 3f9c2e1'],
  },
};

export interface CorpusEntry {
  name: string;
  dir: string;
  dockerfile: string;
  /** The label's value as written in the Dockerfile (it may use ARGs, expanded by the build). */
  label: string;
  buildArgs: Record<string, string>;
  expectConsole: string[];
}

export interface EntryResult {
  name: string;
  passed: boolean;
  seconds: number;
  reason: string;
  outDir?: string;
}

/** The value of `io.kiln.expect-console` in a Dockerfile's LABEL lines, as written (quotes removed); undefined without. */
export function declaredMarker(dockerfileText: string): string | undefined {
  const m = /\bio\.kiln\.expect-console=("(?:[^"\\]|\\.)*"|\S+)/.exec(dockerfileText);
  if (!m) return undefined;
  const v = m[1]!;
  return v.startsWith('"') ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
}

/** Every entry, sorted by name. */
export function listCorpus(root = DOCKERFILES): CorpusEntry[] {
  const out: CorpusEntry[] = [];
  for (const name of readdirSync(root).sort()) {
    const dockerfile = path.join(root, name, 'Dockerfile');
    if (!existsSync(dockerfile)) continue;
    const label = declaredMarker(readFileSync(dockerfile, 'utf8'));
    if (label === undefined) continue;
    const o = ENTRY_OPTIONS[name] ?? {};
    out.push({
      name,
      dir: path.join(root, name),
      dockerfile,
      label,
      buildArgs: o.buildArgs ?? {},
      expectConsole: o.expectConsole ?? [],
    });
  }
  return out;
}

const oneLine = (s: string, max = 500) => s.replace(/\s+/g, ' ').trim().slice(0, max);

/** Where Debian keeps the CAs an admin added; a host behind a TLS-intercepting proxy trusts the proxy's CA there. */
export const HOST_CA_DIR = '/usr/local/share/ca-certificates';

/**
 * The SDK's environment: this one, and, unless it says otherwise, RUN steps trust what this host trusts (as an admin
 * of a host behind a TLS-intercepting proxy configures Kiln: sdk.buildTrust, src/config/README.md). Without it an
 * entry that fetches over HTTPS (node-npm-ci) fails on such a host. Returns the note to print, when it applies.
 */
export function sdkEnvironment(env: NodeJS.ProcessEnv = process.env): { env: NodeJS.ProcessEnv; note?: string } {
  if (env.KILN_SDK_BUILD_TRUST_CA_FILES !== undefined) return { env };
  let cas: string[] = [];
  try {
    cas = readdirSync(HOST_CA_DIR).filter((f) => /\.(crt|pem)$/.test(f));
  } catch {
    /* no local CAs */
  }
  if (!cas.length) return { env };
  return {
    env: { ...env, KILN_SDK_BUILD_TRUST_CA_FILES: HOST_CA_DIR },
    note: `compat: RUN steps trust this host's local CAs (KILN_SDK_BUILD_TRUST_CA_FILES=${HOST_CA_DIR}: ${cas.join(', ')}); set the variable to change that`,
  };
}

/** Runs the SDK to its end; an abort sends it SIGTERM (as Jenkins does), so it stops QEMU and the build itself. */
function sdkBuild(
  argv: string[],
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(KILN, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const stop = () => p.kill('SIGTERM');
    signal?.addEventListener('abort', stop, { once: true });
    let stderr = '';
    p.stderr.on('data', (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-4096);
    });
    p.on('error', reject);
    p.on('close', (code) => {
      signal?.removeEventListener('abort', stop);
      resolve({ code, stderr });
    });
  });
}

/** Builds and boots one entry into outDir; says why when it did not boot to its marker. */
export async function runEntry(
  e: CorpusEntry,
  outDir: string,
  o: { env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {},
): Promise<EntryResult> {
  const argv = [
    'sdk',
    'build',
    '--dockerfile',
    e.dockerfile,
    '--context',
    e.dir,
    '--out',
    outDir,
    '--format',
    'raw',
    '--boot-firmware',
    'bios',
  ];
  for (const [k, v] of Object.entries(e.buildArgs)) argv.push('--build-arg', `${k}=${v}`);
  for (const t of e.expectConsole) argv.push('--expect-console', t);
  const t0 = Date.now();
  const { code, stderr } = await sdkBuild(argv, o.env ?? sdkEnvironment().env, o.signal);
  const seconds = Math.round((Date.now() - t0) / 100) / 10;
  const read = (f: string) => {
    try {
      return readFileSync(path.join(outDir, f), 'utf8');
    } catch {
      return '';
    }
  };
  let result: { ok?: boolean; error?: { message?: string }; bootTests?: { passed: boolean }[] } = {};
  try {
    result = JSON.parse(read('result.json'));
  } catch {
    /* no result.json: the reason below says so */
  }
  const fail = (reason: string): EntryResult => ({
    name: e.name,
    passed: false,
    seconds,
    reason: oneLine(reason),
    outDir,
  });
  if (code !== 0 || !result.ok)
    return fail(result.error?.message ?? `kiln sdk build exited ${code} without a result: ${stderr}`);
  if (!result.bootTests?.length || !result.bootTests.every((b) => b.passed))
    return fail('result.json has no passed boot test');
  // The boot passed because the SDK waited for the label's text, not merely because the machine reached a login.
  if (
    !/\[kiln\] the boot tests pass only when the console shows .*\(LABEL io\.kiln\.expect-console\)/.test(
      read('build.log'),
    )
  ) {
    return fail('the build log does not show the LABEL io.kiln.expect-console expectation');
  }
  if (!read('serial-image.raw.log').includes(`${MARKER_PREFIX} ${e.name}`))
    return fail(`the serial log lacks "${MARKER_PREFIX} ${e.name}"`);
  return { name: e.name, passed: true, seconds, reason: '', outDir };
}

export function entryLine(r: EntryResult, width = 24): string {
  return `${r.name.padEnd(width)} ${r.passed ? 'pass' : 'FAIL'} ${r.seconds.toFixed(1).padStart(7)} s${r.reason ? `  ${r.reason}` : ''}`;
}

/** N counts every entry asked for: one an interruption kept from running did not boot to its marker. */
export function summaryLine(results: readonly EntryResult[], asked = results.length): string {
  return `compat: ${results.filter((r) => r.passed).length}/${asked} boot to their marker`;
}

export interface CompatRun {
  results: EntryResult[];
  line: string;
  ok: boolean;
}

/**
 * Runs the named entries (default: all), one at a time, saying each one's line as it ends; `line` is the summary
 * for the caller to print last. Unknown names are refused before anything runs. An abort stops the running build and the rest (the
 * temporary directory is still removed).
 */
export async function runCompat(
  o: { names?: string[]; say?: (line: string) => void; keep?: boolean; signal?: AbortSignal } = {},
): Promise<CompatRun> {
  const say = o.say ?? (() => undefined);
  const all = listCorpus();
  const unknown = (o.names ?? []).filter((n) => !all.some((e) => e.name === n));
  if (unknown.length)
    throw new Error(`not in the corpus: ${unknown.join(', ')} (entries: ${all.map((e) => e.name).join(', ')})`);
  const entries = o.names ? all.filter((e) => o.names!.includes(e.name)) : all;
  const width = Math.max(...entries.map((e) => e.name.length));
  const { env, note } = sdkEnvironment();
  if (note) say(note);
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-compat-'));
  const results: EntryResult[] = [];
  let kept = false;
  try {
    for (const e of entries) {
      if (o.signal?.aborted) break;
      const r = await runEntry(e, path.join(root, e.name), { env, signal: o.signal });
      if (!r.passed && o.keep) kept = true;
      else rmSync(path.join(root, e.name), { recursive: true, force: true });
      results.push(r);
      say(entryLine(r, width) + (!r.passed && o.keep ? `  (kept: ${r.outDir})` : ''));
    }
  } finally {
    if (!kept) rmSync(root, { recursive: true, force: true });
  }
  if (results.length < entries.length)
    say(`compat: interrupted; ${entries.length - results.length} entries did not run`);
  const line = summaryLine(results, entries.length);
  return { results, line, ok: results.length === entries.length && results.every((r) => r.passed) };
}
