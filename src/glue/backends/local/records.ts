/**
 * The local backend's data directory, shaped like Jenkins' own, and the records in it:
 *
 *   <dataDir>/glue/jobs/kiln-job-<id>/{config.json, Dockerfile, context.tar?, meta.json, nextBuildNumber,
 *                                     builds/<n>/{build.json, log, cancel?, ws/, tmp/, archive/}}
 *   <dataDir>/glue/queue/<queueId>-<job>-<build>      one empty file per queued build, ordered by queue id
 *
 * Every state file is replaced atomically (store.ts) under the one data-directory lock; the build log is
 * append-only. A build's state moves queued -> running -> succeeded|failed|cancelled|lost (or queued -> cancelled)
 * and never back.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import path from 'node:path';
import {
  ARTIFACT_NAMES,
  backendJobName,
  specSha256,
  type ArtifactInfo,
  type BuildState,
  type GitSource,
  type JobSpec,
} from '../../../protocol/index.js';
import { KilnError } from '../../../shared/errors.js';
import type { ProcessIdentity } from './process.js';
import { DirLock, exists, readJson, writeAtomic, writeJson } from './store.js';

export interface BuildRecord {
  job: number;
  build: number;
  state: BuildState;
  queueId: number;
  idempotencyKey: string;
  queuedAt: string;
  startedAt?: string;
  finishedAt?: string;
  reason?: string;
  /** The running SDK, leader of its process group: signalled only while it is still this very process. */
  process?: ProcessIdentity;
  exitCode?: number | null;
  formats: string[];
  buildArgs: Record<string, string>;
  /** The site's names for bases (`--base-name`); absent in records written before they existed. */
  baseNames?: { name: string; base: string }[];
  /** The boot test's firmwares (`--boot-firmware`); absent: the SDK's default. */
  bootFirmware?: string[];
  hasContext: boolean;
  /** Where the Dockerfile came from (a git commit), written to ws/source.json for the SDK's `--source`. */
  source?: GitSource;
  /** What started it: its job's timer, or a job.build (absent in records written before it was kept: job.build). */
  trigger?: 'schedule' | 'api';
  /** Pinned by its user (`build.keep on`): `build.discard` refuses it. */
  keep?: boolean;
  /** When `build.discard` dropped its artifacts (its archive/); its log and this record stay. */
  discardedAt?: string;
}

export interface JobMeta {
  createdAt: string;
  /** When the current schedule was set: a period that began earlier is not fired retroactively. */
  scheduleSince: string;
  /** idempotency key -> build number. Null prototype: a key such as `constructor` is a key like any other. */
  keys: Record<string, number>;
}

/** Stored job config: the JobSpec without its (large) context, which lives in context.tar. */
export type StoredSpec = Omit<JobSpec, 'contextTarBase64'>;

export const FINAL: ReadonlySet<BuildState> = new Set(['succeeded', 'failed', 'cancelled', 'lost']);
/** Why a build ended `lost`, in words a user can read on the build page. */
export const LOST = {
  restart: 'interrupted: the build service restarted while the build ran',
  stop: 'interrupted: the build service stopped while the build ran',
} as const;

/** Paths and records of one data directory. Read-modify-write sequences hold `lock`; reads need not. */
export class BuildStore {
  readonly root: string;
  readonly jobsDir: string;
  readonly queueDir: string;
  readonly lock: DirLock;

  constructor(
    dataDir: string,
    readonly now: () => Date,
  ) {
    this.root = path.join(path.resolve(dataDir), 'glue');
    this.jobsDir = path.join(this.root, 'jobs');
    this.queueDir = path.join(this.root, 'queue');
    this.lock = new DirLock(this.root);
  }

  jobDir = (job: number) => path.join(this.jobsDir, backendJobName(job));
  buildDir = (job: number, build: number) => path.join(this.jobDir(job), 'builds', String(build));
  queueEntry = (r: Pick<BuildRecord, 'queueId' | 'job' | 'build'>) =>
    path.join(this.queueDir, `${String(r.queueId).padStart(12, '0')}-${r.job}-${r.build}`);
  iso = () => this.now().toISOString();

  /** A build's workspace and temp dir (TMPDIR of its SDK): needed only while it runs. */
  async removeScratch(job: number, build: number): Promise<void> {
    const dir = this.buildDir(job, build);
    await fsp.rm(path.join(dir, 'ws'), { recursive: true, force: true });
    await fsp.rm(path.join(dir, 'tmp'), { recursive: true, force: true });
  }

  async readMeta(job: number): Promise<JobMeta | undefined> {
    const meta = await readJson<JobMeta>(path.join(this.jobDir(job), 'meta.json'));
    if (meta) meta.keys = Object.assign(Object.create(null) as Record<string, number>, meta.keys);
    return meta;
  }

  /** protocol.specSha256 of the Dockerfile and context the job holds now. */
  async specDigest(job: number): Promise<string> {
    const dir = this.jobDir(job);
    const context = await fsp.readFile(path.join(dir, 'context.tar')).catch(() => undefined);
    const spec = await readJson<StoredSpec>(path.join(dir, 'config.json'));
    return specSha256(await fsp.readFile(path.join(dir, 'Dockerfile')), context, spec?.source);
  }

  async readSpec(job: number): Promise<StoredSpec> {
    const spec = await readJson<StoredSpec>(path.join(this.jobDir(job), 'config.json'));
    if (!spec) throw new KilnError('not_found', 'No such job');
    return spec;
  }

  async nextBuildNumber(job: number): Promise<number> {
    const t = await fsp.readFile(path.join(this.jobDir(job), 'nextBuildNumber'), 'utf8').catch(() => '1');
    const n = Number.parseInt(t.trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : 1;
  }

  async nextQueueId(): Promise<number> {
    const file = path.join(this.root, 'nextQueueId');
    const t = await fsp.readFile(file, 'utf8').catch(() => '1');
    const n = Number.parseInt(t.trim(), 10) || 1;
    await writeAtomic(file, `${n + 1}\n`);
    return n;
  }

  readBuild(job: number, build: number): Promise<BuildRecord | undefined> {
    return readJson<BuildRecord>(path.join(this.buildDir(job, build), 'build.json')).catch(() => undefined);
  }

  async mustReadBuild(job: number, build: number): Promise<BuildRecord> {
    const rec = await this.readBuild(job, build);
    if (!rec)
      throw new KilnError(
        'not_found',
        (await exists(path.join(this.jobDir(job), 'config.json'))) ? 'No such build' : 'No such job',
      );
    return rec;
  }

  writeBuild(rec: BuildRecord): Promise<void> {
    return writeJson(path.join(this.buildDir(rec.job, rec.build), 'build.json'), rec);
  }

  /**
   * Records a final state. Callers hold the lock, and remove the build's scratch (removeScratch) next: the state is
   * written first, so a crash in between leaves an ended build with a workspace, which recovery removes (the other
   * order would leave a queued build without its Dockerfile).
   */
  async finish(rec: BuildRecord, state: BuildState, reason?: string, o: { appendLog?: string } = {}): Promise<void> {
    const next: BuildRecord = { ...rec, state, finishedAt: this.iso() };
    delete next.process;
    if (reason) next.reason = reason;
    if (o.appendLog)
      await fsp.appendFile(path.join(this.buildDir(rec.job, rec.build), 'log'), o.appendLog).catch(() => undefined);
    await this.writeBuild(next);
    Object.assign(rec, next);
  }

  async jobNames(): Promise<string[]> {
    const ents = await fsp.readdir(this.jobsDir, { withFileTypes: true }).catch(() => []);
    return ents.filter((e) => e.isDirectory()).map((e) => e.name);
  }

  async buildNumbers(job: number): Promise<number[]> {
    const ents = await fsp.readdir(path.join(this.jobDir(job), 'builds')).catch(() => [] as string[]);
    return ents
      .filter((n) => /^[1-9][0-9]*$/.test(n))
      .map(Number)
      .sort((a, b) => a - b);
  }

  async queueEntries(): Promise<Array<{ file: string; queueId: number; job: number; build: number }>> {
    const names = (await fsp.readdir(this.queueDir).catch(() => [] as string[])).sort();
    const out = [];
    for (const file of names) {
      const m = /^([0-9]{12})-([1-9][0-9]*)-([1-9][0-9]*)$/.exec(file);
      if (m) out.push({ file, queueId: Number(m[1]), job: Number(m[2]), build: Number(m[3]) });
    }
    return out;
  }

  async logTail(job: number, build: number, bytes: number): Promise<string> {
    try {
      const fh = await fsp.open(path.join(this.buildDir(job, build), 'log'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
      try {
        const size = (await fh.stat()).size;
        const start = Math.max(0, size - bytes);
        const buf = Buffer.alloc(size - start);
        await fh.read(buf, 0, buf.length, start);
        return buf.toString('utf8');
      } finally {
        await fh.close();
      }
    } catch {
      return '';
    }
  }

  /** Regular files with allow-listed names, found with lstat: a symlink or directory is never an artifact. */
  async listArtifacts(job: number, build: number): Promise<ArtifactInfo[]> {
    const archive = path.join(this.buildDir(job, build), 'archive');
    const ast = await fsp.lstat(archive).catch(() => undefined);
    if (!ast?.isDirectory()) return [];
    const out: ArtifactInfo[] = [];
    for (const name of ARTIFACT_NAMES) {
      const st = await fsp.lstat(path.join(archive, name)).catch(() => undefined);
      if (st?.isFile()) out.push({ name, size: st.size });
    }
    return out;
  }
}
