/**
 * What a git source may name, parsed strictly before anything is stored or run: the repository URL (https, ssh, git;
 * file:// only into an admin's mirror directory), the ref, the Dockerfile's path and the context directory. Every
 * refusal is an `invalid_input` whose message never repeats a credential.
 */
import net from 'node:net';
import path from 'node:path';
import { HOST_NAME_RE } from '../../config/index.js';
import { GIT_COMMIT_RE } from '../../protocol/index.js';
import { KilnError } from '../../shared/errors.js';

export type GitUrlKind = 'https' | 'ssh' | 'git' | 'file';

export interface GitUrl {
  kind: GitUrlKind;
  /** The URL as git is given it (and as it is shown and stored): never with credentials. */
  url: string;
  /** Host name or address, lower case, without brackets; '' for file://. */
  host: string;
  /** Explicit port, if the URL has one. */
  port?: number;
  /** The ssh login name (`git` of git@host:org/repo), if any. */
  user?: string;
  /** The repository path as written (scp-like paths are relative to the login's home). */
  path: string;
  /** `scp`: `user@host:path`, which git reads as ssh. */
  scp?: boolean;
}

const bad = (message: string): KilnError => new KilnError('invalid_input', message);

const MAX_URL = 2048;
const UNPRINTABLE = /[^\x21-\x7e]/;
const USER_RE = /^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$/;
/** `user@host:path`, git's scp-like syntax: no slash before the first colon, and not `scheme://`. */
const SCP_RE = /^(?:([^@/:]+)@)?(\[[0-9A-Fa-f:.]+\]|[^@/:[\]]+):(?!\/\/)(.+)$/;

function checkHost(raw: string): string {
  const h = raw.replace(/^\[|\]$/g, '').toLowerCase();
  // All digits and dots is an address, and only as a dotted quad: `127.1` or `2130706433` are loopback to a resolver.
  const isIp = /^[0-9.]+$/.test(h) ? net.isIPv4(h) : h.includes(':') ? net.isIPv6(h) : false;
  if (h === '' || h.startsWith('-') || (/^[0-9.]+$/.test(h) && !isIp) || (!isIp && !HOST_NAME_RE.test(h)))
    throw bad('The repository URL has no valid host name.');
  return h;
}

function checkRepoPath(p: string): string {
  if (p === '' || p === '/') throw bad('The repository URL names no repository (its path is empty).');
  if (p.startsWith('-')) throw bad('The repository path may not start with "-".');
  if (p.split('/').some((c) => c === '..')) throw bad('The repository path may not contain "..".');
  return p;
}

/**
 * Parses a repository URL. `mirrors`: the directories a `file://` URL may point into (git.mirrors); without any,
 * file:// is refused. Remote helpers (`ext::`, `fd::`, any `transport::address`), options in disguise (`-...`), plain
 * http, local paths and URLs carrying a password or token are refused.
 */
export function parseGitUrl(raw: unknown, mirrors: readonly string[] = []): GitUrl {
  if (typeof raw !== 'string' || raw.trim() === '') throw bad('Give the repository URL.');
  const v = raw.trim();
  if (v.length > MAX_URL) throw bad(`The repository URL is longer than ${MAX_URL} characters.`);
  if (UNPRINTABLE.test(v))
    throw bad('The repository URL may not contain spaces, control characters or non-ASCII text (use punycode).');
  if (v.startsWith('-')) throw bad('The repository URL may not start with "-" (git would read it as an option).');
  if (/^[A-Za-z][A-Za-z0-9+.-]*::/.test(v))
    throw bad('Remote helpers ("ext::", "fd::" and the like) are not allowed; use an https, ssh or git URL.');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(v)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    const scp = SCP_RE.exec(v);
    if (!scp || v.startsWith('/') || v.startsWith('.') || /^[A-Za-z]:[\\/]/.test(v))
      throw bad(
        'The repository URL must be https://, ssh://, git:// or user@host:path (a local path needs file:// and an admin-configured mirror).',
      );
    if (scp[1] !== undefined && !USER_RE.test(scp[1]))
      throw bad('The ssh login name in the repository URL is not valid (a password or token is not accepted).');
    // One `user@host:` prefix only: `a:b@host:path` is a password in disguise (or another host in the path).
    if (/[@:]/.test(scp[3]!)) throw bad('The repository URL is not valid: its path may not contain "@" or ":".');
    return {
      kind: 'ssh',
      url: v,
      host: checkHost(scp[2]!),
      ...(scp[1] !== undefined ? { user: scp[1] } : {}),
      path: checkRepoPath(scp[3]!),
      scp: true,
    };
  }
  if (scheme === 'http') throw bad('Plain http is not allowed: use https.');
  const kind = (scheme === 'git+ssh' || scheme === 'ssh+git' ? 'ssh' : scheme) as GitUrlKind;
  if (!['https', 'ssh', 'git', 'file'].includes(kind))
    throw bad(`The repository URL scheme "${scheme.slice(0, 20)}" is not allowed; use https, ssh or git.`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw bad('The repository URL is not a valid URL.');
  }
  if (u.search || u.hash || v.includes('?') || v.includes('#'))
    throw bad('The repository URL may not have a query (?) or a fragment (#).');
  if (u.password || (u.username && kind !== 'ssh'))
    throw bad('Credentials in the repository URL are not accepted: Kiln fetches public repositories, or over ssh.');
  if (kind === 'file') return fileUrl(u, mirrors);
  if (u.username && !USER_RE.test(decodeURIComponent(u.username)))
    throw bad('The ssh login name in the repository URL is not valid.');
  const host = checkHost(u.hostname);
  const port = u.port === '' ? undefined : Number(u.port);
  const p = checkRepoPath(u.pathname);
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const user = u.username ? decodeURIComponent(u.username) : undefined;
  return {
    kind,
    url: `${kind}://${user ? `${user}@` : ''}${hostPart}${port !== undefined ? `:${port}` : ''}${p}`,
    host,
    ...(port !== undefined ? { port } : {}),
    ...(user ? { user } : {}),
    path: p,
  };
}

function fileUrl(u: URL, mirrors: readonly string[]): GitUrl {
  if (mirrors.length === 0)
    throw bad('file:// URLs are refused: this site has no local mirror directories (an admin sets git.mirrors).');
  if (u.hostname !== '' && u.hostname !== 'localhost') throw bad('A file:// URL names no host.');
  let p: string;
  try {
    p = decodeURIComponent(u.pathname);
  } catch {
    throw bad('The file:// path is not valid.');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(p) || p.split('/').includes('..') || path.resolve(p) !== p.replace(/\/+$/, ''))
    throw bad('The file:// path must be absolute and plain (no "..").');
  const dir = path.resolve(p);
  if (!mirrors.some((m) => dir.startsWith(path.resolve(m) + path.sep)))
    throw bad('file:// is allowed only inside the local mirror directories an admin configured (git.mirrors).');
  return { kind: 'file', url: `file://${dir}`, host: '', path: dir };
}

/**
 * The repository as pushes name it: host and path, lower case, without a port, `.git` or slashes at the ends, so
 * `https://git.example/Org/Repo.git`, `git@git.example:org/repo` and `ssh://git@git.example:2222/org/repo.git` are
 * one. Undefined when `raw` is not a URL of a repository.
 */
export function matchKey(raw: unknown): string | undefined {
  if (typeof raw !== 'string' || raw.length > MAX_URL || UNPRINTABLE.test(raw)) return undefined;
  let host: string;
  let p: string;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(raw)) {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      return undefined;
    }
    if (u.protocol === 'file:') return `file:${path.resolve(decodeURIComponent(u.pathname))}`.toLowerCase();
    host = u.hostname;
    p = u.pathname;
  } else {
    const scp = SCP_RE.exec(raw);
    if (!scp) return undefined;
    host = scp[2]!;
    p = scp[3]!;
  }
  host = host.replace(/^\[|\]$/g, '').toLowerCase();
  const repo = p
    .replace(/^\/*~?/, '')
    .replace(/\/+$/, '')
    .replace(/\.git$/i, '')
    .toLowerCase();
  return host && repo ? `${host}/${repo}` : undefined;
}

/**
 * A ref as git fetches it: a branch or tag name (`main`, `release/1.x`, `v1.2`), a full ref (`refs/heads/main`),
 * `HEAD`, or a commit id. Refused: what `git check-ref-format` refuses, and anything starting with `-`.
 */
export function parseRef(raw: unknown): string {
  if (raw === undefined || raw === null || raw === '') return 'HEAD';
  if (typeof raw !== 'string') throw bad('The ref must be text.');
  const r = raw.trim();
  if (r === '') return 'HEAD';
  if (r.length > 255) throw bad('The ref is longer than 255 characters.');
  if (
    // eslint-disable-next-line no-control-regex
    /[\x00-\x20\x7f~^:?*[\\]/.test(r) ||
    r.startsWith('-') ||
    r.startsWith('/') ||
    r.endsWith('/') ||
    r.endsWith('.') ||
    r.endsWith('.lock') ||
    r.includes('..') ||
    r.includes('//') ||
    r.includes('@{') ||
    r === '@' ||
    r.split('/').some((c) => c.startsWith('.'))
  )
    throw bad('The ref is not a valid branch, tag or commit name.');
  return r;
}

export const isCommitId = (ref: string): boolean => GIT_COMMIT_RE.test(ref);

/** The branch a ref names, if it names one: `main`, `refs/heads/main`; not a tag path, a commit or HEAD. */
export function branchOf(ref: string): string | undefined {
  if (isCommitId(ref) || ref === 'HEAD') return undefined;
  if (ref.startsWith('refs/heads/')) return ref.slice('refs/heads/'.length);
  if (ref.startsWith('refs/')) return undefined;
  return ref;
}

/**
 * A path inside the repository (the Dockerfile's, or the context directory with `dir`): relative, `/`-separated,
 * without `.`/`..` components, backslashes or control characters. `./x` and `x/` are read as `x`; for a directory,
 * `.`, `/` and '' mean the repository's root ('').
 */
export function parseRepoPath(raw: unknown, o: { dir: boolean; what: string }): string {
  if (raw === undefined || raw === null) raw = '';
  if (typeof raw !== 'string') throw bad(`${o.what} must be text.`);
  let p = raw.trim();
  if (o.dir && ['', '.', './', '/'].includes(p)) return '';
  if (p.length > 1024) throw bad(`${o.what} is longer than 1024 characters.`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(p) || /[\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(p))
    throw bad(`${o.what} may not contain control characters, text-direction marks or backslashes.`);
  if (p.startsWith('/')) throw bad(`${o.what} is a path inside the repository: it may not start with "/".`);
  p = p.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
  const parts = p.split('/');
  if (p === '' || parts.some((c) => c === '' || c === '.' || c === '..'))
    throw bad(`${o.what} may not contain "..", "." or empty components.`);
  if (parts.some((c) => Buffer.byteLength(c) > 255)) throw bad(`${o.what} has a component longer than 255 bytes.`);
  return p;
}
