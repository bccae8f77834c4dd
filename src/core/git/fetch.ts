/**
 * Fetching a Dockerfile and its build context from a git repository: what the worker's git tasks run (never a
 * request). One fetch:
 *
 *   host resolved here and every address checked (src/shared/addresses.ts; git.allowHosts lifts it per host),
 *   the first one pinned for git's own connection (https: curl's resolve list; git://: the address in the URL;
 *   ssh: HostName in an ssh config of ours, with HostKeyAlias the name)
 *     -> `git init --bare` in a temp dir under <dataDir>/tmp/git (no templates, so no hooks)
 *     -> `git fetch --depth 1` of the one ref or commit, under prlimit --fsize (the pack may not pass
 *        git.maxFetchMb), with every git run sharing the git.timeoutSeconds deadline
 *     -> the Dockerfile read from the commit (a regular file, checked like an upload), the context directory's
 *        tree listed (sizes from the objects, before anything is written) and archived into a tar, read by
 *        build-context.ts like an uploaded .tar (same caps, same checks, symlinks kept as symlinks)
 *     -> the temp dir removed, whatever happened.
 *
 * Nothing is ever checked out: no working tree, so no hook, filter, symlink or .gitattributes of the repository
 * acts on this host. git runs with an environment of ours only (no system or global config, HOME in the temp dir,
 * no prompts, only the URL's protocol allowed, hooks off, redirects off, objects checked by fsck).
 */
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tarStream from 'tar-stream';
import type { FrozenConfig } from '../../config/index.js';
import type { NewContext } from '../../db/index.js';
import type { GitSource } from '../../protocol/index.js';
import { checkedAddress, type Lookup } from '../../shared/addresses.js';
import { KilnError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { run, type RunResult } from '../../shared/subprocess.js';
import { MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_UPLOAD_BYTES, contextFromTar } from '../build-context.js';
import { decodeDockerfile } from '../validation.js';
import { parseGitUrl, type GitUrl } from './url.js';

export interface GitDeps {
  config: FrozenConfig;
  logger: Logger;
  lookup?: Lookup;
}

export interface FetchRequest {
  url: GitUrl;
  /** The ref asked for (branch, tag, HEAD or a commit id). */
  ref: string;
  /** Exactly this commit (a push's): fetched by id, or as the ref's head when the server refuses ids. */
  commit?: string;
  /** The Dockerfile's path and the context directory ('' = the root), inside the repository. */
  path: string;
  context: string;
  signal?: AbortSignal;
}

export interface Fetched {
  commit: string;
  dockerfile: string;
  context?: NewContext;
  source: GitSource;
}

const GIT = 'git';
const MiB = 1024 * 1024;
/** Temp dirs a crashed worker left behind are removed by the next fetch once this old. */
const STALE_MS = 3600_000;

/** One fetch's private state: its temp dir, the deadline all its git runs share, how git reaches the host. */
interface Session {
  d: GitDeps;
  dir: string;
  repo: string;
  deadline: number;
  signal?: AbortSignal;
  env: NodeJS.ProcessEnv;
  /** `-c` options of every git run. */
  config: string[];
}

/** Fetches `req` and returns the Dockerfile, the context and the source (with the commit) it came from. */
export async function fetchSource(d: GitDeps, req: FetchRequest): Promise<Fetched> {
  return withSession(d, req.url, req.signal, {}, async (s, fetchUrl) => {
    const commit = await fetchCommit(s, fetchUrl, req);
    const dockerfile = await readDockerfile(s, commit, req.path);
    const context = await readContext(s, commit, req);
    return {
      commit,
      dockerfile,
      ...(context ? { context } : {}),
      source: { type: 'git', url: req.url.url, ref: req.ref, commit, path: req.path, context: req.context },
    };
  });
}

/** The commit `refs/heads/<branch>` points at in the repository now (a following Dockerfile's poll), if it exists. */
export async function branchHead(
  d: GitDeps,
  url: GitUrl,
  branch: string,
  signal?: AbortSignal,
): Promise<string | undefined> {
  return withSession(d, url, signal, {}, async (s, fetchUrl) => {
    const r = await git(s, ['ls-remote', '--heads', '--', fetchUrl, `refs/heads/${branch}`], 'ls-remote');
    const line = r.stdout.split('\n').find((l) => l.endsWith(`\trefs/heads/${branch}`));
    const id = line?.split('\t')[0];
    return id && /^[0-9a-f]{40,64}$/.test(id) ? id : undefined;
  });
}

async function withSession<T>(
  d: GitDeps,
  url: GitUrl,
  signal: AbortSignal | undefined,
  o: { deadline?: number },
  fn: (s: Session, fetchUrl: string) => Promise<T>,
): Promise<T> {
  const base = path.join(d.config.dataDir, 'tmp', 'git');
  await fsp.mkdir(base, { recursive: true, mode: 0o700 });
  await sweep(base);
  const dir = await fsp.mkdtemp(path.join(base, 'kiln-git-'));
  try {
    const deadline = o.deadline ?? Date.now() + d.config.git.timeoutSeconds * 1000;
    const s: Session = { d, dir, repo: path.join(dir, 'repo.git'), deadline, env: baseEnv(dir), config: [] };
    if (signal) s.signal = signal;
    const fetchUrl = await connectVia(s, url);
    await git(s, ['init', '--bare', '--quiet', '--template=', s.repo], 'init');
    return await fn(s, fetchUrl);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Removes what fetches of crashed workers left (their temp dirs are older than any fetch may run). */
async function sweep(base: string): Promise<void> {
  const now = Date.now();
  for (const name of await fsp.readdir(base).catch(() => [] as string[])) {
    if (!name.startsWith('kiln-git-')) continue;
    const p = path.join(base, name);
    const st = await fsp.stat(p).catch(() => undefined);
    if (st && now - st.mtimeMs > STALE_MS) await fsp.rm(p, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Nothing of the worker's own environment: git sees only this (and the -c options of `connectVia`). */
function baseEnv(dir: string): NodeJS.ProcessEnv {
  return {
    PATH: '/usr/bin:/bin',
    HOME: dir,
    XDG_CONFIG_HOME: dir,
    LC_ALL: 'C',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: '/bin/false',
    SSH_ASKPASS: '/bin/false',
    SSH_ASKPASS_REQUIRE: 'never',
    GIT_PROTOCOL_FROM_USER: '0',
    GIT_LITERAL_PATHSPECS: '1',
    GIT_NO_REPLACE_OBJECTS: '1',
    GIT_LFS_SKIP_SMUDGE: '1',
  };
}

/**
 * Resolves and checks the URL's host, pins the address for git and sets the options every git run of the session
 * gets. Returns the URL git is given.
 */
async function connectVia(s: Session, u: GitUrl): Promise<string> {
  const g = s.d.config.git;
  const cfg = [
    'core.hooksPath=/dev/null',
    'core.fsmonitor=false',
    'core.attributesFile=/dev/null',
    'core.symlinks=false',
    'core.askPass=',
    'credential.helper=',
    'protocol.allow=never',
    `protocol.${u.kind}.allow=always`,
    'submodule.recurse=false',
    'fetch.recurseSubmodules=false',
    'transfer.fsckObjects=true',
    'fetch.unpackLimit=1',
    'transfer.unpackLimit=1',
    'http.followRedirects=false',
    'http.lowSpeedLimit=1000',
    'http.lowSpeedTime=30',
    'http.proxy=',
    'gc.auto=0',
    'maintenance.auto=false',
    'init.defaultBranch=main',
    ...(g.caFile ? [`http.sslCAInfo=${g.caFile}`] : []),
  ];
  s.env.GIT_ALLOW_PROTOCOL = u.kind;
  let fetchUrl = u.url;
  if (u.kind === 'file') {
    await checkMirror(s.d.config, u.path);
  } else {
    const address = await checkedGitAddress(s.d, u.host);
    const v6 = net.isIPv6(address);
    if (u.kind === 'https' && net.isIP(u.host) === 0)
      cfg.push(`http.curloptResolve=${u.host}:${u.port ?? 443}:${v6 ? `[${address}]` : address}`);
    if (u.kind === 'git')
      fetchUrl = `git://${v6 ? `[${address}]` : address}${u.port !== undefined ? `:${u.port}` : ''}${u.path}`;
    if (u.kind === 'ssh') await sshConfig(s, u, address);
  }
  s.config = cfg.flatMap((c) => ['-c', c]);
  return fetchUrl;
}

/** Every address the host resolves to must be one Kiln fetches from; the first is the one git connects to. */
export const checkedGitAddress = (d: GitDeps, host: string): Promise<string> =>
  checkedAddress(host, {
    allowHosts: d.config.git.allowHosts,
    ...(d.lookup ? { lookup: d.lookup } : {}),
    subject: "The repository's host",
    refusedAction: 'fetch from',
    allowVariable: 'KILN_GIT_ALLOW_HOSTS',
    unresolvedCode: 'not_found',
  });

/** A file:// repository must really be inside a mirror directory (after following symlinks). */
async function checkMirror(config: FrozenConfig, p: string): Promise<void> {
  const real = await fsp.realpath(p).catch(() => {
    throw new KilnError('not_found', 'The file:// repository does not exist.');
  });
  for (const m of config.git.mirrors) {
    const root = await fsp.realpath(m).catch(() => undefined);
    if (root && real.startsWith(root + path.sep)) return;
  }
  throw new KilnError('forbidden', 'The file:// repository is not inside a local mirror directory (git.mirrors).');
}

/**
 * ssh reads no config of this machine or user: ours pins the checked address (HostName) while host keys are still
 * checked under the name (HostKeyAlias) against git.sshKnownHostsFile, authenticates with git.sshKeyFile only, and
 * forbids everything an ssh config can make ssh run or forward.
 */
async function sshConfig(s: Session, u: GitUrl, address: string): Promise<void> {
  const g = s.d.config.git;
  if (!g.sshKnownHostsFile)
    throw new KilnError(
      'forbidden',
      "ssh repository URLs need the servers' host keys: an admin sets KILN_GIT_SSH_KNOWN_HOSTS_FILE (and KILN_GIT_SSH_KEY_FILE).",
    );
  const file = path.join(s.dir, 'ssh_config');
  const lines = [
    'Host *',
    `  HostName ${address}`,
    `  HostKeyAlias ${u.host}`,
    ...(u.port !== undefined ? [`  Port ${u.port}`] : []),
    '  BatchMode yes',
    '  StrictHostKeyChecking yes',
    `  UserKnownHostsFile "${g.sshKnownHostsFile}"`,
    '  GlobalKnownHostsFile /dev/null',
    '  UpdateHostKeys no',
    '  IdentitiesOnly yes',
    `  IdentityFile ${g.sshKeyFile ? `"${g.sshKeyFile}"` : 'none'}`,
    '  IdentityAgent none',
    '  PasswordAuthentication no',
    '  KbdInteractiveAuthentication no',
    '  ProxyCommand none',
    '  ProxyJump none',
    '  PermitLocalCommand no',
    '  ForwardAgent no',
    '  ForwardX11 no',
    '  ClearAllForwardings yes',
    '  ControlMaster no',
    '  ControlPath none',
    '  CanonicalizeHostname no',
    '  ConnectTimeout 15',
    '  ServerAliveInterval 15',
    '  ServerAliveCountMax 2',
    '',
  ];
  await fsp.writeFile(file, lines.join('\n'), { mode: 0o600 });
  // git runs this through a shell: the only variable part is our own temp path, single-quoted.
  s.env.GIT_SSH_COMMAND = `ssh -F '${file.replaceAll("'", "'\\''")}'`;
  s.env.GIT_SSH_VARIANT = 'ssh';
}

/** One git run of the session: argv only, the session's environment and -c options, the remaining time. */
async function git(s: Session, args: string[], what: string, o: { fsize?: number } = {}): Promise<RunResult> {
  const left = s.deadline - Date.now();
  if (left <= 0) throw timedOut(s);
  const argv = [...s.config, '--git-dir', s.repo, ...args];
  const r = await (o.fsize !== undefined
    ? run('prlimit', [`--fsize=${o.fsize}`, '--', GIT, ...argv], opts(s, left))
    : run(GIT, argv, opts(s, left)));
  if (r.timedOut) throw timedOut(s);
  if (s.signal?.aborted) throw new KilnError('backend_unavailable', 'The fetch was stopped.');
  if (r.code !== 0) {
    // A write stopped at the limit (SIGXFSZ) leaves a file of exactly that size; git itself says something vague.
    if (o.fsize !== undefined && (await largestFile(s.dir)) >= o.fsize) throw tooLarge(s);
    throw failure(s, r, what);
  }
  return r;
}

async function largestFile(dir: string): Promise<number> {
  let max = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (!e.isFile()) continue;
    const st = await fsp.stat(path.join(e.parentPath, e.name)).catch(() => undefined);
    if (st && st.size > max) max = st.size;
  }
  return max;
}

const tooLarge = (s: Session) =>
  new KilnError(
    'too_large',
    `The repository is too large to fetch: more than ${s.d.config.git.maxFetchMb} MiB (KILN_GIT_MAX_FETCH_MB), even shallow.`,
  );

const opts = (s: Session, timeoutMs: number) => ({
  cwd: s.dir,
  env: s.env,
  timeoutMs,
  maxOutputBytes: 4 * MiB,
  ...(s.signal ? { signal: s.signal } : {}),
});

const timedOut = (s: Session) =>
  new KilnError('timeout', `Fetching from git took longer than ${s.d.config.git.timeoutSeconds} s.`);

/** git's last words, made safe to show: one line, no control characters, no credentials, at most 300 characters. */
export function gitSaid(stderr: string): string {
  const lines = stderr
    .split(/\r?\n|\r/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('hint:'));
  const last = [...lines].reverse().find((l) => /^(fatal|error|ERROR):/i.test(l)) ?? lines.at(-1) ?? '';
  return (
    last
      // eslint-disable-next-line no-control-regex
      .replace(/[\x00-\x1f\x7f-\x9f]/g, '')
      .replace(/\/\/[^/@\s]*@/g, '//')
      .slice(0, 300)
  );
}

/** A failed git run as a KilnError: transient (network, server trouble) or the repository's answer (final). */
function failure(s: Session, r: RunResult, what: string): KilnError {
  const said = gitSaid(r.stderr);
  const text = r.stderr;
  if (r.signal === 'SIGXFSZ' || /signal 25|File too large|SIGXFSZ/i.test(text)) return tooLarge(s);
  if (
    /returned error: 40[13]|Authentication failed|Permission denied|Host key verification failed|could not read Username|No RSA host key|host key .* not known/i.test(
      text,
    )
  )
    return new KilnError('forbidden', `The repository refused Kiln (${what}): ${said}`);
  if (
    /returned error: 404|Repository not found|does not appear to be a git repository|not found|couldn't find remote ref|not our ref|unadvertised object|no such (ref|remote ref)|no match for|invalid refspec/i.test(
      text,
    )
  )
    return new KilnError('not_found', `The repository or the ref was not found (${what}): ${said}`);
  if (/fsck|bad object|malformed|invalid object|index-pack failed/i.test(text))
    return new KilnError('invalid_input', `The repository sent objects git refuses (${what}): ${said}`);
  return new KilnError('backend_unavailable', `Could not fetch from the repository (${what}): ${said}`);
}

/** Fetches the wanted commit (or the ref's head) with depth 1; returns the commit id. */
async function fetchCommit(s: Session, fetchUrl: string, req: FetchRequest): Promise<string> {
  const fsize = s.d.config.git.maxFetchMb * MiB;
  const fetch = (what: string) =>
    git(
      s,
      ['fetch', '--depth', '1', '--no-tags', '--no-recurse-submodules', '--quiet', '--', fetchUrl, what],
      'fetch',
      {
        fsize,
      },
    );
  const head = async () =>
    (
      await git(s, ['rev-parse', '--verify', '--quiet', '--end-of-options', 'FETCH_HEAD^{commit}'], 'rev-parse')
    ).stdout.trim();
  if (req.commit) {
    try {
      await fetch(req.commit);
      return await head();
    } catch (e) {
      // A server that serves only advertised refs: the ref's head, if it is still that commit.
      if (!(e instanceof KilnError) || e.code !== 'not_found' || req.ref === req.commit) throw e;
      await fetch(req.ref);
      const got = await head();
      if (got !== req.commit)
        throw new KilnError(
          'not_found',
          `The repository does not serve commit ${req.commit.slice(0, 12)} by its id, and ${req.ref} has moved on to ${got.slice(0, 12)}.`,
        );
      return got;
    }
  }
  await fetch(req.ref);
  return head();
}

interface TreeEntry {
  mode: string;
  type: string;
  oid: string;
  size: number;
  path: string;
}

/** `git ls-tree -z -l` output. */
function parseLsTree(out: string): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (const rec of out.split('\0')) {
    if (!rec) continue;
    const tab = rec.indexOf('\t');
    const [mode, type, oid, size] = rec.slice(0, tab).split(/ +/);
    entries.push({
      mode: mode!,
      type: type!,
      oid: oid!,
      size: size === '-' ? 0 : Number(size),
      path: rec.slice(tab + 1),
    });
  }
  return entries;
}

/** Extracts one file's bytes from `git archive` output (binary-safe, unlike reading stdout as text). */
async function archivedFile(s: Session, commit: string, p: string): Promise<Buffer> {
  const out = path.join(s.dir, 'dockerfile.tar');
  await git(s, ['archive', '--format=tar', `--output=${out}`, commit, '--', p], 'archive', {
    fsize: s.d.config.web.maxDockerfileBytes + 64 * 1024 + p.length * 4,
  });
  const ex = tarStream.extract();
  ex.end(await fsp.readFile(out));
  let found: Buffer | undefined;
  for await (const e of ex) {
    const chunks: Buffer[] = [];
    for await (const c of e) chunks.push(c as Buffer);
    if (e.header.name === p && e.header.type === 'file') found = Buffer.concat(chunks);
  }
  if (!found) throw new KilnError('not_found', `${p} is not a file at that commit.`);
  return found;
}

async function readDockerfile(s: Session, commit: string, p: string): Promise<string> {
  const [entry] = parseLsTree(
    (await git(s, ['ls-tree', '-z', '-l', '--full-tree', commit, '--', p], 'ls-tree')).stdout,
  );
  if (!entry || entry.path !== p)
    throw new KilnError('not_found', `The repository has no ${p} at commit ${commit.slice(0, 12)}.`);
  if (entry.type !== 'blob' || (entry.mode !== '100644' && entry.mode !== '100755'))
    throw new KilnError(
      'invalid_input',
      `${p} at commit ${commit.slice(0, 12)} is not a regular file (a symlink, a directory or a submodule).`,
    );
  const max = s.d.config.web.maxDockerfileBytes;
  if (entry.size > max) throw new KilnError('too_large', `${p} is larger than ${Math.floor(max / 1024)} KiB.`);
  return decodeDockerfile(await archivedFile(s, commit, p), max);
}

/**
 * The context directory at the commit as a context (build-context.ts checks and re-packs it like an uploaded tar),
 * or undefined for an empty directory. Its tree is listed first: more entries or bytes than a context may have are
 * refused before anything is written. Submodules (gitlinks) stay empty directories unless git.submodules is on.
 */
async function readContext(s: Session, commit: string, req: FetchRequest): Promise<NewContext | undefined> {
  const treeish = req.context ? `${commit}:${req.context}` : `${commit}^{tree}`;
  const t = await git(s, ['cat-file', '-t', '--end-of-options', treeish], 'cat-file').catch((e: unknown) => {
    if (e instanceof KilnError && e.code !== 'backend_unavailable') throw e;
    return undefined;
  });
  if (t?.stdout.trim() !== 'tree')
    throw new KilnError(
      'not_found',
      `The repository has no directory ${req.context || '/'} at commit ${commit.slice(0, 12)}.`,
    );
  const entries = parseLsTree(
    (await git(s, ['ls-tree', '-r', '-t', '-z', '-l', '--end-of-options', treeish], 'ls-tree')).stdout,
  );
  if (entries.length === 0) return undefined;
  if (entries.length > MAX_CONTEXT_ENTRIES)
    throw new KilnError(
      'invalid_input',
      `The build context (${req.context || 'the repository'}) has more than ${MAX_CONTEXT_ENTRIES} entries; choose a smaller context directory.`,
    );
  if (entries.reduce((n, e) => n + e.size, 0) > MAX_CONTEXT_BYTES)
    throw new KilnError(
      'too_large',
      `The build context (${req.context || 'the repository'}) is larger than ${MAX_CONTEXT_BYTES / MiB} MiB; choose a smaller context directory.`,
    );
  const when = new Date(
    Number((await git(s, ['show', '-s', '--format=%ct', '--end-of-options', commit], 'show')).stdout.trim()) * 1000,
  );
  let tar = await archiveTree(s, treeish, 'context.tar');
  const links = entries.filter((e) => e.type === 'commit');
  if (links.length && s.d.config.git.submodules) tar = await withSubmodules(s, commit, req, tar, links);
  return contextFromTar(tar, { mtime: Number.isNaN(when.getTime()) ? new Date(0) : when });
}

async function archiveTree(s: Session, treeish: string, name: string): Promise<Buffer> {
  const out = path.join(s.dir, name);
  await git(s, ['archive', '--format=tar', `--output=${out}`, '--end-of-options', treeish], 'archive', {
    fsize: MAX_CONTEXT_UPLOAD_BYTES,
  });
  return fsp.readFile(out);
}

/**
 * The submodules inside the context, fetched at the commits the superproject records (their URLs from its
 * .gitmodules, each parsed and checked like the main URL: a local path, or file:// outside the mirrors, is refused),
 * each put into the context at its path. One level: a submodule's own submodules stay empty directories.
 */
async function withSubmodules(
  s: Session,
  commit: string,
  req: FetchRequest,
  tar: Buffer,
  links: TreeEntry[],
): Promise<Buffer> {
  const cfg = await git(
    s,
    ['config', '--blob', `${commit}:.gitmodules`, '--null', '--get-regexp', '^submodule\\..*\\.(path|url)$'],
    'config',
  ).catch(() => ({ stdout: '' }));
  const byName = new Map<string, { path?: string; url?: string }>();
  for (const rec of cfg.stdout.split('\0')) {
    const nl = rec.indexOf('\n');
    const m = /^submodule\.(.*)\.(path|url)$/.exec(rec.slice(0, nl));
    if (!m) continue;
    const cur = byName.get(m[1]!) ?? {};
    cur[m[2] as 'path' | 'url'] = rec.slice(nl + 1);
    byName.set(m[1]!, cur);
  }
  const parts: Array<{ prefix: string; tar: Buffer }> = [];
  for (const link of links) {
    const full = req.context ? `${req.context}/${link.path}` : link.path;
    const sub = [...byName.values()].find((x) => x.path === full);
    if (!sub?.url) throw new KilnError('invalid_input', `The submodule ${full} has no URL in .gitmodules.`);
    try {
      const url = parseGitUrl(resolveRelative(sub.url, req.url), s.d.config.git.mirrors);
      parts.push({ prefix: link.path, tar: await submoduleTar(s, url, link.oid) });
    } catch (e) {
      throw e instanceof KilnError ? new KilnError(e.code, `Submodule ${full}: ${e.message}`) : e;
    }
  }
  return mergeTars(tar, parts);
}

/** A submodule's tree at `commit` as a tar, fetched in a session of its own under the same deadline. */
function submoduleTar(parent: Session, url: GitUrl, commit: string): Promise<Buffer> {
  return withSession(parent.d, url, parent.signal, { deadline: parent.deadline }, async (s, fetchUrl) => {
    await fetchCommit(s, fetchUrl, { url, ref: commit, commit, path: '', context: '' });
    return archiveTree(s, `${commit}^{tree}`, 'submodule.tar');
  });
}

/** A submodule URL as .gitmodules writes it: `../other.git` and `./x` are relative to the superproject's URL. */
export function resolveRelative(sub: string, base: GitUrl): string {
  if (!sub.startsWith('./') && !sub.startsWith('../')) return sub;
  // As git does: the superproject's URL is the directory `./` is in, and each `../` strips one component of it.
  const parts = base.path.split('/').filter(Boolean);
  for (const c of sub.split('/')) {
    if (c === '' || c === '.') continue;
    if (c !== '..') parts.push(c);
    else if (parts.pop() === undefined)
      throw new KilnError('invalid_input', 'A relative submodule URL leaves the server.');
  }
  if (parts.length === 0) throw new KilnError('invalid_input', 'A relative submodule URL leaves the server.');
  const joined = `${base.path.startsWith('/') ? '/' : ''}${parts.join('/')}`;
  if (base.scp) return `${base.user ? `${base.user}@` : ''}${base.host}:${joined}`;
  return `${base.url.slice(0, base.url.length - base.path.length)}${joined}`;
}

/** `main` with each part's entries added under its prefix (the submodule's empty directory is already there). */
async function mergeTars(main: Buffer, parts: ReadonlyArray<{ prefix: string; tar: Buffer }>): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const copy = async (buf: Buffer, prefix: string) => {
    const ex = tarStream.extract();
    ex.end(buf);
    for await (const e of ex) {
      const body: Buffer[] = [];
      for await (const c of e) body.push(c as Buffer);
      const name = prefix ? `${prefix}/${e.header.name}` : e.header.name;
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...e.header, name }, Buffer.concat(body), (err) => (err ? reject(err) : resolve())),
      );
    }
  };
  await copy(main, '');
  for (const p of parts) await copy(p.tar, p.prefix);
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}
