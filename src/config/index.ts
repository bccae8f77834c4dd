import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { KilnError } from '../shared/errors.js';

/**
 * One schema for all of Kiln's settings, read once at start and frozen. Every setting comes from an environment
 * variable named KILN_<SECTION>_<KEY> (upper snake case); a secret may instead come from a file named by the same
 * variable with a _FILE suffix. Defaults are the embedded one-machine setup.
 */
const int = (def: number) => z.coerce.number().int().nonnegative().default(def);
const bool = (def: boolean) =>
  z
    .preprocess((v) => (typeof v === 'string' ? ['1', 'true', 'yes', 'on'].includes(v.toLowerCase()) : v), z.boolean())
    .default(def);
const list = (def: string[]) =>
  z
    .preprocess(
      (v) =>
        typeof v === 'string'
          ? v
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : v,
      z.array(z.string()),
    )
    .default(def);

/** `10.0.0.5`, `10.0.0.0/24`, `fd00::1`, `fd00::/64`: what web.metricsAllow takes. */
export function isAddressOrSubnet(v: string): boolean {
  const [addr, bits, extra] = v.split('/');
  if (extra !== undefined || !addr) return false;
  const family = isIP(addr);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^[0-9]{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

/** A DNS host name: labels of letters, digits and `-`, dot-separated. */
export const HOST_NAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An admin's list of hosts that may resolve to refused addresses (`git.allowHosts`, `webhooks.allowHosts`). */
const allowHosts = (example: string) =>
  list([]).pipe(
    z.array(
      z
        .string()
        .refine(
          (v) => isAddressOrSubnet(v) || HOST_NAME_RE.test(v),
          `host names or addresses/prefixes, e.g. ${example} or 10.0.0.0/24`,
        ),
    ),
  );

export const OUTPUT_FORMATS = ['raw', 'qcow2', 'iso', 'tar'] as const;
/** An IPv4 address or CIDR with an optional `:port`, as `sdk.egressAllow` takes it (src/sdk/egress.ts parses it). */
export const IPV4_CIDR_PORT_RE = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?(?::(\d{1,5}))?$/;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** What Kiln builds from by default: Debian's stable (trixie) and oldstable (bookworm), each also slim. */
export const DEFAULT_BASES = ['debian:bookworm', 'debian:trixie', 'debian:bookworm-slim', 'debian:trixie-slim'];
/**
 * Docker Hub's names for those releases (on 2026-11-26: 13 trixie is stable and `latest`, 12 bookworm oldstable).
 * When Debian releases forky, `stable`, `oldstable` and `latest` move: a new Kiln release moves them here, an admin
 * earlier with `sdk.baseNames` or a site mapping.
 */
export const DEFAULT_BASE_NAMES = [
  'debian:12=debian:bookworm',
  'debian:oldstable=debian:bookworm',
  'debian:12-slim=debian:bookworm-slim',
  'debian:oldstable-slim=debian:bookworm-slim',
  'debian:13=debian:trixie',
  'debian:stable=debian:trixie',
  'debian:latest=debian:trixie',
  'debian:13-slim=debian:trixie-slim',
  'debian:stable-slim=debian:trixie-slim',
];
/** One `sdk.baseNames` entry: two image references (no digest, no `=`), as src/dockerfile/base-names.ts reads it. */
export const BASE_NAME_ENTRY_RE = /^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}=[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$/;
/**
 * A build proxy: `http://` or `https://`, host and port, optionally `user:password@`; nothing else. The message never
 * repeats the value: it may hold a password.
 */
const proxyUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (
      (u.protocol === 'http:' || u.protocol === 'https:') &&
      u.hostname !== '' &&
      (u.pathname === '/' || u.pathname === '') &&
      !u.search &&
      !u.hash
    );
  } catch {
    return false;
  }
}, 'a proxy URL such as http://proxy.example:3128 or http://user:password@proxy.example:3128 (no path)');

export const configSchema = z.object({
  dataDir: z.string().default('./data'),
  log: z
    .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
    .default({ level: 'info' }),
  web: z
    .object({
      host: z.string().default('127.0.0.1'),
      port: int(8080),
      /** The URL users reach; https makes the session cookie `__Host-` and Secure. */
      publicUrl: z.string().url().optional(),
      /** Exact number of reverse-proxy hops to trust for X-Forwarded-For; 0 trusts none. */
      trustProxyHops: int(0),
      sessionSecret: z.string().min(32).optional(),
      sessionIdleMinutes: int(120),
      sessionAbsoluteHours: int(24),
      maxDockerfileBytes: int(64 * 1024),
      quotaDockerfiles: int(50),
      quotaQueuedBuilds: int(5),
      /** Bytes one user may store, in MiB: Dockerfile versions, build contexts and build artifacts; 0 = no limit. */
      quotaStorageMb: int(20 * 1024),
      /** Uploads are refused (507) while the database's disk has less than this free, in MiB, so logins keep working. */
      minFreeMb: int(256),
      registrationOpen: bool(true),
      /** Self-registered accounts wait for an admin's approval (the admin console's Users page) before they can log in. */
      registrationApproval: bool(false),
      /**
       * Client addresses (IPv4/IPv6, optionally `/prefix`) that may read /metrics without logging in, e.g. the
       * Prometheus server's; admins always may. Empty: admins only.
       */
      metricsAllow: list([]).pipe(
        z.array(z.string().refine(isAddressOrSubnet, 'an IP address or address/prefix, e.g. 10.0.0.5 or 10.0.0.0/24')),
      ),
      /** Concurrent argon2 hashes: each takes a core for ~10 ms; more than the cores only queues inside libuv. */
      hashConcurrency: int(2),
      /**
       * The private key (OpenSSH format) the web signs each build's SHA256SUMS with, after hashing the artifacts
       * itself. Unset: an ed25519 key generated on first start at <dataDir>/keys/signing_ed25519 (0600). Builders
       * never hold it; its public half is served at /.well-known/kiln-signing-key.
       */
      signingKeyFile: z.string().optional(),
      /** How often a live build page's stream looks for new log lines, ms (one glue call per build, however many watch). */
      livePollMs: int(250),
      /** Live build streams one user may have open at once in one web process (each is a long-lived connection). */
      liveStreamsPerUser: int(20),
    })
    .prefault({}),
  /** The REST API (/api/v1) and its personal tokens (src/web/api-v1, src/core/tokens.ts). */
  api: z
    .object({
      /** Requests one token may make per window (every route counts one; a long poll counts once). */
      rateLimit: z.coerce.number().int().positive().default(600),
      rateWindowSeconds: z.coerce.number().int().positive().default(60),
      /** The longest `?wait=` of a long poll on a build; longer asks are cut to it. */
      maxWaitSeconds: z.coerce.number().int().positive().max(600).default(60),
      /** Tokens one user may hold at once (not revoked, not expired). */
      tokensPerUser: z.coerce.number().int().positive().default(50),
    })
    .prefault({}),
  /**
   * Retention of build artifacts (src/core/retention.ts): the web's rule for the local backend, and the Jenkins job's
   * build discarder (sent with every job.put), so both backends keep the same builds. Releases (their own store) and
   * pinned builds are never discarded; nor is a Dockerfile's latest successful build (Jenkins' rule too).
   */
  retention: z
    .object({
      /** The newest builds of each Dockerfile whose artifacts are kept; older ones are discarded. 0 = no count limit. */
      keepBuilds: int(20),
      /** Artifacts of builds started more than this many days ago are discarded. 0 = no age limit. */
      keepDays: int(0),
      /** Builds one user may pin (kept from retention) at once. */
      pinsPerUser: int(10),
    })
    .prefault({}),
  /** Releases (src/core/releases): named, signed copies of a build's artifacts, outside the build store. */
  releases: z
    .object({
      /**
       * The release store: a directory of the web's (shared by every web and worker instance), never the backend's
       * build storage. Unset: <dataDir>/releases.
       */
      dir: z.string().optional(),
    })
    .prefault({}),
  /** The task worker (src/core/tasks): dispatch, refresh, withdrawal, verification and reconciliation of builds. */
  worker: z
    .object({
      /** Whether `kiln serve` and `kiln web` run a worker in their own process (`kiln worker` always does). */
      enabled: bool(true),
      /** Tasks one worker runs at once (at most one artifact verification among them). */
      concurrency: int(4),
      /** How often an idle worker looks for due tasks (a request in the same process wakes it at once). */
      pollMs: int(1000),
      /** A claimed task is the worker's for this long, renewed while it runs; after a crash another takes it over. */
      leaseSeconds: int(60),
      /** Runs of a failing task before it fails for good (and the build it concerns fails with its error). */
      maxAttempts: int(10),
      /** The first retry's delay; each further retry doubles it (with +-20% jitter), up to backoffMaxSeconds. */
      backoffMs: int(1000),
      backoffMaxSeconds: int(300),
      /**
       * How often a queued or running build's state is pulled from the glue. A build's end reaches the web sooner
       * through a held wait (buildWaits); this is the pace of its progress and what a lost wake-up costs.
       */
      refreshMs: int(2000),
      /**
       * Builds at the backend whose change this worker waits on with a held glue request (build.wait), running ones
       * first: the glue answers as soon as the build starts or ends, and its refresh runs at once instead of at the
       * next refreshMs. Each is one SSH session held open (under the OpenSSH door, one `kiln glue` process); at most
       * 10, the sessions OpenSSH allows on one connection by default (protocol.MAX_HELD_WAITS). 0: refresh only.
       */
      buildWaits: z.coerce.number().int().min(0).max(10).default(8),
      /** How often a reconciliation pass runs (every active build has its task; jobs the backend lost are put again). */
      reconcileSeconds: int(30),
      /**
       * Builds one user may have at the backend at once (queued or running there); more wait in Kiln, in `requested`,
       * so another user's build is not stuck behind them in a backend queue Kiln does not order (Jenkins). 0 = no cap.
       */
      userBuildsInFlight: int(0),
    })
    .prefault({}),
  /**
   * Dockerfiles from git repositories (src/core/git): what the worker may fetch, and how. The fetch runs on the web's
   * side (the worker), never in a request, so these are read by `kiln web`, `kiln serve` and `kiln worker`.
   */
  git: z
    .object({
      /**
       * Hosts a repository URL may name although they resolve to a refused address (loopback, private, link-local:
       * src/shared/addresses.ts): host names (exact, case-insensitive) or addresses/prefixes such as 10.0.0.5 or
       * 10.0.0.0/24 (the address the name resolves to). Empty: only public addresses.
       */
      allowHosts: allowHosts('git.internal.example'),
      /** Local directories a `file://` URL may point into (admin-made mirrors). Empty: file:// is refused. */
      mirrors: list([]).pipe(z.array(z.string().refine((v) => path.isAbsolute(v), 'absolute directories'))),
      /** Whether the repository's submodules (in the build context) are fetched too, each URL checked like the main one. */
      submodules: bool(false),
      /** Wall-clock limit of one fetch (all its git runs together). */
      timeoutSeconds: int(120),
      /** Largest pack one fetch may receive (git is stopped and its directory removed past it), MiB. */
      maxFetchMb: int(100),
      /** How often a Dockerfile that follows its branch asks the repository for the branch's head; 0: never (webhooks only). */
      pollSeconds: int(300),
      /** The private key ssh:// URLs are fetched with (OpenSSH format, readable by Kiln only). Unset: ssh URLs cannot authenticate. */
      sshKeyFile: z.string().optional(),
      /** known_hosts of the ssh servers Kiln may fetch from; hosts not in it are refused. Unset: every ssh URL is refused. */
      sshKnownHostsFile: z.string().optional(),
      /** PEM bundle of the CAs https URLs are checked against. Unset: the system's. */
      caFile: z.string().optional(),
    })
    .prefault({}),
  /**
   * Outgoing webhooks (src/core/following): where a Dockerfile's build-end notices may be POSTed, and how patiently.
   * Delivered by the worker (`webhook.deliver`), never in a request.
   */
  webhooks: z
    .object({
      /**
       * Hosts a webhook URL may name although they resolve to a refused address (loopback, private, link-local, this
       * machine's own: src/shared/addresses.ts): host names (exact, case-insensitive) or addresses/prefixes, matched
       * against what the name resolves to. Empty: only public addresses.
       */
      allowHosts: allowHosts('hooks.internal.example'),
      /** Limit of one delivery attempt: connecting, sending and the response's headers and first bytes. */
      timeoutSeconds: int(10),
    })
    .prefault({}),
  db: z
    .object({
      client: z.enum(['sqlite', 'pg']).default('sqlite'),
      /** SQLite file (relative to dataDir) or a PostgreSQL connection string. */
      filename: z.string().default('kiln.sqlite'),
      url: z.string().optional(),
    })
    .prefault({}),
  ssh: z
    .object({
      /** Where the web finds the glue. */
      host: z.string().default('127.0.0.1'),
      port: int(2222),
      user: z.string().default('kiln'),
      /** The web's client key (private) and the glue's host key; generated on first start when missing. */
      clientKeyFile: z.string().optional(),
      hostKeyFile: z.string().optional(),
      /** Pinned SHA-256 fingerprint of the glue's host key (base64, as `ssh-keygen -l` prints without the prefix). */
      hostFingerprint: z.string().optional(),
      /** The public keys the built-in glue server accepts (authorized_keys format); defaults to the web's own key. */
      authorizedKeysFile: z.string().optional(),
      timeoutMs: int(30_000),
    })
    .prefault({}),
  /**
   * The users' SSH door (src/ssh-door): `ssh -p PORT kiln@HOST build NAME < Dockerfile`, with the SSH keys users add
   * on their account page. Separate from the glue's SSH server (`ssh`): its own port, host key and keys.
   */
  sshDoor: z
    .object({
      /** Off unless switched on: it is a login surface of its own, opened on purpose (and the firewall with it). */
      enabled: bool(false),
      host: z.string().default('127.0.0.1'),
      /** Non-privileged (no root or CAP_NET_BIND_SERVICE), next to the glue's 2222; 22 is the machine's own sshd. */
      port: int(2223),
      /** The one user name it answers to: `kiln@HOST`. The key says who the user is, never this name. */
      user: z
        .string()
        .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a user name such as kiln')
        .default('kiln'),
      /**
       * Its host key (OpenSSH format, ed25519, mode 0600). Unset: generated on first start at
       * <dataDir>/ssh/door_host_ed25519. Never the glue's host key or the web's client key.
       */
      hostKeyFile: z.string().optional(),
      /** TCP connections at once, authenticated or not. */
      maxConnections: int(64),
      /** Commands running at once (all users). */
      maxSessions: int(32),
      /** Commands one user may run at once (in this process). */
      maxSessionsPerUser: int(4),
      /** A connection running no command is closed after this; so is a command whose client stops reading. */
      idleSeconds: int(300),
    })
    .prefault({}),
  glue: z
    .object({
      backend: z.enum(['local', 'jenkins']).default('local'),
      /** Builds the local backend runs at once. */
      concurrency: int(1),
      /** argv of the SDK as the local backend (and the Jenkins job template) call it. */
      sdkCommand: list([]),
      /**
       * The resident glue's Unix socket (src/glue/README.md "The resident glue"): set, the OpenSSH forced command
       * hands each request to a glue process kept alive there instead of starting node per request. Its directory
       * must be the glue user's own, mode 0700. bin/kiln-glue-forward reads this variable itself (it loads no config).
       */
      socket: z
        .string()
        .refine((v) => path.isAbsolute(v), 'an absolute path')
        // sockaddr_un holds 108 bytes, the terminating NUL included.
        .refine((v) => Buffer.byteLength(v) <= 107, 'at most 107 bytes (a Unix socket path)')
        .optional(),
      /** A resident glue started on demand (by the forced command) exits after this long without a request. */
      residentIdleSeconds: z.coerce.number().int().positive().default(600),
      jenkins: z
        .object({
          url: z.string().url().optional(),
          user: z.string().optional(),
          token: z.string().optional(),
          folder: z.string().optional(),
          label: z.string().default('kiln-builder'),
          /**
           * Build records (logs) Jenkins keeps per job (`numToKeep`; never fewer than the builds whose artifacts
           * retention keeps; 0 = all). What happens to artifacts is retention's (`retention.*`).
           */
          keepBuilds: int(100),
          /** argv of the SDK on the Jenkins agents (absolute path: agents do not share the glue's PATH). */
          sdkCommand: list(['/usr/local/bin/kiln', 'sdk', 'build']),
          /** Wall-clock limit of the job's build step (`timeout` on the agent). */
          timeoutSeconds: int(3600),
          /** Limit of one HTTP request to Jenkins. */
          requestTimeoutMs: int(30_000),
          /**
           * The oldest Jenkins the glue works with (its X-Jenkins header), one floor per release line: `A.B.C` admits
           * the LTS line A.B from C on, `A.B` every release from A.B on. The default is the fix of SECURITY-3707
           * (config.xml deserialization, SECURITY-CHECKLIST 3.3): LTS 2.555.3, weekly 2.568.
           */
          minVersion: list(['2.555.3', '2.568']).pipe(
            z
              .array(
                z
                  .string()
                  .regex(/^[0-9]{1,5}\.[0-9]{1,5}(\.[0-9]{1,5})?$/, 'versions such as 2.555.3 (LTS) or 2.568 (weekly)'),
              )
              .min(1),
          ),
        })
        .prefault({}),
    })
    .prefault({}),
  sdk: z
    .object({
      mirror: z.string().default('http://deb.debian.org/debian'),
      snapshot: z.string().optional(),
      /**
       * The bases Kiln makes and a FROM may name: `debian:<suite>` (mmdebstrap minbase), `debian:<suite>-slim` (the
       * same with Docker's slim dpkg path exclusions), the same for `devuan:`.
       */
      bases: list(DEFAULT_BASES),
      /**
       * Other names for those bases, `name=base`: how CI writes a release (`debian:12`, `debian:stable-slim`). A point
       * release or dated tag of an accepted name means that name (src/dockerfile/base-names.ts). Setting it replaces
       * the defaults (Debian's names as of trixie being stable); the web admin's mappings come on top.
       */
      baseNames: list(DEFAULT_BASE_NAMES).pipe(
        z.array(z.string().regex(BASE_NAME_ENTRY_RE, 'name=base pairs such as debian:12=debian:bookworm')),
      ),
      devuanMirror: z.string().optional(),
      /** Devuan signs its archive with its own key; Debian does not ship it (Devuan's package devuan-keyring does). */
      devuanKeyring: z.string().default('/usr/share/keyrings/devuan-archive-keyring.gpg'),
      formats: list(['raw', 'qcow2']).pipe(z.array(z.enum(OUTPUT_FORMATS))),
      allowRemoteAdd: bool(false),
      /**
       * The network of RUN steps. `filtered` (Kiln's own bridge, src/sdk/egress.ts): the internet, but not this host,
       * its LAN, private or link-local addresses. `host`: everything the host reaches. `none`: nothing.
       */
      buildNetwork: z.enum(['filtered', 'host', 'none']).default('filtered'),
      /** The filtered network's subnet, used when Kiln creates it. */
      buildSubnet: z
        .string()
        .regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'an IPv4 CIDR such as 10.213.0.0/24')
        .default('10.213.0.0/24'),
      /** Destinations the filtered network allows although they are private: `CIDR` or `CIDR:port` (e.g. an apt cache). */
      egressAllow: list([]).pipe(
        z.array(z.string().regex(IPV4_CIDR_PORT_RE, 'an IPv4 address or CIDR, optionally with :port')),
      ),
      /** `apply`: the SDK writes the filter (local engine, root). `external`: the engine's host does (`kiln sdk egress-rules`). */
      egressRules: z.enum(['apply', 'external']).default('apply'),
      memoryMb: int(2048),
      /** Processes a build's RUN steps may have at once (pids cgroup; a fork bomb stops there). */
      pidsLimit: int(1024),
      cpus: z.coerce.number().positive().default(2),
      buildTimeoutSeconds: int(1800),
      bootTimeoutSeconds: int(300),
      maxImageMb: int(8192),
      /**
       * Most entries (files, directories, links) an image's filesystem may have: an empty file costs no byte but an
       * inode of the staging tmpfs. A big real image has a few hundred thousand.
       */
      maxImageEntries: int(1_000_000),
      /** What one build may write to the engine's disk (layers, build stages) while it runs. */
      maxBuildDiskMb: int(16384),
      logCapBytes: int(16 * 1024 * 1024),
      /**
       * `verify`: before each build the SDK proves the engine cannot fetch from this host or anywhere (a remote ADD, a
       * pull), and refuses to build otherwise (scripts/ensure-dockerd.sh guards it). `off`: the engine is guarded in a
       * way this host cannot see, or not at all.
       */
      engineGuard: z.enum(['verify', 'off']).default('verify'),
      /** The engine's layer cache (kiln-build images, a failed build's steps): bytes kept, least recently used out first. */
      imageCacheMb: int(20480),
      /** Cache images a build has not made or reused for this long are removed. */
      imageCacheHours: int(168),
      accel: z.enum(['tcg', 'kvm']).default('tcg'),
      /**
       * Extra CA certificates the Dockerfile's RUN steps trust (a TLS-intercepting proxy's): PEM files, or directories
       * whose *.crt and *.pem files are taken (`/usr/local/share/ca-certificates` is what this host itself trusts on
       * top of Debian's). Left out of the finished image unless `keepInImage` (src/sdk/build-trust.ts).
       */
      buildTrust: z
        .object({
          caFiles: list([]),
          keepInImage: bool(false),
        })
        .prefault({}),
      /**
       * The HTTP(S) proxy RUN steps use: given to the build as the engine's predefined proxy build args, which never
       * reach the image's config or history. The filtered build network lets RUN steps reach the proxy's address.
       */
      buildProxy: z
        .object({
          httpProxy: proxyUrl.optional(),
          httpsProxy: proxyUrl.optional(),
          noProxy: list([]).pipe(
            z.array(
              z
                .string()
                .regex(
                  /^[A-Za-z0-9.*:[\]/_-]+$/,
                  'host names, domains (.example.com), addresses or CIDRs, comma-separated',
                ),
            ),
          ),
        })
        .prefault({}),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;

type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] };
export type FrozenConfig = DeepReadonly<Config>;

const toEnvName = (parts: string[]) =>
  'KILN_' + parts.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');

/** Walks the schema's shape and collects KILN_* variables (and their *_FILE twins) into a plain object. */
function fromEnv(env: NodeJS.ProcessEnv, shape: z.ZodRawShape, prefix: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(shape)) {
    const parts = [...prefix, key];
    const inner = unwrap(schema as z.ZodType);
    if (inner instanceof z.ZodObject) {
      const sub = fromEnv(env, inner.shape, parts);
      if (Object.keys(sub).length) out[key] = sub;
      continue;
    }
    const name = toEnvName(parts);
    if (env[name] !== undefined) out[key] = env[name];
    else if (env[`${name}_FILE`]) out[key] = readFileSync(env[`${name}_FILE`]!, 'utf8').trim();
  }
  return out;
}

function unwrap(s: z.ZodType): z.ZodType {
  let cur: z.ZodType = s;
  for (;;) {
    const def = (cur as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType } }).def;
    if ((def.type === 'default' || def.type === 'prefault' || def.type === 'optional') && def.innerType)
      cur = def.innerType;
    else if (def.type === 'pipe' && def.in) cur = def.in;
    else return cur;
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Variables a build's SDK process takes from the glue's environment (besides every KILN_SDK_* setting). */
const SDK_ENV_NAMES = new Set([
  'PATH',
  'HOME',
  'LANG',
  'LANGUAGE',
  'LC_ALL',
  'LC_CTYPE',
  'TZ',
  'KILN_LOG_LEVEL',
  'DOCKER_SOCKET',
  // The build host's way out to its package mirror, if it has one (mmdebstrap and apt read these).
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
]);

/**
 * The environment the local runner gives `kiln sdk build`: an allow-list, never all of its own. Under `kiln
 * serve` the runner shares its process with the web, whose secrets (session secret, database URL, Jenkins token)
 * must not reach a build.
 */
export function sdkEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && (SDK_ENV_NAMES.has(k) || k.startsWith('KILN_SDK_'))) out[k] = v;
  }
  return out;
}

/** Variables that were settings once: set, they stop the start saying what replaced them (none is silently ignored). */
const RETIRED: Readonly<Record<string, string>> = {
  KILN_GLUE_JENKINS_KEEP_ARTIFACTS:
    'KILN_RETENTION_KEEP_BUILDS (and KILN_RETENTION_KEEP_DAYS), which both backends follow',
};

/** Reads, validates and freezes the configuration. `overrides` (tests, CLI flags) win over the environment. */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Record<string, unknown> = {},
): FrozenConfig {
  for (const [name, instead] of Object.entries(RETIRED))
    if (env[name] !== undefined || env[`${name}_FILE`] !== undefined)
      throw new KilnError('invalid_input', `Invalid configuration: ${name} no longer exists; use ${instead}`);
  const raw = mergeDeep(fromEnv(env, configSchema.shape, []), overrides);
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${toEnvName(i.path.map(String))}: ${i.message}`).join('; ');
    throw new KilnError('invalid_input', `Invalid configuration: ${msg}`);
  }
  const cfg = parsed.data;
  cfg.dataDir = path.resolve(cfg.dataDir);
  return deepFreeze(cfg);
}

function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}
