/**
 * The web <-> glue contract (protocol version 1).
 *
 * A request is one SSH exec command line: `<verb> <arg> <arg> ...`, single spaces, every argument drawn from a
 * closed pattern (numeric ids, fixed enums, idempotency keys). No argument can carry free text, a path, a shell
 * metacharacter or a leading dash. The only structured payload, the job spec of `job.put`, travels as JSON on stdin
 * and is validated by `jobSpecSchema`.
 *
 * A reply is one JSON document on stdout and exit status 0, except `build.artifact`, which streams the artifact's
 * raw bytes. A failure is `{"error":{"code","message"}}` on stderr with a non-zero exit status (see EXIT_CODES).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { KilnError, type ErrorCode } from '../shared/errors.js';
import { progressEventSchema } from './sdk-output.js';

export const PROTOCOL_VERSION = 1;

/** Longest command line the glue accepts, in bytes. */
export const MAX_COMMAND_BYTES = 256;
/** Largest job spec accepted on stdin (Dockerfile + base64 build context + metadata). */
export const MAX_STDIN_BYTES = 24 * 1024 * 1024;
/** Most log bytes returned by one build.log call. */
export const MAX_LOG_CHUNK = 256 * 1024;
/** The longest a build.wait may be held, in seconds (the caller's own deadline is what it asks, up to this). */
export const MAX_WAIT_SECONDS = 60;
/**
 * The most build.waits a caller holds at once on one SSH connection: each is a session, and OpenSSH allows 10 per
 * connection by default (MaxSessions; the built-in server 16).
 */
export const MAX_HELD_WAITS = 10;

/** Length of the longest prefix of `buf` that ends on a UTF-8 character boundary (all of it at end of file): log chunks never split a character. */
export function utf8Boundary(buf: Buffer, atEof: boolean): number {
  if (atEof) return buf.length;
  const i = buf.length;
  // Walk back over at most 3 continuation bytes to the lead byte and check whether its sequence is complete.
  for (let back = 1; back <= 4 && i - back >= 0; back++) {
    const b = buf[i - back]!;
    if ((b & 0xc0) === 0x80) continue;
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? i - back : i;
  }
  return i;
}

export const ARTIFACT_NAMES = [
  'image.raw',
  'image.qcow2',
  'image.iso',
  'rootfs.tar.zst',
  'result.json',
  'manifest.json',
  'sbom.spdx.json',
  'provenance.json',
  'SHA256SUMS',
  'SHA256SUMS.sig',
  'build.log',
] as const;
export type ArtifactName = (typeof ARTIFACT_NAMES)[number];

/**
 * A release (src/core/releases.ts) is a directory of a build's products plus `release.json`, its provenance, of
 * type RELEASE_TYPE, and SHA256SUMS over all of them with the web's signature: what the web makes and `kiln verify`
 * checks (src/sdk/verify.ts).
 */
export const RELEASE_JSON = 'release.json';
/**
 * A release name (`v1.2`, `2026-06-rc1`): 1-64 of letters, digits, `.`, `_`, `-`, not `.` or `..` and not starting
 * with `-` (it would read as an option on a command line). Never a path: the release store names directories by id.
 */
export const RELEASE_NAME_RE = /^(?!-)(?!\.{1,2}$)[A-Za-z0-9._-]{1,64}$/;
export const RELEASE_TYPE = 'https://kiln.dev/release/v1';

/**
 * What the SDK writes next to its artifacts when it fails with an internal error: the detail (message, stack) for
 * the operator, under the reference id that result.json shows the user. Not an artifact: never archived or served.
 */
export const SDK_INTERNAL_ERROR_FILE = 'internal-error.log';

export const SCHEDULES = ['off', 'daily', 'weekly'] as const;
export type Schedule = (typeof SCHEDULES)[number];

export const FORMATS = ['raw', 'qcow2', 'iso', 'tar'] as const;
export type Format = (typeof FORMATS)[number];

/** The firmwares a boot test can use (`kiln sdk build --boot-firmware`). */
export const FIRMWARES = ['bios', 'uefi'] as const;
export type Firmware = (typeof FIRMWARES)[number];

/** Build arguments: names as Docker accepts them, values without control characters. */
export const BUILD_ARG_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
// eslint-disable-next-line no-control-regex
export const BUILD_ARG_VALUE_RE = /^[^\x00-\x1f\x7f]*$/;
export const MAX_BUILD_ARG_VALUE = 1024;
/** Most build arguments one job carries. */
export const MAX_BUILD_ARGS = 50;

/** A Kiln job is identified by the web's Dockerfile id; the glue derives the backend's job name from it. */
const jobId = z
  .string()
  .regex(/^[1-9][0-9]{0,11}$/, 'job id must be a positive integer')
  .transform(Number);
const buildNo = z
  .string()
  .regex(/^[1-9][0-9]{0,11}$/, 'build number must be a positive integer')
  .transform(Number);
const offset = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,14})$/, 'offset must be a non-negative integer')
  .transform(Number);
// Starts alphanumeric like every token (a leading '-' could read as an option to some program downstream).
/** An idempotency key: what the web makes per form, what the glue accepts, what travels to Jenkins as a parameter. */
export const IDEMPOTENCY_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$/;
export const SHA256_RE = /^[0-9a-f]{64}$/;
const idemKey = z
  .string()
  .regex(IDEMPOTENCY_KEY_RE, 'idempotency key must be 8-64 of [A-Za-z0-9_-], starting with a letter or digit');
const artifact = z.enum(ARTIFACT_NAMES);
const sha256 = z.string().regex(SHA256_RE, 'sha256 must be 64 lower-case hex digits');
const waitSeconds = z
  .string()
  .regex(/^[1-9][0-9]?$/, `seconds must be 1-${MAX_WAIT_SECONDS}`)
  .transform(Number)
  .refine((n) => n <= MAX_WAIT_SECONDS, `seconds must be 1-${MAX_WAIT_SECONDS}`);

/**
 * `lost`: the build was cut off by a fault of Kiln or its machine (a restart of the glue or of Jenkins, a lost
 * agent, an SDK killed from outside), not by its Dockerfile. Final for the backend; the web requeues it once.
 */
export const BUILD_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'lost'] as const;
export type BuildState = (typeof BUILD_STATES)[number];

/** Each verb's positional arguments, in order. Optional trailing arguments are marked with `.optional()`. */
export const VERBS = {
  ping: z.tuple([]),
  'job.put': z.tuple([jobId]),
  'job.enable': z.tuple([jobId]),
  'job.disable': z.tuple([jobId]),
  'job.delete': z.tuple([jobId]),
  /**
   * The optional sha256 is the spec's digest (specSha256) of what the caller put: the glue builds exactly that
   * Dockerfile and context, or refuses with `conflict` when the job now holds another (a concurrent job.put).
   */
  'job.build': z.tuple([jobId, idemKey, sha256.optional()]),
  'build.status': z.tuple([jobId, buildNo]),
  /**
   * A held build.status: answered as soon as the build's state is no longer the given one (the state the caller
   * last saw), else after the given seconds, with the status it has then. A read: idempotent, safe to repeat or to
   * abandon (the caller closing the channel ends it).
   */
  'build.wait': z.tuple([jobId, buildNo, z.enum(BUILD_STATES), waitSeconds]),
  'build.log': z.tuple([jobId, buildNo, offset]),
  'build.artifact': z.tuple([jobId, buildNo, artifact, offset.optional()]),
  'build.cancel': z.tuple([jobId, buildNo]),
  /** Withdraws whatever a job.build with this key started: a queued trigger, or the build it became. */
  'build.withdraw': z.tuple([jobId, idemKey]),
  /**
   * Keeps a build from the backend's own discarding (`on`: a user pinned it; Jenkins' "keep this build forever"), or
   * lets it go again (`off`). Idempotent: asking for the state it is in succeeds.
   */
  'build.keep': z.tuple([jobId, buildNo, z.enum(['on', 'off'])]),
  /**
   * Drops a finished build's artifacts (retention; its log and record stay). A kept build or one still running is
   * `conflict`; one whose artifacts are gone already answers `discarded: false`. Jenkins discards them itself, by
   * the job's build discarder (the same rule): there the answer says whether they are gone yet.
   */
  'build.discard': z.tuple([jobId, buildNo]),
  /** The job as the backend has it now (for showing it, and noticing changes made behind Kiln's back). */
  'job.get': z.tuple([jobId]),
  /** The job's most recent builds with what started each (a timer, or a job.build), so timer builds can be found. */
  'job.builds': z.tuple([jobId]),
  'jobs.list': z.tuple([]),
  'queue.list': z.tuple([]),
} as const;

export type Verb = keyof typeof VERBS;
export type VerbArgs<V extends Verb> = z.output<(typeof VERBS)[V]>;
export type Request = { [V in Verb]: { verb: V; args: VerbArgs<V> } }[Verb];

/** Verbs that read a job spec from stdin. */
export const STDIN_VERBS: ReadonlySet<Verb> = new Set<Verb>(['job.put']);
/**
 * Verbs a glue may hold before it answers. Their caller keeps its input open while it waits (they take no body), and
 * ends it, or closes the channel, to abandon one: under OpenSSH the end of its input is all a `kiln glue` process
 * hears of a caller that went away (sshd closes the process's stdin, nothing more), so the request ends there and then
 * instead of at its deadline, with its process, its watch and its session.
 */
export const HELD_VERBS: ReadonlySet<Verb> = new Set<Verb>(['build.wait']);

const TOKEN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Parses one command line into a typed request, or throws KilnError('invalid_input'). Accepts bytes or a string;
 * bytes must be valid UTF-8. Nothing here executes anything: the result is plain data for the dispatcher.
 */
export function parseCommand(line: string | Buffer): Request {
  let text: string;
  if (Buffer.isBuffer(line)) {
    if (line.length > MAX_COMMAND_BYTES) throw bad('command too long');
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(line);
    } catch {
      throw bad('command is not valid UTF-8');
    }
  } else {
    text = line;
    if (Buffer.byteLength(text, 'utf8') > MAX_COMMAND_BYTES) throw bad('command too long');
  }
  if (text.length === 0) throw bad('empty command');
  const tokens = text.split(' ');
  for (const t of tokens) {
    if (!TOKEN.test(t))
      throw bad(
        'arguments may contain only letters, digits, ".", "_" and "-", separated by single spaces, and may not start with "-"',
      );
  }
  const [verb, ...rest] = tokens as [string, ...string[]];
  if (!Object.hasOwn(VERBS, verb)) throw bad(`unknown verb "${verb}"`);
  const schema = VERBS[verb as Verb] as z.ZodType;
  const maxArgs = (schema as unknown as z.ZodTuple).def.items.length;
  if (rest.length > maxArgs) throw bad(`${verb}: too many arguments`);
  const parsed = schema.safeParse(rest);
  if (!parsed.success) throw bad(`${verb}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  return { verb, args: parsed.data } as Request;
}

/** Builds the command line for a request (the web's side). Round-trips through parseCommand. */
export function formatCommand(verb: Verb, ...args: Array<string | number>): string {
  const line = [verb, ...args.map(String)].join(' ');
  parseCommand(line); // the web never sends what the glue would refuse
  return line;
}

function bad(message: string): KilnError {
  return new KilnError('invalid_input', message);
}

// ---------------------------------------------------------------------------------------------------------------
// Payloads

/**
 * An image name as a FROM writes it, without a digest: what a base-name mapping holds on either side. No `=` (the
 * SDK's `--base-name NAME=BASE` and the Jenkins parameter's lines split on it), no space, no leading `-`.
 */
export const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$/;
/** Most base-name mappings one site may hold (and a job spec carry). */
export const MAX_BASE_NAMES = 200;
const imageName = z.string().regex(IMAGE_NAME_RE, 'an image name such as debian:12 (letters, digits, . _ / : -)');

/** A git commit id: SHA-1 (40 hex digits) or SHA-256 (64) object names. */
export const GIT_COMMIT_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
// eslint-disable-next-line no-control-regex
const NO_CONTROLS = /^[^\x00-\x20\x7f]*$/;
/** A path inside a repository: relative, `/`-separated, no `.`/`..` components, no control characters. */
// eslint-disable-next-line no-control-regex
const REPO_PATH_RE = /^(?!\/)(?!.*\/\/)(?!.*\/$)(?!(?:.*\/)?\.\.?(?:\/|$))[^\x00-\x1f\x7f\\]*$/;

/**
 * Where a version of a Dockerfile came from when Kiln fetched it from a git repository (src/core/git): the
 * repository URL (never with credentials), the ref asked for, the commit it was at, the Dockerfile's path and the
 * context directory ('' = the repository's root). Travels in the job spec so the SDK names it in the provenance.
 */
export const gitSourceSchema = z
  .object({
    type: z.literal('git'),
    url: z.string().min(1).max(2048).regex(NO_CONTROLS, 'a URL without spaces or control characters'),
    ref: z.string().min(1).max(255).regex(NO_CONTROLS),
    commit: z.string().regex(GIT_COMMIT_RE, 'a commit id (40 or 64 hex digits)'),
    path: z.string().min(1).max(1024).regex(REPO_PATH_RE, 'a relative path inside the repository'),
    context: z.string().max(1024).regex(REPO_PATH_RE, 'a relative directory inside the repository').or(z.literal('')),
  })
  .strict();
export type GitSource = z.output<typeof gitSourceSchema>;

/** The one text of a source that digests cover (fixed order, so the web and every backend agree). */
export const canonicalSource = (s: GitSource): string =>
  JSON.stringify([s.type, s.url, s.ref, s.commit, s.path, s.context]);

/** What `job.put` carries on stdin. The glue renders backend config from it; nothing here is trusted. */
export const jobSpecSchema = z
  .object({
    /** Display text only: escaped wherever it is written (XML description, logs). */
    owner: z.string().min(1).max(64),
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/),
    /** The Dockerfile text, UTF-8, at most 64 KiB. */
    dockerfile: z
      .string()
      .min(1)
      .max(64 * 1024),
    /** Optional build context: a base64 tar of extra files (COPY/ADD sources). */
    contextTarBase64: z
      .string()
      .regex(/^[A-Za-z0-9+/]*={0,2}$/)
      .max(MAX_STDIN_BYTES)
      .optional(),
    formats: z.array(z.enum(FORMATS)).min(1).max(FORMATS.length).default(['raw']),
    schedule: z.enum(SCHEDULES).default('off'),
    /** The hour (UTC) a daily or weekly build starts in; absent: the backend picks (older specs). */
    scheduleHour: z.number().int().min(0).max(23).optional(),
    /** The day of a weekly build, 0 = Sunday ... 6 = Saturday (UTC); absent: Monday for the local backend. */
    scheduleWeekday: z.number().int().min(0).max(6).optional(),
    enabled: z.boolean().default(true),
    buildArgs: z
      .record(z.string().regex(BUILD_ARG_NAME_RE), z.string().max(MAX_BUILD_ARG_VALUE).regex(BUILD_ARG_VALUE_RE))
      .refine((r) => Object.keys(r).length <= MAX_BUILD_ARGS, `at most ${MAX_BUILD_ARGS} build arguments`)
      .default({}),
    /** The firmwares the boot test uses; absent: the SDK's default. */
    bootFirmware: z.array(z.enum(FIRMWARES)).min(1).max(FIRMWARES.length).optional(),
    /**
     * The site admin's names for allowed bases (`corp/debian:12` -> `debian:bookworm`). A hint, never a permission:
     * the SDK checks each again against its own sdk.bases and refuses a FROM whose mapping leads elsewhere.
     */
    baseNames: z
      .array(z.object({ name: imageName, base: imageName }).strict())
      .max(MAX_BASE_NAMES)
      .optional(),
    /** Where the Dockerfile and context came from, when Kiln fetched them from git (named in the provenance). */
    source: gitSourceSchema.optional(),
    /**
     * The site's retention (config `retention`): the builds whose artifacts are kept, newest `keepBuilds` and those
     * of the last `keepDays` days (0: no such limit). A backend that discards by itself (Jenkins' build discarder)
     * is set up with it; the local backend discards only when told (`build.discard`).
     */
    retention: z
      .object({
        keepBuilds: z.number().int().min(0).max(1_000_000),
        keepDays: z.number().int().min(0).max(100_000),
      })
      .strict()
      .optional(),
  })
  .strict();
export type JobSpec = z.output<typeof jobSpecSchema>;
export type JobSpecInput = z.input<typeof jobSpecSchema>;

const sha256Hex = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * The digest that names one spec's build inputs: the Dockerfile's sha256 (which is what the web stores for a
 * version), or, with a build context, the sha256 of `<dockerfile sha256>\n<context tar sha256>\n`; with a git
 * source, the sha256 of `<dockerfile sha256>\n<context tar sha256 or nothing>\n<canonicalSource>\n`, so two
 * commits with the same files are two inputs (the provenance names the commit). The web sends it with job.build;
 * each backend computes it again from what it holds for the job.
 */
export function specSha256(dockerfile: string | Buffer, contextTar?: Buffer | null, source?: GitSource): string {
  return specDigest(sha256Hex(dockerfile), contextTar && contextTar.length > 0 ? sha256Hex(contextTar) : null, source);
}

/** specSha256 from the digests alone (what the web stores for a version). */
export function specDigest(dockerfileSha: string, contextSha: string | null, source?: GitSource | null): string {
  if (source) return sha256Hex(`${dockerfileSha}\n${contextSha ?? ''}\n${canonicalSource(source)}\n`);
  return contextSha ? sha256Hex(`${dockerfileSha}\n${contextSha}\n`) : dockerfileSha;
}

export const artifactInfoSchema = z.object({ name: z.enum(ARTIFACT_NAMES), size: z.number().int().nonnegative() });
export type ArtifactInfo = z.infer<typeof artifactInfoSchema>;

export const buildStatusSchema = z.object({
  job: z.number().int(),
  build: z.number().int(),
  state: z.enum(BUILD_STATES),
  /** Why a build failed or was cancelled, in words a user can act on. */
  reason: z.string().optional(),
  queuedAt: z.string().optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  /** Latest SDK progress event, when running. */
  progress: progressEventSchema.optional(),
  artifacts: z.array(artifactInfoSchema).default([]),
});
export type BuildStatus = z.infer<typeof buildStatusSchema>;

export const logChunkSchema = z.object({
  text: z.string(),
  offset: z.number().int(),
  nextOffset: z.number().int(),
  /** True while the build may still append to its log. */
  more: z.boolean(),
});
export type LogChunk = z.infer<typeof logChunkSchema>;

export const jobInfoSchema = z.object({
  /** Present for jobs Kiln manages; unmanaged jobs have only a backend name. */
  job: z.number().int().optional(),
  backendName: z.string(),
  managed: z.boolean(),
  enabled: z.boolean(),
  schedule: z.enum(SCHEDULES).optional(),
  lastBuild: z.number().int().optional(),
});
export type JobInfo = z.infer<typeof jobInfoSchema>;

/**
 * A job as the backend holds it (job.get). `schedule: 'other'` is a timer Kiln did not write (someone edited the
 * job in Jenkins), shown as its text in `timerSpec`. `specSha256` names the Dockerfile and context the job holds
 * (protocol.specSha256), so the web can tell whether a timer build would build what it last saved.
 */
export const jobViewSchema = z.object({
  job: z.number().int(),
  enabled: z.boolean(),
  schedule: z.enum([...SCHEDULES, 'other']),
  scheduleHour: z.number().int().min(0).max(23).optional(),
  scheduleWeekday: z.number().int().min(0).max(6).optional(),
  timerSpec: z.string().max(500).optional(),
  formats: z.array(z.string().max(16)).max(16),
  buildArgs: z.record(z.string().max(128), z.string().max(4096)),
  bootFirmware: z.array(z.string().max(16)).max(4).optional(),
  specSha256: z.string().regex(SHA256_RE).optional(),
});
export type JobView = z.infer<typeof jobViewSchema>;

/** What started a backend build: its timer, a job.build (with its key), or something else (a person in Jenkins). */
export const JOB_BUILD_TRIGGERS = ['schedule', 'api', 'other'] as const;
export const jobBuildSchema = z.object({
  build: z.number().int(),
  trigger: z.enum(JOB_BUILD_TRIGGERS),
  key: z.string().regex(IDEMPOTENCY_KEY_RE).optional(),
  queuedAt: z.string().optional(),
});
export type JobBuild = z.infer<typeof jobBuildSchema>;
/** Most builds job.builds reports (newest first). */
export const JOB_BUILDS_DEPTH = 25;

export const queueItemSchema = z.object({
  id: z.number().int(),
  job: z.number().int().optional(),
  backendName: z.string(),
  why: z.string().optional(),
  since: z.string().optional(),
});
export type QueueItem = z.infer<typeof queueItemSchema>;

/**
 * ping: the protocol and the backend's kind; since the admin console, also how the backend is (all optional, so
 * either side may be older): its version (Jenkins' X-Jenkins header; Kiln's for the local backend), whether the
 * glue reached it, and the Docker engine the builds use when the glue can see it (the local backend's).
 */
export const pingReplySchema = z.object({
  protocol: z.literal(PROTOCOL_VERSION),
  backend: z.string(),
  version: z.string().max(100).optional(),
  backendReachable: z.boolean().optional(),
  backendError: z.string().max(1000).optional(),
  docker: z
    .object({
      reachable: z.boolean(),
      version: z.string().max(100).optional(),
      apiVersion: z.string().max(100).optional(),
      error: z.string().max(1000).optional(),
    })
    .optional(),
});
export type PingReply = z.infer<typeof pingReplySchema>;

/** Reply schema per verb (build.artifact replies with raw bytes and has none). */
export const REPLIES = {
  ping: pingReplySchema,
  'job.put': z.object({ job: z.number().int(), created: z.boolean() }),
  'job.enable': z.object({ job: z.number().int(), enabled: z.literal(true) }),
  'job.disable': z.object({ job: z.number().int(), enabled: z.literal(false) }),
  'job.delete': z.object({ job: z.number().int(), deleted: z.boolean() }),
  'job.build': z.object({ job: z.number().int(), build: z.number().int(), created: z.boolean() }),
  'build.status': buildStatusSchema,
  'build.wait': buildStatusSchema,
  'build.log': logChunkSchema,
  'build.cancel': z.object({ job: z.number().int(), build: z.number().int(), state: z.enum(BUILD_STATES) }),
  'build.withdraw': z.object({
    job: z.number().int(),
    withdrawn: z.boolean(),
    build: z.number().int().optional(),
    state: z.enum(BUILD_STATES).optional(),
  }),
  'build.keep': z.object({ job: z.number().int(), build: z.number().int(), kept: z.boolean() }),
  'build.discard': z.object({ job: z.number().int(), build: z.number().int(), discarded: z.boolean() }),
  'job.get': jobViewSchema,
  'job.builds': z.object({ job: z.number().int(), builds: z.array(jobBuildSchema).max(JOB_BUILDS_DEPTH) }),
  'jobs.list': z.object({ jobs: z.array(jobInfoSchema) }),
  'queue.list': z.object({ items: z.array(queueItemSchema) }),
} as const;
export type Reply<V extends keyof typeof REPLIES> = z.infer<(typeof REPLIES)[V]>;

/** Exit status per error code, so a caller can map a failure back without parsing text. */
export const EXIT_CODES: Partial<Record<ErrorCode, number>> & { default: number } = {
  default: 1,
  invalid_input: 2,
  bad_request: 2,
  not_found: 3,
  conflict: 4,
  backend_unavailable: 5,
  timeout: 6,
};

export const errorReplySchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

export * from './sdk-output.js';

/** Deterministic backend job name for a Kiln job id: no user text, nothing a Jenkins path could misread. */
export const backendJobName = (job: number) => `kiln-job-${job}`;
export const jobIdFromBackendName = (name: string): number | undefined => {
  const m = /^kiln-job-([1-9][0-9]{0,11})$/.exec(name);
  return m ? Number(m[1]) : undefined;
};
