/**
 * Downloading a succeeded build (or a ready release) into DIR, checked before anything lands there. Everything goes first into a fresh
 * `DIR/.kiln-download-*` directory: each artifact is fetched (a cut transfer resumes with Range from where it
 * stopped), its size and sha256 compared with Kiln's listing, then the set is checked with `kiln verify`'s own code
 * (src/sdk/verify.ts: every file SHA256SUMS lists, the signature over it against the signing key) and every file
 * but build.log and result.json must be one SHA256SUMS lists. Only then are the files renamed into DIR; on any
 * failure the staging directory is removed and DIR gets nothing.
 *
 * Artifact names come from the server and are not trusted: each must be one of the names Kiln makes (the protocol's
 * allow-list, all plain file names), listed once; anything else refuses the whole download. URLs are made here from
 * KILN_URL and the name, never taken from the answer.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ARTIFACT_NAMES, RELEASE_JSON } from '../../protocol/index.js';
import { parseSha256Sums } from '../../shared/checksums.js';
import { KilnError } from '../../shared/errors.js';
import { EXIT } from '../../shared/exit-status.js';
import { verifyDir } from '../../sdk/verify.js';
import { fetchKey } from '../verify.js';
import {
  ClientError,
  TransientError,
  networkReason,
  stallGuard,
  type Artifact,
  type Build,
  type KilnApi,
} from './api.js';

/** Not signed: the build's log and the builder's result record (their digests are still checked). */
const UNSIGNED = new Set(['build.log', 'result.json', 'SHA256SUMS', 'SHA256SUMS.sig']);

const refuse = (message: string) => new ClientError(EXIT.verification, message);

/** A file as a listing gives it: a name Kiln makes, its size, and Kiln's sha256 (null: not verified yet). */
type Listed = Pick<Artifact, 'name' | 'size' | 'sha256'>;
/** What a release holds besides a build's artifacts. */
const RELEASE_NAMES: readonly string[] = [...ARTIFACT_NAMES, RELEASE_JSON];

/** The listing, checked: known names, each once, sizes and digests of the right shape. */
export function checkListing(artifacts: unknown, names: readonly string[] = ARTIFACT_NAMES, what = 'build'): Listed[] {
  if (!Array.isArray(artifacts) || artifacts.length === 0) throw refuse(`Kiln listed no files for this ${what}`);
  const seen = new Set<string>();
  for (const a of artifacts as Listed[]) {
    const name: unknown = a && typeof a === 'object' ? a.name : a;
    if (typeof name !== 'string' || !names.includes(name))
      throw refuse(
        `Kiln listed an artifact named ${JSON.stringify(String(name).slice(0, 100))}, which is not a name Kiln makes: refused`,
      );
    if (seen.has(a.name)) throw refuse(`Kiln listed the artifact ${a.name} twice: refused`);
    seen.add(a.name);
    if (!Number.isSafeInteger(a.size) || a.size < 0) throw refuse(`Kiln listed ${a.name} with no valid size`);
    if (a.sha256 !== null && !/^[0-9a-f]{64}$/.test(String(a.sha256)))
      throw refuse(`Kiln listed ${a.name} with a malformed sha256`);
  }
  return artifacts as Listed[];
}

/** The signing key: a pinned one, else the site's (fetched over KILN_URL's connection). */
async function signingKey(api: KilnApi, pinned: string | undefined): Promise<string> {
  if (pinned) return pinned;
  return api.retrying(() =>
    fetchKey(`${api.env.base}/.well-known/kiln-signing-key`).catch((e: unknown) => {
      if (e instanceof KilnError && e.code === 'backend_unavailable') throw new TransientError(e.message);
      throw refuse(e instanceof Error ? e.message : String(e));
    }),
  );
}

/** One file from `url` (a path below /api/v1) into `file` (created here, never an existing file or link), resumed after a cut; checked. */
async function fetchFile(api: KilnApi, url: string, a: Listed, file: string): Promise<void> {
  const fh = await fsp.open(file, 'wx', 0o644);
  let hash = createHash('sha256');
  let got = 0;
  try {
    await api.retrying(
      async () => {
        const guard = stallGuard();
        try {
          const res = await api.attempt(url, {
            headers: got ? { range: `bytes=${got}-` } : {},
            timeoutMs: 0,
            signal: guard.signal,
          });
          const from =
            res.status === 206 ? Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]) : 0;
          if (from !== got) {
            if (res.status === 206) throw refuse(`Kiln answered another range of ${a.name} than asked`);
            // The whole file again: start over.
            await fh.truncate(0);
            hash = createHash('sha256');
            got = 0;
          }
          try {
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
              guard.touch();
              if (got + chunk.length > a.size)
                throw refuse(`${a.name} is larger than Kiln listed it (${a.size} bytes)`);
              await fh.write(chunk, 0, chunk.length, got);
              hash.update(chunk);
              got += chunk.length;
            }
          } catch (e) {
            if (e instanceof ClientError) throw e;
            throw new TransientError(`the download of ${a.name} was cut at byte ${got}: ${networkReason(e)}`);
          }
          if (got < a.size) throw new TransientError(`the download of ${a.name} ended at byte ${got} of ${a.size}`);
        } finally {
          guard.stop();
        }
      },
      { progress: () => got },
    );
  } finally {
    await fh.close();
  }
  const sha = hash.digest('hex');
  if (a.sha256 !== null && sha !== a.sha256)
    throw refuse(`${a.name} does not match Kiln's sha256 for it (got ${sha}, listed ${a.sha256})`);
}

export interface Downloaded {
  dir: string;
  files: string[];
}

/**
 * Downloads succeeded build `b` into `dir` (made if missing) and checks it; the files land in `dir` only if every
 * check passes. `pinnedKey`: the signing key to trust instead of the one the site publishes.
 */
export async function downloadBuild(
  api: KilnApi,
  b: Build,
  dir: string,
  o: { pinnedKey?: string; note: (m: string) => void },
): Promise<Downloaded> {
  if (b.state !== 'succeeded') {
    const exit = b.state === 'failed' ? EXIT.failed : b.state === 'cancelled' ? EXIT.cancelled : EXIT.refused;
    throw new ClientError(exit, `build ${b.id} is ${b.state}: only a succeeded build can be downloaded and verified`);
  }
  if (b.artifactsExpiredAt)
    throw new ClientError(
      EXIT.refused,
      `build ${b.id}'s artifacts expired on ${b.artifactsExpiredAt.slice(0, 10)}: retention discarded them`,
    );
  const list = await api.json<{ artifacts: unknown }>(`/builds/${b.id}/artifacts`);
  const files = await downloadChecked(api, checkListing(list.artifacts), dir, {
    ...o,
    url: (name) => `/builds/${b.id}/artifacts/${encodeURIComponent(name)}`,
    verify: {},
    // Everything but the build's records must be one SHA256SUMS lists.
    unsignedAllowed: UNSIGNED,
  });
  o.note(`downloaded ${files.length} files of build ${b.id} to ${dir}: checksums and signature verified`);
  return { dir, files };
}

/**
 * Downloads ready release `r` (an answer of GET /releases/{id}) into `dir`, checked as `kiln verify --release NAME`
 * checks it: every file listed in its signed SHA256SUMS, release.json naming this release.
 */
export async function downloadRelease(
  api: KilnApi,
  r: { id: number; name: string; state: string; files: unknown },
  dir: string,
  o: { pinnedKey?: string; note: (m: string) => void },
): Promise<Downloaded> {
  if (r.state !== 'ready')
    throw new ClientError(EXIT.refused, `release ${r.name} is ${r.state}: only a ready release can be downloaded`);
  const files = await downloadChecked(api, checkListing(r.files, RELEASE_NAMES, 'release'), dir, {
    ...o,
    url: (name) => `/releases/${r.id}/files/${encodeURIComponent(name)}`,
    verify: { release: r.name },
    unsignedAllowed: new Set(['SHA256SUMS', 'SHA256SUMS.sig']),
  });
  o.note(`downloaded release ${r.name} (${files.length} files) to ${dir}: checksums, signature and name verified`);
  return { dir, files };
}

/**
 * The common part: every listed file into a fresh staging directory inside `dir`, `kiln verify`'s checks with the
 * signing key, every file but `unsignedAllowed` listed in SHA256SUMS; only then renamed into `dir`. Any failure
 * removes the staging directory: `dir` gets nothing.
 */
async function downloadChecked(
  api: KilnApi,
  listed: readonly Listed[],
  dir: string,
  o: {
    pinnedKey?: string;
    url: (name: string) => string;
    verify: { release?: string };
    unsignedAllowed: ReadonlySet<string>;
  },
): Promise<string[]> {
  const publicKey = await signingKey(api, o.pinnedKey);
  await fsp.mkdir(dir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new ClientError(EXIT.usage, `Cannot make the download directory ${dir}: ${e.code ?? e.message}`);
  });
  const staging = await fsp.mkdtemp(path.join(dir, '.kiln-download-'));
  try {
    for (const a of listed) await fetchFile(api, o.url(a.name), a, path.join(staging, a.name));
    const report = await verifyDir(staging, { publicKey, requireSignature: true, sbom: false, ...o.verify });
    const bad = report.checks.filter((c) => !c.ok);
    if (!report.ok)
      throw refuse(`the download failed verification: ${bad.map((c) => `${c.name}: ${c.message}`).join('; ')}`);
    const signed = new Set(
      parseSha256Sums(await fsp.readFile(path.join(staging, 'SHA256SUMS'), 'utf8')).map((e) => e.name),
    );
    const unsigned = listed.filter((a) => !o.unsignedAllowed.has(a.name) && !signed.has(a.name)).map((a) => a.name);
    if (unsigned.length)
      throw refuse(`the download failed verification: SHA256SUMS does not list ${unsigned.join(', ')}`);
    for (const a of listed) await fsp.rename(path.join(staging, a.name), path.join(dir, a.name));
    return listed.map((a) => a.name);
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}
