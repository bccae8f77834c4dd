import type { Readable } from 'node:stream';
import type {
  ArtifactName,
  BuildStatus,
  JobBuild,
  JobInfo,
  JobSpec,
  JobView,
  LogChunk,
  PingReply,
  QueueItem,
  BuildState,
} from '../../protocol/index.js';

/**
 * What the glue asks of a build engine. Two implementations: `local` (embedded default: runs the SDK on this
 * machine, keeps a Jenkins-shaped data directory) and `jenkins` (a real Jenkins through the `jenkins` client).
 *
 * Lifecycle: built once by the composition root, `start()` before the first call (the local backend resumes its
 * queue and ends the builds a restart cut off as `lost`), `close()` on shutdown. `lost` is how every backend says a
 * build was cut off by a fault of Kiln or its machine rather than by its Dockerfile (the web requeues it once).
 *
 * Idempotency: every method may be retried. putJob is create-or-update; enable/disable of a job already in that
 * state succeeds; deleteJob of a missing job returns false; build() with an idempotency key already seen for that
 * job returns the same build number with created=false and never starts a second build.
 *
 * Errors (KilnError codes): not_found for a missing job, build or artifact; backend_unavailable when the engine
 * cannot be reached (the caller retries later; nothing was changed); conflict for a state that forbids the call;
 * invalid_input for arguments the engine refuses.
 */
export interface Backend {
  readonly kind: 'local' | 'jenkins';
  start(): Promise<void>;
  close(): Promise<void>;

  putJob(job: number, spec: JobSpec): Promise<{ created: boolean }>;
  setEnabled(job: number, enabled: boolean): Promise<void>;
  deleteJob(job: number): Promise<{ deleted: boolean }>;
  /** The job as the backend holds it now, whoever changed it last; not_found for a missing job. */
  getJob(job: number): Promise<JobView>;
  /** The job's newest builds (at most JOB_BUILDS_DEPTH, newest first) and what started each. */
  jobBuilds(job: number): Promise<JobBuild[]>;
  /**
   * With `sha256` (protocol.specSha256 of the Dockerfile and context the caller put), the build uses exactly
   * those or is refused with `conflict` (another job.put came in between); a retry with a seen key is not checked.
   */
  build(job: number, idempotencyKey: string, sha256?: string): Promise<{ build: number; created: boolean }>;
  cancel(job: number, build: number): Promise<{ state: BuildState }>;
  /**
   * Undoes build(job, key): a trigger still waiting (Jenkins gives no build number until a build starts) is
   * removed; a build it became is cancelled and named. withdrawn=false when the key was never seen.
   */
  withdraw(job: number, idempotencyKey: string): Promise<{ withdrawn: boolean; build?: number; state?: BuildState }>;

  /**
   * Keeps a build from the backend's own discarding (a pin; Jenkins' keepLog), or lets it go. Idempotent. not_found
   * for a missing job or build.
   */
  keep(job: number, build: number, keep: boolean): Promise<{ kept: boolean }>;
  /**
   * Drops a finished build's artifacts, keeping its log and record (retention). `conflict` for a kept build or one
   * not finished; `discarded: false` when its artifacts are gone already (or, Jenkins, still there for its build
   * discarder to drop: the backend discards by itself there).
   */
  discard(job: number, build: number): Promise<{ discarded: boolean }>;

  status(job: number, build: number): Promise<BuildStatus>;
  /**
   * build.wait: the build's status as soon as its state is no longer `known`, or after `seconds` (whatever it is
   * then), or once `signal` aborts (the caller went away). A read, like status(): it changes nothing and may be
   * repeated or abandoned at any time. not_found as for status(). Each backend bounds its own work while it waits.
   */
  wait(job: number, build: number, known: BuildState, seconds: number, signal?: AbortSignal): Promise<BuildStatus>;
  /** Log bytes from `offset`, at most MAX_LOG_CHUNK; `more` while the build can still write. */
  log(job: number, build: number, offset: number): Promise<LogChunk>;
  /** The artifact's bytes from `offset`. not_found if the build has no such artifact (yet). */
  artifact(job: number, build: number, name: ArtifactName, offset: number): Promise<Readable>;

  listJobs(): Promise<JobInfo[]>;
  listQueue(): Promise<QueueItem[]>;

  /** How the engine is, for `ping` (the admin's health page): its version, reachability, the Docker engine. Never throws. */
  describe(): Promise<BackendHealth>;
}

export type BackendHealth = Omit<PingReply, 'protocol' | 'backend'>;
