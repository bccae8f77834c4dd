/**
 * Composition root for `kiln client`: Kiln from a CI job, over the REST API v1 (src/cmd/README.md, "kiln client").
 *   kiln client build --name N --dockerfile F [--context DIR | --no-context] [--format F]... [--build-arg K=V]...
 *                     [--wait] [--no-log] [--download DIR] [--key FILE] [--json] [--idempotency-key K]
 *   kiln client status ID [--json]
 *   kiln client log ID [--follow]
 *   kiln client download ID DIR [--key FILE] [--json]
 *   kiln client list [--dockerfile N] [--state S] [--limit N] [--cursor C] [--json]
 *   kiln client release create ID NAME [--no-wait] [--json]
 *   kiln client release download NAME --to DIR [--dockerfile N] [--key FILE] [--json]
 * Configured by KILN_URL and KILN_TOKEN (or KILN_TOKEN_FILE); a pinned signing key by --key, KILN_SIGNING_KEY or
 * KILN_SIGNING_KEY_FILE. The exit status is the build's (EXIT in src/shared/exit-status.ts, shared with the SSH door); every failure is one line on
 * stderr, and with --json stdout gets exactly one JSON line whatever happens.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FORMATS, RELEASE_NAME_RE } from '../protocol/index.js';
import { EXIT, EXIT_HELP } from '../shared/exit-status.js';
import { firstKeyLine } from '../shared/sshsig.js';
import { ClientError, KilnApi, clientEnv, sleep, type Build, type Report } from './client/api.js';
import { defaultIdempotencyKey } from './client/ci.js';
import { packContext } from './client/context.js';
import { downloadBuild, downloadRelease, type Downloaded } from './client/download.js';
import { followLog, waitQuietly, type Output } from './client/follow.js';

const USAGE = `usage: kiln client <command> [options]   (KILN_URL and KILN_TOKEN or KILN_TOKEN_FILE set)

  build --name N --dockerfile F|-    put Dockerfile N (text from F, or stdin) and build it
        [--context DIR | --no-context]   upload DIR as its build context (.dockerignore applies) or drop the
                                         current one; neither keeps what the Dockerfile has
        [--format raw|qcow2|iso|tar]... [--build-arg K=V]...   saved as the Dockerfile's settings when given
        [--wait] [--no-log]          wait for the end, following the log (or not: --no-log)
        [--download DIR]             then download and verify the artifacts into DIR (implies --wait)
        [--key FILE]                 the signing key to trust (default: KILN_SIGNING_KEY(_FILE), else the site's)
        [--idempotency-key K]        default: derived from the CI job (CI_JOB_ID, GITHUB_RUN_ID, BUILD_TAG)
        [--json]                     the log to stderr, one JSON line (the build) to stdout
  status ID [--json]                 a build
  log ID [--follow]                  its log (--follow: until it ends; exit status as below)
  download ID DIR [--key FILE] [--json]   a succeeded build's artifacts, verified, into DIR
  list [--dockerfile N] [--state S] [--limit N] [--cursor C] [--json]
  release create ID NAME [--no-wait] [--json]   promote succeeded build ID to release NAME (waits until it is made)
  release download NAME --to DIR [--dockerfile N] [--key FILE] [--json]
                                     release NAME (of Dockerfile N when several have one), verified, into DIR

  every command: [--retry-for SECONDS] (default 120) how long to retry while Kiln cannot be reached

${EXIT_HELP}`;

const COMMON = {
  json: { type: 'boolean' },
  'retry-for': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const OPTIONS = {
  build: {
    ...COMMON,
    name: { type: 'string' },
    dockerfile: { type: 'string' },
    context: { type: 'string' },
    'no-context': { type: 'boolean' },
    format: { type: 'string', multiple: true },
    'build-arg': { type: 'string', multiple: true },
    wait: { type: 'boolean' },
    'no-log': { type: 'boolean' },
    download: { type: 'string' },
    key: { type: 'string' },
    'idempotency-key': { type: 'string' },
  },
  status: COMMON,
  log: { ...COMMON, follow: { type: 'boolean' } },
  download: { ...COMMON, key: { type: 'string' } },
  list: {
    ...COMMON,
    dockerfile: { type: 'string' },
    state: { type: 'string' },
    limit: { type: 'string' },
    cursor: { type: 'string' },
  },
  release: {
    ...COMMON,
    to: { type: 'string' },
    dockerfile: { type: 'string' },
    key: { type: 'string' },
    'no-wait': { type: 'boolean' },
  },
} as const satisfies Record<string, ParseArgsConfig['options']>;

type Command = keyof typeof OPTIONS;
type Values<C extends Command> = ReturnType<typeof parseArgs<{ options: (typeof OPTIONS)[C]; allowPositionals: true }>>;

const usage = (message: string) => new ClientError(EXIT.usage, message);
const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

function note(message: string): void {
  process.stderr.write(`kiln client: ${message}\n`);
}

function output(json: boolean | undefined): Output {
  const stream = json ? process.stderr : process.stdout;
  return { log: (text) => void stream.write(text), note };
}

function buildId(raw: string | undefined): number {
  if (!raw || !/^[1-9][0-9]{0,11}$/.test(raw)) throw usage(`a build id is a number, not ${JSON.stringify(raw ?? '')}`);
  return Number(raw);
}

function retryForMs(raw: string | undefined): number {
  if (raw === undefined) return 120_000;
  if (!/^[0-9]{1,5}$/.test(raw)) throw usage('--retry-for takes a number of seconds');
  return Number(raw) * 1000;
}

function api(values: { 'retry-for'?: string }): KilnApi {
  const a = new KilnApi(clientEnv(process.env, retryForMs(values['retry-for'])));
  const u = new URL(a.env.base);
  if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname))
    note(`warning: KILN_URL is plain http: the token crosses the network unencrypted`);
  return a;
}

/** The signing key to trust instead of the site's: --key FILE, KILN_SIGNING_KEY, or KILN_SIGNING_KEY_FILE. */
function pinnedKey(file: string | undefined): string | undefined {
  const env = process.env;
  let text: string | undefined;
  let from: string;
  if (file) {
    from = `--key ${file}`;
    text = readOrUsage(file, from);
  } else if (env.KILN_SIGNING_KEY) {
    from = 'KILN_SIGNING_KEY';
    text = env.KILN_SIGNING_KEY;
  } else if (env.KILN_SIGNING_KEY_FILE) {
    from = 'KILN_SIGNING_KEY_FILE';
    text = readOrUsage(env.KILN_SIGNING_KEY_FILE, from);
  } else return undefined;
  const key = firstKeyLine(text);
  if (!key) throw usage(`${from} holds no public key`);
  return key;
}

function readOrUsage(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw usage(`Cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

async function dockerfileBytes(file: string): Promise<Buffer> {
  if (file !== '-') {
    return readFile(file).catch((e: NodeJS.ErrnoException) => {
      throw usage(`Cannot read the Dockerfile ${file}: ${e.code ?? e.message}`);
    });
  }
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** `--format` and `--build-arg` as the settings the PUT saves (none given: none sent, the saved ones stay). */
function settingsOf(v: Values<'build'>['values']): Record<string, unknown> | undefined {
  const s: Record<string, unknown> = {};
  if (v.format?.length) {
    for (const f of v.format)
      if (!(FORMATS as readonly string[]).includes(f)) throw usage(`--format ${f}: one of ${FORMATS.join(', ')}`);
    s.formats = [...new Set(v.format)];
  }
  if (v['build-arg']?.length) {
    const args: Record<string, string> = {};
    for (const kv of v['build-arg']) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw usage(`--build-arg ${kv}: write NAME=VALUE`);
      args[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    s.buildArgs = args;
  }
  return Object.keys(s).length ? s : undefined;
}

const exitOf = (b: Build): number =>
  b.state === 'succeeded' ? EXIT.succeeded : b.state === 'cancelled' ? EXIT.cancelled : EXIT.failed;

/** The end of a wait: what failed and where, the download, the JSON line; the build's exit status. */
async function finish(a: KilnApi, b: Build, o: { json?: boolean; download?: string; key?: string }): Promise<number> {
  let failure: Report['failure'];
  if (b.state === 'failed') {
    const f = (failure = (await a.report(b.id).catch(() => undefined))?.failure);
    note(`build ${b.id} failed: ${f?.message ?? b.reason ?? 'no reason given'}`);
    if (f?.line !== undefined)
      note(`the failing Dockerfile line is ${f.line}${f.stage ? ` (stage ${f.stage})` : ''}: ${f.instruction ?? ''}`);
    else if (f?.stage) note(`it failed in the stage ${f.stage}`);
  } else if (b.state === 'cancelled') note(`build ${b.id} was cancelled${b.reason ? `: ${b.reason}` : ''}`);
  else note(`build ${b.id} succeeded`);
  let downloaded: Downloaded | undefined;
  if (o.download && b.state === 'succeeded')
    downloaded = await downloadBuild(a, b, o.download, { pinnedKey: o.key, note });
  if (o.json) printJson({ ...b, ...(failure ? { failure } : {}), ...(downloaded ? { downloaded } : {}) });
  return exitOf(b);
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v)}\n`);
}

async function build(p: Values<'build'>): Promise<number> {
  const v = p.values;
  if (p.positionals.length) throw usage(`unexpected argument ${p.positionals[0]}`);
  if (!v.name || !NAME_RE.test(v.name))
    throw usage('--name N is required: 1-63 of a-z 0-9 . _ -, starting with a letter or digit');
  if (!v.dockerfile) throw usage('--dockerfile FILE is required (- reads it from stdin)');
  if (v.context && v['no-context']) throw usage('--context and --no-context exclude each other');
  const settings = settingsOf(v);
  const key = pinnedKey(v.key);
  const a = api(v);
  const text = await dockerfileBytes(v.dockerfile);
  const ctx = v.context ? await packContext(v.context, v.download ? [v.download] : []) : undefined;
  if (ctx)
    note(
      `build context ${v.context}: ${ctx.entries} ${ctx.entries === 1 ? 'entry' : 'entries'}${ctx.ignored ? `, ${ctx.ignored} left out by .dockerignore` : ''}`,
    );

  const form = new FormData();
  form.set('dockerfile', new Blob([new Uint8Array(text)]), 'Dockerfile');
  if (ctx) form.set('context', new Blob([new Uint8Array(ctx.data)]), 'context.tar.gz');
  if (v['no-context']) form.set('removeContext', 'true');
  if (settings) form.set('settings', JSON.stringify(settings));
  const put = await a.json<{ created: boolean }>(`/dockerfiles/${v.name}`, {
    method: 'PUT',
    body: form,
    timeoutMs: 10 * 60_000,
    sendsDockerfile: true,
  });
  note(`Dockerfile ${v.name} ${put.created ? 'created' : 'saved'}`);

  const idem = v['idempotency-key']
    ? { key: v['idempotency-key'], source: '--idempotency-key' }
    : defaultIdempotencyKey(process.env, v.name);
  const trig = await a.json<{ build: Build; created: boolean }>('/builds', {
    method: 'POST',
    body: JSON.stringify({ dockerfile: v.name }),
    headers: { 'content-type': 'application/json', 'idempotency-key': idem.key },
  });
  const id = trig.build.id;
  note(
    trig.created
      ? `build ${id} requested (idempotency key from ${idem.source})`
      : `build ${id} was already requested with this idempotency key (from ${idem.source}): no new build`,
  );
  if (!v.wait && !v.download) {
    if (v.json) printJson(trig.build);
    else process.stdout.write(`${id}\n`);
    return EXIT.succeeded;
  }
  const out = output(v.json);
  const b = v['no-log'] ? await waitQuietly(a, id, out) : await followLog(a, id, out);
  return finish(a, b, { json: v.json, download: v.download, key });
}

async function status(p: Values<'status'>): Promise<number> {
  const id = buildId(p.positionals[0]);
  if (p.positionals.length > 1) throw usage(`unexpected argument ${p.positionals[1]}`);
  const a = api(p.values);
  const b = await a.build(id);
  const failure = b.state === 'failed' ? (await a.report(id).catch(() => undefined))?.failure : undefined;
  if (p.values.json) {
    printJson({ ...b, ...(failure ? { failure } : {}) });
    return EXIT.succeeded;
  }
  const lines = [
    `build ${b.id} of ${b.dockerfile.name}: ${b.state}${b.final ? '' : ` (${b.progress.percent}% ${b.progress.label})`}`,
    `  trigger ${b.trigger}, requested ${b.requestedAt}${b.finishedAt ? `, finished ${b.finishedAt}` : ''}`,
  ];
  if (b.queue) lines.push(`  waiting: ${b.queue.position} of ${b.queue.waiting}`);
  if (b.reason) lines.push(`  reason: ${b.reason}`);
  if (failure?.line !== undefined)
    lines.push(`  failing Dockerfile line ${failure.line}: ${failure.instruction ?? ''}`);
  for (const art of b.artifacts)
    lines.push(`  ${art.name}  ${art.size} bytes${art.sha256 ? `  sha256 ${art.sha256}` : ''}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return EXIT.succeeded;
}

async function log(p: Values<'log'>): Promise<number> {
  const id = buildId(p.positionals[0]);
  if (p.positionals.length > 1) throw usage(`unexpected argument ${p.positionals[1]}`);
  if (p.values.json) throw usage('log prints the log itself; there is no --json');
  const a = api(p.values);
  const out = output(false);
  if (p.values.follow) return finish(a, await followLog(a, id, out), {});
  let offset = 0;
  for (;;) {
    const c = await a.json<{ text: string; nextOffset: number; more: boolean }>(`/builds/${id}/log?offset=${offset}`);
    out.log(c.text);
    if (c.nextOffset === offset) return EXIT.succeeded;
    offset = c.nextOffset;
  }
}

async function download(p: Values<'download'>): Promise<number> {
  const id = buildId(p.positionals[0]);
  const dir = p.positionals[1];
  if (!dir || p.positionals.length > 2) throw usage('download takes a build id and a directory');
  const key = pinnedKey(p.values.key);
  const a = api(p.values);
  const b = await a.build(id);
  const downloaded = await downloadBuild(a, b, dir, { pinnedKey: key, note });
  if (p.values.json) printJson({ ...b, downloaded });
  return EXIT.succeeded;
}

async function list(p: Values<'list'>): Promise<number> {
  const v = p.values;
  if (p.positionals.length) throw usage(`unexpected argument ${p.positionals[0]}`);
  const q = new URLSearchParams();
  if (v.dockerfile) q.set('dockerfile', v.dockerfile);
  if (v.state) q.set('state', v.state);
  if (v.limit) q.set('limit', v.limit);
  if (v.cursor) q.set('cursor', v.cursor);
  const a = api(v);
  const page = await a.json<{ builds: Build[]; nextCursor: string | null }>(`/builds${q.size ? `?${q}` : ''}`);
  if (v.json) {
    printJson(page);
    return EXIT.succeeded;
  }
  const rows = page.builds.map((b) => [String(b.id), b.state, b.dockerfile.name, b.trigger, b.requestedAt]);
  const all = [['ID', 'STATE', 'DOCKERFILE', 'TRIGGER', 'REQUESTED'], ...rows];
  const widths = all[0]!.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  process.stdout.write(
    all
      .map(
        (r) =>
          r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd() + '\n',
      )
      .join(''),
  );
  if (page.nextCursor) note(`more: --cursor ${page.nextCursor}`);
  return EXIT.succeeded;
}

/** A release as the API answers it (GET /releases/{id}). */
type Release = { id: number; name: string; state: string; reason: string | null; build: number; files: unknown };

function releaseName(raw: string | undefined): string {
  if (!raw || !RELEASE_NAME_RE.test(raw))
    throw usage(
      `a release name is 1-64 of A-Z a-z 0-9 . _ - (not . or .., not starting with -), not ${JSON.stringify(raw ?? '')}`,
    );
  return raw;
}

/** `release create ID NAME`: promotes, then (unless --no-wait) waits until the worker made it, or could not. */
async function releaseCreate(p: Values<'release'>): Promise<number> {
  const v = p.values;
  const id = buildId(p.positionals[1]);
  const name = releaseName(p.positionals[2]);
  if (p.positionals.length > 3) throw usage(`unexpected argument ${p.positionals[3]}`);
  if (v.to || v.dockerfile || v.key) throw usage('release create takes a build id and a name (and --no-wait, --json)');
  const a = api(v);
  const made = await a.json<{ release: Release; created: boolean }>(`/builds/${id}/release`, {
    method: 'POST',
    body: JSON.stringify({ name }),
    headers: { 'content-type': 'application/json' },
  });
  let r = made.release;
  note(made.created ? `release ${name} of build ${id} requested` : `build ${id} already has release ${name}`);
  for (let delay = 250; !v['no-wait'] && r.state === 'pending'; delay = Math.min(delay * 2, 5000)) {
    await sleep(delay);
    r = (await a.json<{ release: Release }>(`/releases/${r.id}`)).release;
  }
  if (v.json) printJson(r);
  else process.stdout.write(`${r.id}\n`);
  if (r.state === 'failed') {
    note(`release ${name} could not be made: ${r.reason ?? 'no reason given'}`);
    return EXIT.unavailable;
  }
  if (r.state === 'ready') note(`release ${name} is ready: kiln client release download ${name} --to DIR`);
  return EXIT.succeeded;
}

/** `release download NAME --to DIR`: the one release of that name among the user's Dockerfiles (or --dockerfile's). */
async function releaseDownload(p: Values<'release'>): Promise<number> {
  const v = p.values;
  const name = releaseName(p.positionals[1]);
  if (p.positionals.length > 2) throw usage(`unexpected argument ${p.positionals[2]}`);
  if (!v.to) throw usage('release download needs --to DIR');
  if (v.dockerfile !== undefined && !NAME_RE.test(v.dockerfile))
    throw usage(`--dockerfile ${v.dockerfile}: not a Dockerfile name`);
  const key = pinnedKey(v.key);
  const a = api(v);
  const q = new URLSearchParams({ name });
  if (v.dockerfile) q.set('dockerfile', v.dockerfile);
  const { releases } = await a.json<{ releases: Array<Release & { dockerfile: { name: string } }> }>(`/releases?${q}`);
  if (releases.length === 0)
    throw new ClientError(EXIT.refused, `no release ${name}${v.dockerfile ? ` of ${v.dockerfile}` : ''}`);
  if (releases.length > 1)
    throw usage(
      `${releases.length} Dockerfiles have a release ${name} (${releases.map((r) => r.dockerfile.name).join(', ')}): say which with --dockerfile`,
    );
  const r = releases[0]!;
  const downloaded = await downloadRelease(a, r, v.to, { pinnedKey: key, note });
  if (v.json) printJson({ ...r, downloaded });
  return EXIT.succeeded;
}

async function release(p: Values<'release'>): Promise<number> {
  const sub = p.positionals[0];
  if (sub === 'create') return releaseCreate(p);
  if (sub === 'download') return releaseDownload(p);
  throw usage(`release takes create or download, not ${JSON.stringify(sub ?? '')}`);
}

const RUN: { [C in Command]: (p: Values<C>) => Promise<number> } = { build, status, log, download, list, release };

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || !Object.hasOwn(OPTIONS, sub)) {
    (sub && sub !== '--help' && sub !== '-h' ? process.stderr : process.stdout).write(USAGE);
    return sub && sub !== '--help' && sub !== '-h' ? EXIT.usage : EXIT.succeeded;
  }
  const command = sub as Command;
  let json = false;
  try {
    const parsed = parseArgs({ args: rest, options: OPTIONS[command], allowPositionals: true, strict: true });
    json = !!parsed.values.json;
    if (parsed.values.help) {
      process.stdout.write(USAGE);
      return EXIT.succeeded;
    }
    return await (RUN[command] as (p: typeof parsed) => Promise<number>)(parsed);
  } catch (e) {
    const err =
      e instanceof ClientError
        ? e
        : (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
          ? usage((e as Error).message)
          : new ClientError(EXIT.other, `unexpected error: ${(e as Error).message ?? String(e)}`);
    const findings = err.api?.details?.findings ?? [];
    // A policy refusal's message lists the findings too: say it once, a finding a line.
    note(findings.length ? err.message.split('\n')[0]! : err.message);
    for (const f of findings) note(`  line ${f.line}: ${f.message}`);
    if (err.exit === EXIT.usage && !err.api) process.stderr.write('run `kiln client --help` for the usage\n');
    if (json) {
      const code = err.api?.code ?? Object.keys(EXIT).find((k) => EXIT[k as keyof typeof EXIT] === err.exit) ?? 'other';
      printJson({
        error: {
          code,
          message: err.message,
          exit: err.exit,
          ...(err.api?.details ? { details: err.api.details } : {}),
        },
      });
    }
    return err.exit;
  }
}
