/**
 * The REST API's request and response shapes as zod schemas: requests are validated with them at the door, and the
 * OpenAPI document is generated from the very same objects (openapi.ts), so the two cannot disagree. Enums and
 * patterns come from the protocol and the core's rules; the use cases check the values again with their own
 * commands (one message per rule, whatever the door).
 */
import { z } from 'zod';
import { RELEASE_STATES, WEB_BUILD_STATES } from '../../db/index.js';
import {
  ARTIFACT_NAMES,
  BUILD_ARG_NAME_RE,
  FIRMWARES,
  FORMATS,
  MAX_BUILD_ARGS,
  MAX_BUILD_ARG_VALUE,
  RELEASE_NAME_RE,
  SCHEDULES,
} from '../../protocol/index.js';
import { SCOPES } from '../../core/index.js';
import { ERROR_CODES } from '../../shared/errors.js';

const DOCKERFILE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const NAME_RULE =
  'Name must be 1-63 characters: lowercase letters, digits, ".", "_" or "-", starting with a letter or digit.';

// ------------------------------------------------------------------------------------------------- parameters

export const IdParams = z.object({
  id: z
    .string()
    .regex(/^[1-9][0-9]{0,11}$/)
    .meta({ description: 'A numeric id.' }),
});
export const NameParams = z.object({
  name: z.string().regex(DOCKERFILE_NAME_RE, NAME_RULE).meta({ description: 'A Dockerfile of yours, by name.' }),
});
export const ArtifactParams = IdParams.extend({
  name: z.enum(ARTIFACT_NAMES).meta({ description: "An artifact's name, as the build's artifact list has it." }),
});

const Cursor = z
  .string()
  .max(512)
  .meta({ description: "The previous page's `nextCursor`, unchanged (opaque). Left out: the first page." });
const Limit = z.coerce.number().int().min(1).max(100).default(25).meta({ description: 'Items per page (1-100).' });
const StateFilter = z
  .enum([...WEB_BUILD_STATES, 'active'])
  .meta({ description: 'Only builds in this state; `active`: not finished (requested, queued, running, verifying).' });
const Offset = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,14})$/, 'offset must be a byte offset (a whole number)')
  .meta({
    description:
      "A position in the build's log: a previous answer's `nextOffset`, or an event's id (the byte offset into the current attempt's log; a build the backend lost and dispatched again starts a new log, and a position from before that is read from the new log's start, after a line saying so). 0 is the start.",
  });

export const PageQuery = z.object({ cursor: Cursor.optional(), limit: Limit });
export const BuildListQuery = PageQuery.extend({
  state: StateFilter.optional(),
  dockerfile: z
    .string()
    .regex(DOCKERFILE_NAME_RE, NAME_RULE)
    .optional()
    .meta({ description: 'A Dockerfile of yours, by name.' }),
});
/** A release name as the protocol defines it (RELEASE_NAME_RE; the core checks it again). */
const ReleaseNameField = z
  .string()
  .regex(
    RELEASE_NAME_RE,
    'a release name: 1-64 letters, digits, ".", "_" or "-", not "." or "..", not starting with "-"',
  )
  .meta({ description: 'A release name such as `v1.2`: unique per Dockerfile, never reused.' });
export const ReleaseFileParams = IdParams.extend({
  name: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/)
    .meta({ description: "A file's name, as the release lists it (release.json, SHA256SUMS, the images...)." }),
});
export const ReleaseListQuery = z.object({
  dockerfile: z
    .string()
    .regex(DOCKERFILE_NAME_RE, NAME_RULE)
    .optional()
    .meta({ description: 'Only the releases of this Dockerfile of yours, by name.' }),
  name: ReleaseNameField.optional().meta({ description: 'Only releases of this name (one per Dockerfile).' }),
});
export const WaitQuery = z.object({
  wait: z
    .string()
    .regex(/^[0-9]{1,4}(s|m)?$/, 'wait is a number of seconds, such as 60 or 60s (or minutes: 2m)')
    .optional()
    .meta({
      description:
        'Long poll: answer once the state is not `seen` (or the build is finished), or after this long (cut to `api.maxWaitSeconds`).',
    }),
  seen: z
    .enum(WEB_BUILD_STATES)
    .optional()
    .meta({ description: 'The state the client last saw (default: the state when the request arrives).' }),
});
export const LogQuery = z.object({ offset: Offset.optional() });
export const EventsQuery = z.object({
  from: Offset.optional().meta({
    description: 'Start after this byte offset (a reconnect sends Last-Event-ID instead).',
  }),
});

export const IdempotencyHeader = z.object({
  'Idempotency-Key': z.string().max(257).optional().meta({
    description:
      'Names this request (1-255 visible ASCII characters, e.g. the pipeline and job id): sent again, the same build is answered; with another Dockerfile, 422 `idempotency_key_reused`. Keys are per user. Left out, every request is a new build.',
  }),
});
export const RangeHeader = z.object({
  Range: z.string().optional().meta({ description: 'One byte range, `bytes=START-` or `bytes=START-END` (206).' }),
});
export const LastEventHeader = z.object({
  'Last-Event-ID': Offset.optional().meta({ description: 'Resume after this event (what EventSource sends).' }),
});

// ----------------------------------------------------------------------------------------------------- bodies

export const Settings = z
  .object({
    formats: z.array(z.enum(FORMATS)).min(1).optional().meta({ description: 'Output formats (default: the site’s).' }),
    buildArgs: z
      .record(z.string().regex(BUILD_ARG_NAME_RE), z.string().max(MAX_BUILD_ARG_VALUE))
      .optional()
      .meta({ description: `Build arguments, NAME: value (at most ${MAX_BUILD_ARGS}); replaces the saved ones.` }),
    bootFirmware: z
      .array(z.enum(FIRMWARES))
      .optional()
      .meta({ description: 'Firmwares the boot test uses; [] for the default.' }),
    schedule: z.enum(SCHEDULES).optional(),
    hour: z.number().int().min(0).max(23).optional().meta({ description: 'The hour (UTC) of a scheduled build.' }),
    weekday: z.number().int().min(0).max(6).optional().meta({ description: 'The day of a weekly build (0 = Sunday).' }),
    enabled: z.boolean().optional().meta({ description: 'Off: Build is refused and the schedule does not run.' }),
  })
  .strict()
  .meta({ description: 'Job settings; fields left out keep their saved value.' });

const Binary = (what: string) =>
  z.custom<Buffer | string>((v) => Buffer.isBuffer(v) || typeof v === 'string', { message: `Send ${what}.` });
export const PutDockerfileBody = z.object({
  dockerfile: Binary('the Dockerfile as the `dockerfile` part').meta({
    type: 'string',
    format: 'binary',
    description: 'The Dockerfile (UTF-8 text).',
  }),
  context: Binary('the build context as a file part').optional().meta({
    type: 'string',
    format: 'binary',
    description:
      'The build context: a .tar or .tar.gz (regular files, directories and symlinks; at most 16 MiB of files and 2,000 entries). Left out: the current context is kept.',
  }),
  settings: Settings.optional().meta({ description: 'Job settings as a JSON part (Content-Type application/json).' }),
  removeContext: z
    .enum(['true', 'false'])
    .optional()
    .meta({ description: '`true` drops the current build context (not with `context`).' }),
});

export const TriggerBody = z
  .object({
    dockerfile: z
      .string()
      .regex(DOCKERFILE_NAME_RE, NAME_RULE)
      .meta({ description: 'A Dockerfile of yours, by name.' }),
  })
  .strict();
export const WebhookBody = z
  .object({
    url: z
      .string()
      .max(2048)
      .meta({ description: 'http:// or https://, no user or password; its host must resolve to public addresses.' }),
  })
  .strict();
export const PromoteBody = z.object({ name: ReleaseNameField }).strict();
export const NewUserBody = z.object({ username: z.string(), role: z.enum(['user', 'admin']).default('user') }).strict();
export const ConfirmBody = z
  .object({ confirm: z.string().optional().meta({ description: "Deleting: the job's name, kiln-job-<id>." }) })
  .strict();

// -------------------------------------------------------------------------------------------------- responses

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.enum(Object.keys(ERROR_CODES) as [keyof typeof ERROR_CODES, ...(keyof typeof ERROR_CODES)[]]),
      message: z.string().meta({ description: 'For people; may change. Programs use `code`.' }),
      details: z
        .object({
          findings: z.array(z.object({ line: z.number().int(), message: z.string() })).optional(),
          issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
          retryAfterSeconds: z.number().int().optional(),
          allow: z.array(z.string()).optional(),
        })
        .optional(),
    }),
  })
  .meta({ description: 'Every error under /api/v1.' });

export const User = z.object({
  id: z.number().int(),
  username: z.string(),
  role: z.enum(['user', 'admin']),
  disabled: z.boolean(),
  approved: z.boolean(),
  createdAt: z.string(),
});
export const Me = z.object({
  user: z.object({ id: z.number().int(), username: z.string(), role: z.enum(['user', 'admin']) }),
  token: z.object({
    id: z.number().int(),
    scopes: z.array(z.enum(SCOPES)),
  }),
});

const SettingsOut = z.object({
  formats: z.array(z.enum(FORMATS)),
  buildArgs: z.record(z.string(), z.string()),
  bootFirmware: z.array(z.enum(FIRMWARES)).nullable(),
  schedule: z.enum(SCHEDULES),
  hour: z.number().int(),
  weekday: z.number().int(),
  enabled: z.boolean(),
});
export const DockerfileSummary = z.object({
  id: z.number().int(),
  name: z.string(),
  owner: z.string(),
  size: z.number().int().nullable(),
  builds: z.number().int(),
  updatedAt: z.string(),
});
export const Dockerfile = z.object({
  id: z.number().int(),
  name: z.string(),
  content: z.string().nullable().meta({ description: 'null while a Dockerfile from git waits for its first fetch.' }),
  sha256: z.string().nullable(),
  size: z.number().int().nullable(),
  context: z
    .object({
      sha256: z.string(),
      size: z.number().int(),
      entries: z.array(
        z.object({
          name: z.string(),
          type: z.enum(['file', 'directory', 'symlink']),
          size: z.number().int(),
          linkname: z.string().optional(),
        }),
      ),
    })
    .nullable(),
  git: z
    .object({
      url: z.string(),
      ref: z.string(),
      path: z.string(),
      context: z.string(),
      follow: z.boolean(),
      commit: z.string().nullable().meta({ description: "The commit of the current version's fetch." }),
      fetchedAt: z.string().nullable(),
      fetchError: z.string().nullable(),
      pending: z.boolean(),
    })
    .nullable()
    .meta({ description: 'Where the Dockerfile comes from when it comes from git (set on its page).' }),
  deletionPending: z.boolean(),
  settings: SettingsOut,
});
export const DockerfileAnswer = z.object({ dockerfile: Dockerfile, created: z.boolean().optional() });
export const DockerfilePage = z.object({ dockerfiles: z.array(DockerfileSummary), nextCursor: z.string().nullable() });

export const Artifact = z.object({
  name: z.enum(ARTIFACT_NAMES),
  size: z.number().int(),
  sha256: z.string().nullable().meta({ description: "Kiln's own digest once the build is verified (succeeded)." }),
  url: z.string(),
});
export const Build = z.object({
  id: z.number().int(),
  dockerfile: z.object({ id: z.number().int(), name: z.string() }),
  state: z.enum(WEB_BUILD_STATES),
  final: z.boolean(),
  trigger: z.enum(['manual', 'schedule', 'api']),
  reason: z.string().nullable().meta({ description: 'Why it failed or was cancelled.' }),
  progress: z.object({ percent: z.number(), label: z.string() }),
  artifacts: z.array(Artifact).meta({ description: 'What can be downloaded: none once retention dropped them.' }),
  pinned: z.boolean().meta({ description: 'Kept from retention (POST /builds/{id}/pin).' }),
  artifactsExpiredAt: z
    .string()
    .nullable()
    .meta({ description: "When retention discarded the build's artifacts (they are no longer stored), or null." }),
  imageSha256: z.string().nullable(),
  requeues: z.number().int(),
  requeueReason: z.string().nullable(),
  requestedAt: z.string(),
  queuedAt: z.string().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
const QueuePlace = z.object({
  position: z.number().int(),
  waiting: z.number().int(),
  etaSeconds: z.number().optional(),
  typicalSeconds: z.number().optional(),
});
export const BuildAnswer = z.object({
  build: Build.extend({ queue: QueuePlace.nullable().meta({ description: 'A waiting build’s place.' }) }),
});
export const TriggerAnswer = z.object({ build: Build, created: z.boolean() });
export const BuildPage = z.object({
  builds: z.array(Build.extend({ owner: z.string(), durationSeconds: z.number().nullable() })),
  nextCursor: z.string().nullable(),
});
export const ArtifactList = z.object({
  artifacts: z.array(Artifact),
  signingKey: z
    .string()
    .meta({ description: 'Where the key that signs SHA256SUMS is published (`kiln verify --key-url`).' }),
});
export const Release = z.object({
  id: z.number().int(),
  name: z.string(),
  state: z
    .enum(RELEASE_STATES)
    .meta({ description: '`pending` while Kiln copies and signs its files; `ready`; `failed` (see `reason`).' }),
  reason: z.string().nullable(),
  dockerfile: z.object({ id: z.number().int(), name: z.string() }),
  owner: z.string(),
  build: z.number().int().meta({ description: 'The build it was promoted from.' }),
  createdAt: z.string(),
  madeAt: z.string().nullable(),
  files: z
    .array(z.object({ name: z.string(), size: z.number().int(), sha256: z.string(), url: z.string() }))
    .meta({ description: 'Once ready: the files, release.json, SHA256SUMS and SHA256SUMS.sig among them.' }),
  signingKey: z.string().meta({ description: 'Where the key that signed SHA256SUMS is published (`kiln verify`).' }),
});
export const ReleaseAnswer = z.object({ release: Release, created: z.boolean().optional() });
export const ReleaseList = z.object({ releases: z.array(Release) });
export const LogChunk = z.object({
  text: z.string(),
  offset: z.number().int(),
  nextOffset: z.number().int(),
  more: z.boolean().meta({ description: 'The log may grow: ask again from nextOffset.' }),
});
export const Report = z.object({
  bootTests: z.array(
    z.object({
      index: z.number().int(),
      format: z.string(),
      artifact: z.string(),
      firmware: z.enum(FIRMWARES),
      seconds: z.number(),
      passed: z.boolean(),
      reason: z.string().optional(),
      hasSerialLog: z.boolean(),
    }),
  ),
  stages: z.array(z.object({ name: z.string(), seconds: z.number() })),
  failure: z
    .object({
      stage: z.string().optional(),
      line: z.number().int().optional().meta({ description: 'The Dockerfile line that failed.' }),
      instruction: z.string().optional(),
      message: z.string(),
    })
    .optional(),
});

export const UserList = z.object({ users: z.array(User) });
export const UserAnswer = z.object({ user: User });
export const NewUserAnswer = z.object({
  user: User,
  password: z.string().meta({ description: 'A generated password, shown once.' }),
});
export const AdminJobs = z.object({
  jobs: z.array(
    z.object({
      job: z.number().int().optional(),
      backendName: z.string(),
      enabled: z.boolean(),
      schedule: z.string().optional(),
      lastBuild: z.number().int().optional(),
      dockerfile: z.object({ id: z.number().int(), name: z.string(), owner: z.string() }).nullable(),
      pending: z.string().optional(),
      failed: z.object({ op: z.string(), error: z.string(), at: z.string().optional() }).optional(),
    }),
  ),
});
export const JobRequest = z.object({
  job: z.number().int(),
  op: z.enum(['enable', 'disable', 'delete']),
  requested: z.boolean(),
});
export const AdminQueue = z.object({
  builds: z.array(
    z.object({
      id: z.number().int(),
      state: z.enum(WEB_BUILD_STATES),
      owner: z.string(),
      dockerfile: z.object({ id: z.number().int(), name: z.string() }),
      backendBuild: z.number().int().nullable(),
      requestedAt: z.string(),
      startedAt: z.string().nullable(),
    }),
  ),
  backend: z
    .array(
      z.object({
        id: z.number().int(),
        job: z.number().int().optional(),
        backendName: z.string(),
        why: z.string().optional(),
        since: z.string().optional(),
      }),
    )
    .nullable()
    .meta({ description: "The build service's own queue; null when it cannot be asked (backendError says why)." }),
  backendError: z.string().optional(),
});

const WebhookDelivery = z.object({
  id: z.string().meta({ description: 'The delivery id (X-Kiln-Delivery), the same on every attempt.' }),
  build: z.number().int(),
  event: z.string(),
  state: z.enum(['pending', 'delivered', 'failed']),
  attempts: z.number().int(),
  responseStatus: z.number().int().nullable(),
  error: z.string().nullable(),
  createdAt: z.string(),
  attemptedAt: z.string().nullable(),
  deliveredAt: z.string().nullable(),
});
export const Webhook = z.object({
  url: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  deliveries: z.array(WebhookDelivery).meta({ description: 'The latest deliveries, newest first.' }),
});
export const WebhookAnswer = z.object({ webhook: Webhook.nullable() });
export const WebhookSaved = z.object({
  webhook: Webhook,
  created: z.boolean(),
  secret: z
    .string()
    .optional()
    .meta({ description: 'The signing secret: only when the webhook is made (or its secret rotated), never again.' }),
});
export const WebhookRemoved = z.object({ removed: z.boolean() });
