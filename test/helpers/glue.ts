import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../../src/glue/backends/types.js';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { loadConfig, type FrozenConfig } from '../../src/config/index.js';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import { startGlueServer, type RunningGlue } from '../../src/glue/index.js';
import { defaultKeyPaths, ensureKeyPair, type KeyPair } from '../../src/shared/ssh-keys.js';
import { createSshGlueClient } from '../../src/glue-client/ssh.js';
import type { GluePort } from '../../src/core/ports.js';
import { tempDir } from './tmp.js';
import { until } from './wait.js';
/**
 * A stand-in for `kiln sdk build` (the real SDK is tested in test/sdk): a shell script taking the same flags. What
 * it does is chosen by a `# fake: MODE` line in the Dockerfile, so one script serves every test:
 *   (none)        prints progress, writes image.raw + result.json, exits 0
 *   fail          writes result.json with an error message, exits 1
 *   sleep N       prints progress, then sleeps N seconds before succeeding (cancel/restart/queue tests)
 *   symlink       also makes manifest.json a symlink to /etc/passwd and image.qcow2 one to /etc/shadow (never served)
 *   noise N       prints N KiB of log lines (log cap and offsets)
 *   big N         writes an image.raw of N MiB (slow readers, streams)
 *   tmp N         makes a kiln-sdk-* directory in $TMPDIR, as the real SDK does, records its path in
 *                 <out>/tmpdir.txt, then sleeps N seconds (what a killed SDK leaves behind)
 *   internal      fails as the real SDK does on an internal error: a reference in result.json, the detail in
 *                 <out>/internal-error.log
 *   gate NAME     prints progress, then waits until the file <dir>/gates/NAME exists (a test opens it: a build
 *                 held running for exactly as long as the test needs, no clock involved), then succeeds
 * Further lines shape what it writes (any mode):
 *   # fake-ansi         the log gets lines with ANSI colours, an OSC 8 link and markup (the web must clean them)
 *   # fake-claim: X     the builder's claim (SHA256SUMS, result.json) goes wrong: `wrong` digest, `none` at all,
 *                       `extra` (lists an image it did not make), `records` (lists result.json), `empty`, `garbage`,
 *                       `unlisted` (makes an image.qcow2 it does not list), `result-lies` (result.json claims
 *                       another digest; SHA256SUMS is right)
 * Like the SDK, it writes SHA256SUMS over its images: the builder's claim the web checks before it signs.
 * It records its argv in <out>/argv.txt, its environment in <out>/env.txt and the Dockerfile it was given in
 * <out>/Dockerfile.used, and the git source it was given (`--source`) in <out>/source.used (not artifact names, so
 * never served).
 * With `scratch`, every mode also keeps a `kiln-sdk-*` work directory in $TMPDIR while it runs and removes it when
 * it ends or is stopped by SIGTERM, as the real SDK does, so a harness can tell what a SIGKILL leaves behind (the
 * directory holds `owner`: the script's path, naming the run it belongs to).
 */
/** Opens the gate a `# fake: gate NAME` build of the fake SDK written into `dir` waits at. */
export function openGate(dir: string, name: string): void {
  mkdirSync(path.join(dir, 'gates'), { recursive: true });
  writeFileSync(path.join(dir, 'gates', name), '');
}

export function writeFakeSdk(dir: string, opts: { scratch?: boolean } = {}): string[] {
  const file = path.join(dir, 'fake-sdk.sh');
  const scratch = opts.scratch
    ? `work=$(mktemp -d "\${TMPDIR:-/tmp}/kiln-sdk-XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT HUP
printf '%s\\n' "$0" > "$work/owner"
`
    : '';
  writeFileSync(
    file,
    `#!/bin/sh
set -e
${scratch}prev=
for a in "$@"; do
  [ "$prev" = --dockerfile ] && df=$a
  [ "$prev" = --out ] && out=$a
  [ "$prev" = --source ] && src=$a
  prev=$a
done
for a in "$@"; do printf '%s\\n' "$a"; done > "$out/argv.txt"
env > "$out/env.txt"
cp "$df" "$out/Dockerfile.used"
if [ -n "\${src:-}" ]; then cp "$src" "$out/source.used"; fi
# result.json in the protocol's shape (src/protocol/sdk-output.ts): ok, the artifacts' JSON, extra fields (an error).
started=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
boot='[]'
stages='[]'
result() {
  printf '{"ok":%s,"sdkVersion":"fake","startedAt":"%s","finishedAt":"%s","artifacts":[%s],"bootTests":%s,"stages":%s%s}' \
    "$1" "$started" "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$2" "$boot" "$stages" "\${3:+,$3}" > "$out/result.json"
}
mode=$(sed -n 's/^# fake: //p' "$df" | head -n 1)
claim=$(sed -n 's/^# fake-claim: //p' "$df" | head -n 1)
echo '##kiln {"stage":"build","percent":10,"message":"building the Dockerfile"}'
# fake-lines: N prints "line 1".."line N" now and "after 1".."after N" once the mode (a gate, say) is done.
lines=$(sed -n 's/^# fake-lines: //p' "$df" | head -n 1)
i=1; while [ $i -le \${lines:-0} ]; do echo "line $i"; i=$((i+1)); done
# fake-packages: a=1 b=2 writes a manifest and an SBOM with those packages.
pkgs=$(sed -n 's/^# fake-packages: //p' "$df" | head -n 1)
if grep -q '^# fake-ansi' "$df"; then printf 'step 1\\n\\033[31m<script>alert(1)</script>\\033[0m\\n\\033]8;;javascript:alert(2)\\007link\\033]8;;\\007\\n'; fi
case "$mode" in
  gate*) g='${path.join(dir, 'gates')}'/\${mode#gate }; echo "waiting at gate"; while [ ! -e "$g" ]; do sleep 0.05; done ;;
  sleep*) echo "sleeping"; sleep \${mode#sleep } ;;
  noise*) n=\${mode#noise }; i=0; while [ $i -lt $n ]; do head -c 1023 /dev/zero | tr '\\0' 'x'; echo; i=$((i+1)); done ;;
  tmp*) d=$(mktemp -d "\${TMPDIR:-/tmp}/kiln-sdk-XXXXXX"); echo "$d" > "$out/tmpdir.txt"; echo "staging in $d"; sleep \${mode#tmp } ;;
esac
if [ "$mode" = internal ]; then
  printf 'reference 0123456789ab\\nError: connect ECONNREFUSED 10.1.2.3:2375 /var/lib/kiln/secret-path\\n' > "$out/internal-error.log"
  result false '' '"error":{"code":"internal","message":"Internal error in the build service (reference 0123456789ab)"}'
  exit 1
fi
i=1; while [ $i -le \${lines:-0} ]; do echo "after $i"; i=$((i+1)); done
if [ "$mode" = fail ]; then
  echo 'Step 2/2 : RUN true'
  stages='[{"name":"policy","seconds":0.1},{"name":"build","seconds":1.2}]'
  result false '' '"error":{"code":"build_failed","message":"RUN step 2 failed: exit 100"}'
  echo "build failed" >&2
  echo '[kiln] build failed'
  exit 1
fi
case "$mode" in
  big*) head -c $((\${mode#big } * 1048576)) /dev/zero > "$out/image.raw" ;;
  *) printf 'RAW-IMAGE-BYTES' > "$out/image.raw" ;;
esac
sha=$(sha256sum "$out/image.raw" | cut -d' ' -f1)
[ "$claim" = result-lies ] && sha=ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
size=$(wc -c < "$out/image.raw")
if [ -n "$pkgs" ]; then
  m=; sp=; for p in $pkgs; do
    m="$m\${m:+,}{\\"name\\":\\"\${p%%=*}\\",\\"version\\":\\"\${p#*=}\\",\\"architecture\\":\\"amd64\\",\\"source\\":\\"\${p%%=*}\\"}"
    sp="$sp,{\\"SPDXID\\":\\"SPDXRef-Package-deb-\${p%%=*}\\",\\"name\\":\\"\${p%%=*}\\",\\"versionInfo\\":\\"\${p#*=}\\",\\"externalRefs\\":[{\\"referenceType\\":\\"purl\\",\\"referenceLocator\\":\\"pkg:deb/debian/\${p%%=*}@\${p#*=}?arch=amd64\\"}]}"
  done
  printf '{"os":{"prettyName":"Debian GNU/Linux 12 (bookworm)"},"boot":{"kernel":"6.1.0-fake"},"packages":[%s]}' "$m" > "$out/manifest.json"
  printf '{"spdxVersion":"SPDX-2.3","packages":[{"SPDXID":"SPDXRef-Image","name":"image"}%s]}' "$sp" > "$out/sbom.spdx.json"
fi
boot='[{"artifact":"image.raw","firmware":"bios","passed":true,"seconds":1.5,"serialLog":"SeaBIOS\\r\\nDebian GNU/Linux 12 kiln ttyS0 <b>x</b>\\n\\nkiln login: "}]'
result true '{"name":"image.raw","format":"raw","size":'"$size"',"allocated":'"$size"',"sha256":"'"$sha"'"}'
case "$claim" in
  none) ;;
  wrong) printf '%s  image.raw\\n' 0000000000000000000000000000000000000000000000000000000000000000 > "$out/SHA256SUMS" ;;
  extra) (cd "$out" && sha256sum image.raw > SHA256SUMS && printf '%s  image.qcow2\\n' 1111111111111111111111111111111111111111111111111111111111111111 >> SHA256SUMS) ;;
  records) (cd "$out" && sha256sum result.json > SHA256SUMS) ;;
  empty) : > "$out/SHA256SUMS" ;;
  garbage) echo garbage > "$out/SHA256SUMS" ;;
  unlisted) (cd "$out" && sha256sum image.raw > SHA256SUMS); printf 'unlisted' > "$out/image.qcow2" ;;
  *) (cd "$out" && sha256sum image.raw $(ls manifest.json sbom.spdx.json 2>/dev/null) > SHA256SUMS) ;;
esac
if [ "$mode" = symlink ]; then ln -s /etc/passwd "$out/manifest.json"; ln -s /etc/shadow "$out/image.qcow2"; fi
echo '##kiln {"stage":"done","percent":100,"message":"image ready"}'
echo '[kiln] build succeeded'
`,
  );
  chmodSync(file, 0o755);
  return [file];
}

/** A job spec whose Dockerfile selects the fake SDK's behaviour. */
export function fakeSpec(mode?: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    owner: 'alice',
    name: 'demo',
    dockerfile: `FROM debian:bookworm\n${mode ? `# fake: ${mode}\n` : ''}RUN true\n`,
    ...extra,
  };
}

/** Wraps a real backend and records every method called on it (to prove a rejected request reached nothing). */
export function recording(backend: Backend): { backend: Backend; calls: string[] } {
  const calls: string[] = [];
  const api = new Set([
    'putJob',
    'setEnabled',
    'deleteJob',
    'build',
    'cancel',
    'withdraw',
    'status',
    'wait',
    'log',
    'artifact',
    'listJobs',
    'listQueue',
  ]);
  const proxy = new Proxy(backend, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      // Bound to the real object, so the backend's own internal calls (timers, queue) are not recorded.
      const bound = (v as (...a: unknown[]) => unknown).bind(target);
      if (!api.has(String(prop))) return bound;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return bound(...args);
      };
    },
  });
  return { backend: proxy, calls };
}

// ---------------------------------------------------------------------------------------------------------------
// A real built-in glue server for other tests (web, end to end).

export interface TestGlueOptions {
  /** SDK argv for the local backend; default: the fake SDK above (use the real `bin/kiln sdk build` for e2e). */
  sdkCommand?: string[];
  concurrency?: number;
  /** Use this data directory instead of a fresh temporary one (it is then not removed). */
  dataDir?: string;
  /** Record the backend methods called (see `calls`). */
  recordCalls?: boolean;
  /** Extra config overrides (merged over the test defaults). */
  config?: Record<string, unknown>;
}

export interface TestGlue {
  /** A real SSH GluePort, connected lazily, pinned to this server's host key. */
  client: GluePort;
  server: RunningGlue;
  port: number;
  hostFingerprint: string;
  dataDir: string;
  cfg: FrozenConfig;
  /** The web's client key pair (authorized by the server). */
  clientKey: KeyPair;
  /** Backend methods called, when recordCalls was set. */
  calls: string[];
  /** Every log line the glue wrote (audit lines included). */
  logs: Array<Record<string, unknown>>;
  /** Another client for the same server (e.g. with other options). */
  newClient(opts?: Partial<Parameters<typeof createSshGlueClient>[0]>): GluePort;
  cleanup(): Promise<void>;
}

/** Starts a built-in glue server (ssh2 on 127.0.0.1, random port) with a local backend in a temp dir. */
export async function startTestGlue(opts: TestGlueOptions = {}): Promise<TestGlue> {
  const tmp = opts.dataDir ? undefined : tempDir('kiln-test-glue-');
  const dataDir = opts.dataDir ?? tmp!.dir;
  const sdkCommand = opts.sdkCommand ?? writeFakeSdk(dataDir);
  const cfg = loadConfig(
    {},
    {
      dataDir,
      log: { level: 'debug' },
      ssh: { host: '127.0.0.1', port: 0, timeoutMs: 15_000 },
      glue: { backend: 'local', sdkCommand, concurrency: opts.concurrency ?? 1 },
      ...opts.config,
    },
  );
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      logs.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const local = new LocalBackend({
    dataDir,
    sdkCommand,
    concurrency: cfg.glue.concurrency,
    pollMs: 100,
    buildTimeoutMs: 600_000,
    logger,
  });
  const rec = opts.recordCalls ? recording(local) : { backend: local, calls: [] as string[] };
  const server = await startGlueServer(cfg, logger, { backend: rec.backend });
  const clientKey = await ensureKeyPair(cfg.ssh.clientKeyFile ?? defaultKeyPaths(dataDir).client, 'kiln-web');
  const clients: GluePort[] = [];
  const newClient = (o: Partial<Parameters<typeof createSshGlueClient>[0]> = {}) => {
    const c = createSshGlueClient({
      host: '127.0.0.1',
      port: server.port,
      username: cfg.ssh.user,
      privateKey: clientKey.privateKey,
      hostFingerprint: server.hostFingerprint,
      timeoutMs: 15_000,
      ...o,
    });
    clients.push(c);
    return c;
  };
  const client = newClient();
  return {
    client,
    server,
    port: server.port,
    hostFingerprint: server.hostFingerprint,
    dataDir,
    cfg,
    clientKey,
    calls: rec.calls,
    logs,
    newClient,
    async cleanup() {
      for (const c of clients) await c.close().catch(() => undefined);
      await server.close();
      tmp?.cleanup();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The OpenSSH front door: a real sshd on loopback running `kiln glue` as a forced command.

export interface OpenSshGlue {
  port: number;
  /** SHA-256 fingerprint of sshd's host key (base64, no padding). */
  hostFingerprint: string;
  /** The user the forced command runs as (the one running the tests). */
  username: string;
  /** A GluePort (the web's ssh2 client) pinned to this sshd. */
  client: GluePort;
  dir: string;
  /** The resident glue's socket when started with `resident: true` (the forced command then forwards to it). */
  socketPath?: string;
  sshdLog: () => string;
  newClient(opts?: Partial<Parameters<typeof createSshGlueClient>[0]>): GluePort;
  cleanup(): Promise<void>;
}

/**
 * Starts `/usr/sbin/sshd` on a free loopback port with its own config, host key and authorized_keys in a temp
 * dir. The web's key is authorized only as `command="<wrapper>",restrict`: the wrapper exports KILN_DATA_DIR and
 * execs `bin/kiln glue`, so no user environment is needed (PermitUserEnvironment stays off). No Subsystem lines, so
 * sftp and other subsystems are refused by sshd itself. With `resident: true` the wrapper also exports
 * KILN_GLUE_SOCKET, so bin/kiln hands each request to a resident glue (started on demand by the first one), which
 * cleanup stops.
 */
export async function startOpenSshGlue(opts: {
  dataDir: string;
  clientKey: KeyPair;
  sshdPath?: string;
  env?: Record<string, string>;
  resident?: boolean;
}): Promise<OpenSshGlue> {
  const { execFileSync, spawn } = await import('node:child_process');
  const { mkdirSync, readFileSync: rf, writeFileSync: wf, chmodSync: cm } = await import('node:fs');
  const os = await import('node:os');
  const tmp = tempDir('kiln-test-sshd-');
  const dir = tmp.dir;
  mkdirSync('/run/sshd', { recursive: true }); // sshd's privilege separation directory
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-test-sshd', '-f', hostKey]);
  const hostFingerprint = (/SHA256:([A-Za-z0-9+/]+)/.exec(
    execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`], { encoding: 'utf8' }),
  ) ?? [])[1]!;
  const wrapper = path.join(dir, 'kiln-glue');
  const kiln = await kilnSnapshot(dir);
  // Extra settings (e.g. the jenkins backend's) are exported by the wrapper, single-quoted; test-owned values only.
  const socketPath = opts.resident ? path.join(dir, 'run', 'glue.sock') : undefined;
  const extra = Object.entries({ ...opts.env, ...(socketPath ? { KILN_GLUE_SOCKET: socketPath } : {}) })
    .map(([k, v]) => `export ${k}='${v.replaceAll("'", '')}'\n`)
    .join('');
  wf(
    wrapper,
    `#!/bin/sh\nexport KILN_DATA_DIR='${opts.dataDir.replaceAll("'", '')}'\n${extra}export PATH='${path.dirname(process.execPath)}:/usr/bin:/bin'\nexec '${kiln}' glue\n`,
  );
  cm(wrapper, 0o755);
  const authorized = path.join(dir, 'authorized_keys');
  wf(authorized, `command="${wrapper}",restrict ${opts.clientKey.publicKey}\n`, { mode: 0o600 });
  const port = await freePort();
  const username = os.userInfo().username;
  const config = path.join(dir, 'sshd_config');
  wf(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorized}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin forced-commands-only',
      'PermitUserEnvironment no',
      'DisableForwarding yes',
      'PermitTunnel no',
      'X11Forwarding no',
      'AllowAgentForwarding no',
      'AllowTcpForwarding no',
      'PermitTTY no',
      `AllowUsers ${username}`,
      'LogLevel VERBOSE',
      'MaxStartups 100:30:200',
      'MaxSessions 32',
      // The session runs `<login shell> -c <wrapper>`. Debian's bash reads ~/.bashrc when it sees SSH_CLIENT and
      // SHLVL < 2, and these machines' root has a slow one (pyenv init: ~0.4 s per request); SHLVL=1 skips it. A
      // deployment's glue user has /bin/sh (jenkins/README.md), which reads nothing.
      'SetEnv SHLVL=1',
      '',
    ].join('\n'),
  );
  const log = path.join(dir, 'sshd.log');
  // -D: stay in the foreground (so cleanup can stop it by its pid); -e off, -E: log to a file.
  const sshd = spawn(opts.sshdPath ?? '/usr/sbin/sshd', ['-D', '-f', config, '-E', log], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => sshd.once('exit', () => r()));
  await until(
    () => {
      if (sshd.exitCode !== null) throw new Error(`sshd exited: ${rf(log, 'utf8')}`);
      return existsSyncSafe(log) && /Server listening/.test(rf(log, 'utf8'));
    },
    60_000,
    50,
  );
  const clients: GluePort[] = [];
  const newClient = (o: Partial<Parameters<typeof createSshGlueClient>[0]> = {}) => {
    const c = createSshGlueClient({
      host: '127.0.0.1',
      port,
      username,
      privateKey: opts.clientKey.privateKey,
      hostFingerprint,
      timeoutMs: 20_000,
      ...o,
    });
    clients.push(c);
    return c;
  };
  return {
    port,
    hostFingerprint,
    username,
    dir,
    socketPath,
    client: newClient(),
    newClient,
    sshdLog: () => rf(log, 'utf8'),
    async cleanup() {
      for (const c of clients) await c.close().catch(() => undefined);
      if (sshd.exitCode === null) {
        sshd.kill('SIGTERM');
        await exited;
      }
      if (socketPath) await stopResident(socketPath);
      tmp.cleanup();
    },
  };
}

function existsSyncSafe(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port free on loopback right now. */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * A private copy of the compiled `kiln` (dist/ + bin/ + package.json + the job template, views and static files;
 * node_modules linked) and a launcher for it, running its bin/kiln. Tests that spawn `kiln` use it because other test runs in the same tree recompile dist/ at
 * any moment (global setup), and a process starting mid-rewrite would load a half-written module. The copy is
 * checked by running `kiln glue` once (ping).
 */
export async function kilnSnapshot(dir: string): Promise<string> {
  const { cpSync, mkdirSync, rmSync, symlinkSync } = await import('node:fs');
  const { execFileSync } = await import('node:child_process');
  const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
  const root = path.join(dir, 'kiln-snapshot');
  const launcher = path.join(root, 'kiln');
  for (let attempt = 0; ; attempt++) {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    cpSync(path.join(repo, 'dist'), path.join(root, 'dist'), { recursive: true });
    cpSync(path.join(repo, 'package.json'), path.join(root, 'package.json'));
    cpSync(path.join(repo, 'bin'), path.join(root, 'bin'), { recursive: true });
    // What the compiled code reads from the package root: the Jenkins job template, the web's views and static files.
    for (const rel of ['jenkins', 'src/web/views', 'public'])
      cpSync(path.join(repo, rel), path.join(root, rel), { recursive: true });
    symlinkSync(path.join(repo, 'node_modules'), path.join(root, 'node_modules'));
    // bin/kiln itself (its glue fast path included), with this node first on its PATH.
    writeFileSync(
      launcher,
      `#!/bin/sh\nexport PATH='${path.dirname(process.execPath)}':"$PATH"\nexec '${path.join(root, 'bin', 'kiln')}' "$@"\n`,
    );
    chmodSync(launcher, 0o755);
    try {
      const out = execFileSync(launcher, ['glue'], {
        env: { PATH: process.env.PATH, KILN_DATA_DIR: path.join(root, 'check'), SSH_ORIGINAL_COMMAND: 'ping' },
        encoding: 'utf8',
      });
      if (out.includes('"protocol":1')) return launcher;
    } catch (e) {
      if (attempt >= 4) throw e;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/**
 * Stops the resident glue serving `socketPath` (its pid file names it; the test's own forced command started it) and
 * waits until it has exited. Nothing to do when none runs.
 */
export async function stopResident(socketPath: string): Promise<void> {
  const { readFileSync: rf } = await import('node:fs');
  const { pidFileOf } = await import('../../src/glue/resident/place.js');
  let pid: number;
  try {
    pid = Number(rf(pidFileOf(socketPath), 'utf8').trim());
  } catch {
    return;
  }
  // Exited, or a zombie nobody has reaped yet: either way it serves nothing.
  const alive = () => {
    try {
      return !/^\d+ \(.*\) Z/.test(rf(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  // A pid file a killed resident left may name a process that is not ours now: signal only a resident of this socket.
  const ours = () => {
    try {
      const cmd = rf(`/proc/${pid}/cmdline`, 'utf8');
      const env = rf(`/proc/${pid}/environ`, 'utf8').split('\0');
      return (
        cmd.includes('glue\0serve') && (cmd.includes(socketPath) || env.includes(`KILN_GLUE_SOCKET=${socketPath}`))
      );
    } catch {
      return false;
    }
  };
  if (!(pid > 1) || !alive() || !ours()) return;
  process.kill(pid, 'SIGTERM');
  await until(() => !alive(), 90_000, 50);
}
