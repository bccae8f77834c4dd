/**
 * What a build produced, read for people: the SDK's result.json (boot tests, stages, error), the manifest's and
 * the SBOM's package lists (searchable), a boot test's serial console, the package diff against the previous
 * successful build of the same Dockerfile, and for a failed build a short summary naming the failing Dockerfile
 * line or SDK stage. The documents come through the glue like any download; a verified build's are checked against
 * the digests Kiln computed when it verified them. Reads only; all text in them is the build's (untrusted): it is
 * parsed with schemas, bounded, and rendered escaped.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { findPreviousSucceeded, getVersion, isFinal, type BuildRow } from '../../db/index.js';
import { parseDockerfile } from '../../dockerfile/parse.js';
import type { ArtifactName } from '../../protocol/index.js';
import { parseBuildResult, type BootTestResult, type BuildResult } from '../../protocol/sdk-output.js';
import { KilnError, notFound } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { buildFor } from './access.js';
import type { Coalescer } from './live.js';
import { plainLine } from './log-view.js';

type Deps = Pick<CoreDeps, 'db' | 'glue'> & { live: Coalescer };

/** Documents larger than this are not shown (they stay downloadable). */
export const MAX_DOCUMENT_BYTES = 32 * 1024 * 1024;
/** How long a final build's documents, and the report made of them, are kept in memory. */
const KEEP_MS = 10 * 60_000;

/** The build's artifact of that name while the backend still keeps it (not once retention dropped it). */
export const storedArtifact = (b: BuildRow, name: string) =>
  b.artifacts_expired_at ? undefined : b.artifacts.find((a) => a.name === name);

/**
 * An artifact's bytes, whole, for a final build (the documents of a finished build never change, so they are kept
 * a while and shared by concurrent readers). Undefined when the build has no such artifact.
 */
async function documentOf(d: Deps, b: BuildRow, name: ArtifactName): Promise<Buffer | undefined> {
  const art = storedArtifact(b, name);
  if (!art || b.backend_build == null || !isFinal(b.state)) return undefined;
  if (art.size > MAX_DOCUMENT_BYTES)
    throw new KilnError('too_large', `${name} is too large to show here; download it instead.`);
  const job = b.dockerfile_id;
  const no = b.backend_build;
  return d.live.get(
    `doc:${b.id}:${name}`,
    () => KEEP_MS,
    async () => {
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of await d.glue.artifact(job, no, name)) {
        n += (c as Buffer).length;
        if (n > MAX_DOCUMENT_BYTES)
          throw new KilnError('too_large', `${name} is too large to show here; download it instead.`);
        chunks.push(c as Buffer);
      }
      const buf = Buffer.concat(chunks);
      // Verified builds: exactly the bytes Kiln hashed and signed.
      if (art.sha256 && createHash('sha256').update(buf).digest('hex') !== art.sha256) {
        throw new KilnError(
          'conflict',
          `${name} no longer matches the digest Kiln verified; the build service changed it.`,
        );
      }
      return buf;
    },
  );
}

async function jsonDocument(d: Deps, b: BuildRow, name: ArtifactName): Promise<unknown> {
  const buf = await documentOf(d, b, name);
  if (!buf) return undefined;
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** result.json, parsed; rejects when it could not be read. */
async function readResult(d: Deps, b: BuildRow): Promise<BuildResult | undefined> {
  const buf = await documentOf(d, b, 'result.json');
  return buf ? parseBuildResult(buf.toString('utf8')) : undefined;
}

async function resultOf(d: Deps, b: BuildRow): Promise<BuildResult | undefined> {
  return readResult(d, b).catch(() => undefined);
}

export interface BootTestView {
  index: number;
  format: string;
  artifact: string;
  firmware: 'bios' | 'uefi';
  seconds: number;
  passed: boolean;
  reason?: string;
  hasSerialLog: boolean;
}
export interface FailureSummary {
  stage?: string;
  line?: number;
  instruction?: string;
  message: string;
}
export interface BuildReport {
  bootTests: BootTestView[];
  stages: { name: string; seconds: number }[];
  failure?: FailureSummary;
}

const FORMAT_OF: Record<string, string> = {
  'image.raw': 'raw',
  'image.qcow2': 'qcow2',
  'image.iso': 'iso',
  'rootfs.tar.zst': 'tar',
};

const bootView = (t: BootTestResult, index: number): BootTestView => ({
  index,
  format: FORMAT_OF[t.artifact] ?? t.artifact,
  artifact: t.artifact,
  firmware: t.firmware,
  seconds: t.seconds,
  passed: t.passed,
  ...(t.reason ? { reason: t.reason } : {}),
  hasSerialLog: !!t.serialLog,
});

/** The build page's report: boot tests and stages from result.json, and the failure summary of a failed build. */
export async function buildReport(d: Deps, actor: Actor, rawId: unknown): Promise<BuildReport> {
  const b = await buildFor(d.db, actor, rawId);
  return reportOf(d, b);
}

/**
 * The report of a build. A final build's never changes: it is made once (result.json parsed, a failure's log tail
 * read through the glue) and kept as long as its documents, shared by everyone who views it meanwhile; one made while
 * a read failed is not kept, so the next view tries again.
 */
export async function reportOf(d: Deps, b: BuildRow): Promise<BuildReport> {
  const made = isFinal(b.state)
    ? await d.live.get(
        `report:${b.id}`,
        (r: MadeReport) => (r.complete ? KEEP_MS : 0),
        () => makeReport(d, b),
      )
    : await makeReport(d, b);
  return made.report;
}

type MadeReport = { report: BuildReport; complete: boolean };

async function makeReport(d: Deps, b: BuildRow): Promise<MadeReport> {
  let complete = true;
  const incomplete = () => {
    complete = false;
    return undefined;
  };
  const result = await readResult(d, b).catch(incomplete);
  const report: BuildReport = { bootTests: (result?.bootTests ?? []).map(bootView), stages: result?.stages ?? [] };
  if (b.state === 'failed') report.failure = await failureSummary(d, b, result, incomplete);
  return { report, complete };
}

/** `Step 3/7 : RUN apt-get install nope` in the legacy builder's output. */
const STEP = /^Step (\d+)\/(\d+) : (.*)$/;

/**
 * Where a failed build failed: the SDK stage that threw (the last one result.json timed: a stage is timed also when
 * it throws) and, for a failing Dockerfile step, the step the builder printed last, mapped onto the Dockerfile's
 * line (the N-th instruction; named only when its keyword agrees).
 */
async function failureSummary(
  d: Deps,
  b: BuildRow,
  result: BuildResult | undefined,
  unread: () => undefined,
): Promise<FailureSummary> {
  const summary: FailureSummary = { message: result?.error?.message ?? b.reason ?? 'The build failed.' };
  const stage = result?.stages.at(-1)?.name;
  if (stage) summary.stage = stage;
  if (stage !== 'build' && stage !== undefined) return summary;
  const tail = (await logTail(d, b).catch(unread)) ?? '';
  let step: RegExpExecArray | null = null;
  for (const line of tail.split('\n')) {
    const m = STEP.exec(plainLine(line).trim());
    if (m) step = m;
  }
  if (!step) return summary;
  const n = Number(step[1]);
  summary.instruction = step[3]!.slice(0, 300);
  const version = await getVersion(d.db, b.version_id);
  const node = version ? parseDockerfile(version.content).nodes[n - 1] : undefined;
  const keyword = summary.instruction.split(/\s/)[0]!.toLowerCase();
  if (node && node.keyword === keyword) {
    summary.line = node.startLine;
    summary.instruction = node.original.slice(0, 300);
  }
  return summary;
}

/** The last 64 KiB of the build's log: the SDK's build.log, else the glue's log of the build (read to its end). */
async function logTail(d: Deps, b: BuildRow): Promise<string> {
  if (b.backend_build == null) return '';
  const art = storedArtifact(b, 'build.log');
  const keep = 64 * 1024;
  if (art) {
    const chunks: Buffer[] = [];
    for await (const c of await d.glue.artifact(
      b.dockerfile_id,
      b.backend_build,
      'build.log',
      Math.max(0, art.size - keep),
    ))
      chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  let text = '';
  let offset = 0;
  for (let i = 0; i < 64; i++) {
    const c = await d.glue.call('build.log', [b.dockerfile_id, b.backend_build, offset]);
    text = (text + c.text).slice(-keep);
    if (c.nextOffset <= offset || !c.more) break;
    offset = c.nextOffset;
  }
  return text;
}

/** A boot test's serial console (the tail result.json keeps), as lines. */
export async function serialLog(
  d: Deps,
  actor: Actor,
  rawId: unknown,
  rawIndex: unknown,
): Promise<{ build: BuildRow; test: BootTestView; lines: string[] }> {
  const b = await buildFor(d.db, actor, rawId);
  const index = typeof rawIndex === 'string' && /^[0-9]{1,3}$/.test(rawIndex) ? Number(rawIndex) : -1;
  const t = (await resultOf(d, b))?.bootTests[index];
  if (!t) throw notFound('No such boot test');
  return { build: b, test: bootView(t, index), lines: (t.serialLog ?? '').replace(/\r\n?/g, '\n').split('\n') };
}

const pkg = z.object({
  name: z.string().max(512),
  version: z.string().max(512),
  architecture: z.string().max(64).optional(),
  source: z.string().max(512).optional(),
});
export type PackageEntry = z.infer<typeof pkg> & { purl?: string };
const manifestSchema = z.object({
  packages: z.array(z.unknown()).max(200_000).default([]),
  os: z
    .object({ prettyName: z.string().max(256).optional() })
    .partial()
    .optional(),
  boot: z
    .object({ kernel: z.string().max(256).optional(), init: z.string().max(256).optional() })
    .partial()
    .optional(),
  createdAt: z.string().max(64).optional(),
});
const spdxSchema = z.object({
  spdxVersion: z.string().max(32).optional(),
  packages: z
    .array(
      z.object({
        SPDXID: z.string().max(512).optional(),
        name: z.string().max(512),
        versionInfo: z.string().max(512).optional(),
        externalRefs: z
          .array(
            z
              .object({
                referenceType: z.string().max(64).optional(),
                referenceLocator: z.string().max(2048).optional(),
              })
              .partial(),
          )
          .max(20)
          .optional(),
      }),
    )
    .max(200_000)
    .default([]),
});

const validPackages = (list: unknown[]): PackageEntry[] =>
  list.flatMap((p) => {
    const r = pkg.safeParse(p);
    return r.success ? [r.data] : [];
  });

export interface PackageListView {
  build: BuildRow;
  available: boolean;
  /** All packages, or those whose name, version or purl contains the query (case-insensitive). */
  packages: PackageEntry[];
  total: number;
  query: string;
  facts: Record<string, string>;
}

function searchOf(raw: unknown): string {
  return typeof raw === 'string' ? raw.trim().slice(0, 100) : '';
}

function filterPackages(list: PackageEntry[], q: string): PackageEntry[] {
  if (!q) return list;
  const needle = q.toLowerCase();
  return list.filter(
    (p) =>
      p.name.toLowerCase().includes(needle) ||
      p.version.toLowerCase().includes(needle) ||
      (p.purl ?? '').toLowerCase().includes(needle),
  );
}

async function manifestPackages(
  d: Deps,
  b: BuildRow,
): Promise<{ packages: PackageEntry[]; facts: Record<string, string> } | undefined> {
  const doc = manifestSchema.safeParse(await jsonDocument(d, b, 'manifest.json'));
  if (!doc.success) return undefined;
  const facts: Record<string, string> = {};
  if (doc.data.os?.prettyName) facts.os = doc.data.os.prettyName;
  if (doc.data.boot?.kernel) facts.kernel = doc.data.boot.kernel;
  if (doc.data.boot?.init) facts.init = doc.data.boot.init;
  if (doc.data.createdAt) facts.created = doc.data.createdAt;
  return { packages: validPackages(doc.data.packages), facts };
}

/** The manifest's packages (name, version, architecture, source), searchable. */
export async function manifestView(d: Deps, actor: Actor, rawId: unknown, rawQuery: unknown): Promise<PackageListView> {
  const b = await buildFor(d.db, actor, rawId);
  const m = await manifestPackages(d, b);
  const query = searchOf(rawQuery);
  return {
    build: b,
    available: !!m,
    packages: filterPackages(m?.packages ?? [], query),
    total: m?.packages.length ?? 0,
    query,
    facts: m?.facts ?? {},
  };
}

/** The SBOM's packages (SPDX: name, version, purl), searchable. */
export async function sbomView(d: Deps, actor: Actor, rawId: unknown, rawQuery: unknown): Promise<PackageListView> {
  const b = await buildFor(d.db, actor, rawId);
  const doc = spdxSchema.safeParse(await jsonDocument(d, b, 'sbom.spdx.json'));
  const query = searchOf(rawQuery);
  if (!doc.success) return { build: b, available: false, packages: [], total: 0, query, facts: {} };
  const all: PackageEntry[] = doc.data.packages
    .filter((p) => p.SPDXID !== 'SPDXRef-Image')
    .map((p) => {
      const purl = p.externalRefs?.find((r) => r.referenceType === 'purl')?.referenceLocator;
      return { name: p.name, version: p.versionInfo ?? '', ...(purl ? { purl } : {}) };
    });
  return {
    build: b,
    available: true,
    packages: filterPackages(all, query),
    total: all.length,
    query,
    facts: doc.data.spdxVersion ? { spdx: doc.data.spdxVersion } : {},
  };
}

export interface PackageDiff {
  build: BuildRow;
  /** The build compared against: the previous successful build of the same Dockerfile. */
  previous?: BuildRow;
  available: boolean;
  added: PackageEntry[];
  removed: PackageEntry[];
  changed: { name: string; architecture?: string; from: string; to: string }[];
  unchanged: number;
}

/** Packages added, removed and changed (version) since the previous successful build of the same Dockerfile. */
export async function packageDiff(d: Deps, actor: Actor, rawId: unknown): Promise<PackageDiff> {
  return diffOfBuild(d, await buildFor(d.db, actor, rawId));
}

/** The package diff of `b`, read without an actor (the build-end notice, src/core/following, decides who sees it). */
export async function diffOfBuild(d: Deps, b: BuildRow): Promise<PackageDiff> {
  const previous = await findPreviousSucceeded(d.db, b);
  const empty = {
    build: b,
    ...(previous ? { previous } : {}),
    available: false,
    added: [],
    removed: [],
    changed: [],
    unchanged: 0,
  };
  if (!previous) return empty;
  const [now, before] = await Promise.all([manifestPackages(d, b), manifestPackages(d, previous)]);
  if (!now || !before) return empty;
  return { build: b, previous, available: true, ...diffPackages(before.packages, now.packages) };
}

export function diffPackages(
  before: PackageEntry[],
  after: PackageEntry[],
): Pick<PackageDiff, 'added' | 'removed' | 'changed' | 'unchanged'> {
  const key = (p: PackageEntry) => `${p.name}\u0000${p.architecture ?? ''}`;
  const old = new Map(before.map((p) => [key(p), p]));
  const cur = new Map(after.map((p) => [key(p), p]));
  const out: Pick<PackageDiff, 'added' | 'removed' | 'changed' | 'unchanged'> = {
    added: [],
    removed: [],
    changed: [],
    unchanged: 0,
  };
  for (const [k, p] of cur) {
    const o = old.get(k);
    if (!o) out.added.push(p);
    else if (o.version !== p.version)
      out.changed.push({
        name: p.name,
        ...(p.architecture ? { architecture: p.architecture } : {}),
        from: o.version,
        to: p.version,
      });
    else out.unchanged++;
  }
  for (const [k, p] of old) if (!cur.has(k)) out.removed.push(p);
  const byName = (a: { name: string }, z2: { name: string }) => (a.name < z2.name ? -1 : a.name > z2.name ? 1 : 0);
  out.added.sort(byName);
  out.removed.sort(byName);
  out.changed.sort(byName);
  return out;
}
