import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyImageConfig } from '../../src/sdk/app.js';
import { ensureBase } from '../../src/sdk/base.js';
import { checkBootable } from '../../src/sdk/bootable.js';
import { stripAnsi } from '../../src/sdk/boot-diagnosis.js';
import { bootTest } from '../../src/sdk/boot-test.js';
import { assembleDisk, planDisk } from '../../src/sdk/disk.js';
import { exportRootfs } from '../../src/sdk/export.js';
import { finishRootfs, HOSTNAME } from '../../src/sdk/finish.js';
import { copyOut } from '../../src/sdk/fsroot.js';
import { Reporter } from '../../src/sdk/reporter.js';
import type { ImageRuntimeConfig } from '../../src/sdk/runtime/config.js';
import { run } from '../../src/shared/subprocess.js';
import { parseProbes, PROBE_SCRIPT, type ProbeResult } from '../helpers/runtime-probe.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * The differential test of issue 9 part 1: each case is a Dockerfile built by the real engine and run with
 * `docker run`, and the same image config turned into a service by the real generator (app.ts applyImageConfig, as
 * the pipeline calls it) in a booted image, once with systemd and once with sysvinit; one boot runs every case. Each
 * case runs the probe (test/helpers/runtime-probe.ts), which prints its argv and environment byte for byte, its
 * directory, ids, groups, umask, signal dispositions, session and stdin. They must be equal, except:
 *
 * - HOSTNAME's value: Docker sets the container's (its id), a machine has its own hostname (finish.ts: `kiln`).
 *
 * Not compared, because a VM legitimately differs from a container and the probe does not print them: the pid (1 in
 * a container), capabilities, seccomp/AppArmor, namespaces, cgroups and mounts, resource limits (dockerd's nofile
 * vs the init's), and where stdout/stderr go (pipes to dockerd; the journal and console, or the console).
 *
 * Cases only change the image config (ENV, USER, WORKDIR, SHELL, ENTRYPOINT, CMD, VOLUME, ARG): every file they
 * use is in the shared base, so one root filesystem serves them all. Where docker run refuses to start a case,
 * the booted image's service must refuse it with the same reason.
 */
const repo = path.resolve(import.meta.dirname, '../..');
const t = tempDir('kiln-runtime-diff-');
const docker = new Dockerode({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
const rep = new Reporter(
  undefined,
  1 << 30,
  () => undefined,
  () => undefined,
);
const tag = (name: string) => `kiln-test-runtime-diff-${name}:${process.pid}`;
const made: string[] = [];

interface Case {
  id: string;
  title: string;
  dockerfile: string[];
  buildArgs?: Record<string, string>;
  /** probe: compare the probe's output; line: compare the KILN-LINE the command prints; fail: both refuse to start. */
  kind: 'probe' | 'line' | 'fail';
  /** fail: the reason both give (runc's words), whole. */
  reason?: string;
}

const c = (
  id: string,
  title: string,
  dockerfile: string[],
  kind: Case['kind'] = 'probe',
  buildArgs?: Record<string, string>,
): Case => ({
  id,
  title,
  dockerfile: kind === 'probe' ? [`ENV KILN_CASE=${id}`, ...dockerfile] : dockerfile,
  kind,
  buildArgs,
});
const refusal = (id: string, title: string, dockerfile: string[], reason: string): Case => ({
  ...c(id, title, dockerfile, 'fail'),
  reason,
});

const CASES: Case[] = [
  c('c01', 'exec form, absolute path, odd words', ['CMD ["/usr/local/bin/probe", "a b", "", "it\'s"]']),
  c('c02', "WORKDIR + a relative executable (the issue's case)", ['WORKDIR /srv/app', 'CMD ["./run.sh", "x"]']),
  c('c03', 'a bare name through the default PATH', ['CMD ["probe"]']),
  c('c04', 'a bare name through an ENV PATH', ['ENV PATH=/opt/bin:$PATH', 'CMD ["oprobe", "y"]']),
  c('c05', 'PATH entries joined and cleaned like Go', ['ENV PATH=/usr//local/bin/:/usr/bin', 'CMD ["probe"]']),
  c('c06', 'PATH skips a directory, a file without x and a directory the user cannot search', [
    'ENV PATH=/p/dir:/p/noexec:/p/closed:/opt/bin',
    'USER app',
    'CMD ["oprobe"]',
  ]),
  c('c07', 'argv[0] of a binary found through PATH stays as written', ['CMD ["sh", "/usr/local/bin/probe", "argv0"]']),
  c('c08', 'shell-form CMD runs through /bin/sh -c', ['CMD probe "two words" $HOME \'%h\'']),
  c('c09', 'SHELL changes the shell of the shell form', [
    'SHELL ["/bin/bash", "-c"]',
    'CMD exec probe "$BASH_VERSION" "$0"',
  ]),
  c('c10', 'exec ENTRYPOINT + exec CMD', ['ENTRYPOINT ["probe", "ep"]', 'CMD ["c 1", "c2"]']),
  c('c11', 'shell-form ENTRYPOINT ignores CMD', ['ENTRYPOINT probe from-shell-entrypoint', 'CMD ["ignored"]']),
  c('c12', 'exec ENTRYPOINT + shell-form CMD', ['ENTRYPOINT ["probe"]', 'CMD run as shell']),
  c(
    'c13',
    'ENV values with spaces, quotes, $, %, backslashes, UTF-8, empty, a newline',
    [
      'ARG NL',
      'ENV S="two words" Q="it\'s \\"q\\"" D=\'$HOME ${X} $(id)\' P="%h %% $$" B="back\\\\slash" E="" dotted.name=1 U="é✓"',
      'ENV N=$NL',
      'CMD ["probe"]',
    ],
    'probe',
    { NL: 'line1\nline2\tand a tab' },
  ),
  c('c14', 'CMD words systemd or a shell would expand or split', [
    'CMD ["probe", "", ";", "%h", "%%", "$HOME", "${PATH}", "$$", "a\\\\;b", "\\\\", "\'", "\\"", "line1\\nline2", "\\t", "é✓", "*", "~", "-n", "`id`"]',
  ]),
  c('c15', 'USER name: its groups and HOME', ['USER app', 'CMD ["probe"]']),
  c('c16', 'USER uid of a passwd entry', ['USER 1000', 'CMD ["probe"]']),
  c('c17', 'USER uid missing from passwd: gid 0, HOME /', ['USER 4242', 'CMD ["probe"]']),
  c('c18', 'USER uid:gid, neither in the files', ['USER 4242:4243', 'CMD ["probe"]']),
  c('c19', 'USER name:group drops the other groups', ['USER app:extra2', 'CMD ["probe"]']),
  c('c20', 'USER uid:groupname', ['USER 1001:extra', 'CMD ["probe"]']),
  c('c21', 'USER a second name for a uid: HOME from the first', ['USER dupe', 'CMD ["probe"]']),
  c('c22', 'ENV HOME wins over passwd', ['ENV HOME=/custom', 'USER app', 'CMD ["probe"]']),
  c('c23', 'an empty ENV HOME is replaced', ['ENV HOME=""', 'USER 4242', 'CMD ["probe"]']),
  c('c24', 'WORKDIR the user cannot enter (entered as root)', ['WORKDIR /root', 'USER app', 'CMD ["probe"]']),
  c('c25', 'a WORKDIR the machine lacks is made', ['WORKDIR /new/deeper', 'CMD ["probe"]']),
  c('c26', "ENV HOSTNAME replaces the container's", ['ENV HOSTNAME=fixed', 'CMD ["probe"]']),
  c('c27', 'an empty PATH with an absolute command', ['ENV PATH=', 'CMD ["/usr/local/bin/probe"]']),
  c('c28', 'USER 0:gid, root listed in a group', ['USER 0:2000', 'CMD ["probe"]']),
  c('c29', 'USER root by name gets the groups that list root', ['USER nobody', 'USER root', 'CMD ["probe"]']),
  refusal(
    'c30',
    'a bare name that is only in WORKDIR is not found',
    ['WORKDIR /srv/app', 'CMD ["run.sh"]'],
    'exec: "run.sh": executable file not found in $PATH',
  ),
  refusal(
    'c31',
    'a PATH entry relative to WORKDIR is refused (Go ErrDot)',
    ['WORKDIR /srv/app', 'ENV PATH=.:/usr/bin:/bin', 'CMD ["run.sh"]'],
    'exec: "run.sh": cannot run executable found relative to current directory',
  ),
  refusal(
    'c32',
    'a script without #! is an exec format error',
    ['WORKDIR /srv/app', 'CMD ["./noshebang"]'],
    'exec ./noshebang: exec format error',
  ),
  refusal(
    'c33',
    'the first match in PATH is taken even when the user may not run it',
    ['ENV PATH=/p/eacces:/opt/bin', 'USER app', 'CMD ["oprobe"]'],
    'exec /p/eacces/oprobe: permission denied',
  ),
  c(
    'c34',
    "VOLUME paths: the image's kept, a missing one made root 0755",
    [
      'VOLUME /vol-new /vol-owned',
      'USER app',
      'CMD ["/bin/sh", "-c", "l=$(echo KILN-LINE c34 $(touch /vol-owned/x 2>&1 && echo owned-ok) $(touch /vol-new/x 2>&1 || echo new-denied) $(stat -c \'%U:%G %a\' /vol-new /vol-owned) END); echo \\"$l\\"; sleep 5; echo \\"$l\\""]',
    ],
    'line',
  ),
];

/** A HEALTHCHECK that fails while the program is on its first run, then passes; STOPSIGNAL is checked on the restart. */
const HEALTH: Case = c(
  'h1',
  'HEALTHCHECK restarts the program after `retries` failures, STOPSIGNAL stops it',
  [
    'STOPSIGNAL SIGUSR1',
    // A generous timeout: a starved TCG guest must not turn the check's "exit 1" into a timeout's "exit -1".
    'HEALTHCHECK --interval=2s --timeout=120s --retries=2 CMD test "$(cat /run/h1-runs)" -ge 2',
    'CMD ["h1-app"]',
  ],
  'line',
);
const H1_APP = `#!/bin/sh
# Counts its starts; the image's HEALTHCHECK fails while this is the first. Prints the health state once healthy.
n=$(( $(cat /run/h1-runs 2>/dev/null || echo 0) + 1 ))
echo $n > /run/h1-runs
echo "KILN-H1 run $n"
trap 'echo "KILN-H1 got USR1 in run $n"; exit 0' USR1
if [ "$n" -ge 2 ]; then
  until grep -q '"Status": "healthy"' /run/kiln/kiln-h1.health 2>/dev/null; do sleep 0.5; done
  echo "KILN-H1 status $(grep -o '"Status": "[a-z]*"\\|"FailingStreak": [0-9]*\\|"ExitCode": -*[0-9]*' /run/kiln/kiln-h1.health | tr '\\n' ' ')"
fi
while :; do sleep 1; done
`;

/** What h1 prints of the status file (Status, FailingStreak, the last check's ExitCode) once healthy: short lines travel. */
const H1_HEALTHY = 'KILN-H1 status "Status": "healthy" "FailingStreak": 0 "ExitCode": 0';

const REFUSED = refusal(
  'r1',
  'an unknown USER',
  ['USER nosuch', 'CMD ["probe"]'],
  'unable to find user nosuch: no matching entries in passwd file',
);

/** The files every case uses, in both bases. */
const SETUP = `COPY probe h1-app /usr/local/bin/
RUN set -e; useradd -m -u 1000 app; groupadd -g 2000 extra; groupadd -g 2001 extra2; usermod -aG extra,extra2 app; usermod -aG extra root; \\
 useradd -M -d /nohome -u 1001 -g extra solo; echo 'dupe:x:1000:1000::/dupehome:/bin/sh' >> /etc/passwd; \\
 mkdir -p /srv/app /opt/bin /p/dir/oprobe /p/noexec /p/closed /p/eacces /vol-owned; \\
 for d in /srv/app/run.sh /opt/bin/oprobe /p/closed/oprobe /p/eacces/oprobe; do cp /usr/local/bin/probe $d; done; \\
 printf 'echo no shebang\\n' > /srv/app/noshebang; chmod 755 /srv/app/noshebang; \\
 printf '#!/bin/sh\\necho wrong\\n' > /p/noexec/oprobe; chmod 644 /p/noexec/oprobe; \\
 chmod 700 /p/closed /p/eacces/oprobe; chown app:app /vol-owned; chmod 750 /vol-owned
`;

/**
 * The docker CLI runs with an empty config directory and only the variables it needs: a host's CLI config can add
 * to what a container gets (its `proxies` become HTTP_PROXY and friends in every `docker run`'s environment), and
 * what is compared is docker run of the image as built, not of this host's CLI settings.
 */
const dockerEnv = (): NodeJS.ProcessEnv => {
  const keep = ['PATH', 'DOCKER_HOST', 'DOCKER_CERT_PATH', 'DOCKER_TLS_VERIFY'];
  return Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
};

async function sh(
  cmd: string,
  args: string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const docker = cmd === 'docker';
  if (docker) await fsp.mkdir(path.join(t.dir, 'docker-config'), { recursive: true });
  const r = await run(cmd, docker ? ['--config', path.join(t.dir, 'docker-config'), ...args] : args, {
    timeoutMs: 20 * 60_000,
    input,
    cwd: t.dir,
    ...(docker ? { env: { ...dockerEnv(), HOME: t.dir } } : {}),
  });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

async function build(name: string, dockerfile: string, buildArgs: Record<string, string> = {}): Promise<string> {
  const r = await sh(
    'docker',
    [
      'build',
      '-q',
      '--network',
      'host',
      '-t',
      tag(name),
      ...Object.entries(buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
      '-f',
      '-',
      t.dir,
    ],
    dockerfile,
  );
  if (r.code !== 0) throw new Error(`docker build ${name} failed: ${r.stderr.slice(-2000)}`);
  made.push(tag(name));
  return tag(name);
}

interface Booted {
  serial: string;
  lines: string[];
  probes: Map<string, ProbeResult>;
}

/**
 * The pipeline's finish/disk/boot stages on one exported image, with every case's service installed by the real
 * generator under its own name (kiln-c01.service, /etc/kiln/c01.sh, ...).
 */
async function bootWith(
  name: string,
  image: string,
  configs: Map<string, ImageRuntimeConfig>,
  checks: Map<string, (line: string) => boolean>,
): Promise<Booted> {
  const work = path.join(t.dir, name);
  const root = path.join(work, 'root');
  await fsp.mkdir(work, { recursive: true });
  const stats = await exportRootfs(docker, image, root, { maxBytes: 8 * 2 ** 30, maxEntries: 2_000_000 }, rep);
  await finishRootfs(root, rep);
  for (const [id, config] of configs) await applyImageConfig(root, config, rep, id);
  const boot = (await checkBootable(root)).boot!;
  const kernelFile = path.join(work, 'vmlinuz');
  const initrdFile = path.join(work, 'initrd.img');
  const kbytes = await copyOut(root, boot.kernel, kernelFile);
  const ibytes = await copyOut(root, boot.initrd!, initrdFile);
  const layout = planDisk({
    rootBytes: stats.blockBytes,
    entries: stats.files + stats.dirs + stats.symlinks,
    bootPayloadBytes: kbytes + ibytes,
  });
  const raw = path.join(work, 'image.raw');
  await assembleDisk({ layout, rootDir: root, kernelFile, initrdFile, workDir: work, out: raw });
  await fsp.rm(root, { recursive: true, force: true });
  const serialLogFile = path.join(work, 'serial.log');
  // What is under test is the services' output, not how soon a getty shows (under a loaded TCG host systemd may
  // give up waiting for ttyS0): the boot test never passes by itself here, QEMU stops once every case has shown an
  // intact line. Each line is checked once, as it comes: rescanning the console would slow the reading of QEMU's
  // output, and QEMU drops serial bytes it cannot write.
  const pending = new Map(checks);
  const stop = new AbortController();
  let stopping = false;
  const res = await bootTest({
    image: raw,
    artifact: name,
    format: 'raw',
    accel: 'tcg',
    timeoutSeconds: 1200,
    serialLogFile,
    expect: [/(?!)/],
    expectGraceSeconds: 1200,
    signal: stop.signal,
    onLine: (l) => {
      const line = stripAnsi(l).replace(/\r$/, '');
      for (const [id, check] of pending) if (check(line)) pending.delete(id);
      if (!pending.size && !stopping) {
        stopping = true;
        setTimeout(() => stop.abort(), 2000);
      }
    },
  });
  const serial = stripAnsi(Buffer.from(await fsp.readFile(serialLogFile, 'latin1'), 'latin1').toString('utf8'));
  await fsp.rm(raw, { force: true });
  if (pending.size)
    throw new Error(
      `${name}: the console never showed an intact line for ${[...pending.keys()].join(', ')} (${res.reason})\n${serial.slice(-6000)}`,
    );
  return { serial, lines: serial.split('\n').map((l) => l.replace(/\r$/, '')), probes: parseProbes(serial) };
}

const dockerRuns = new Map<string, { code: number | null; stdout: string; stderr: string }>();
const configs = new Map<string, ImageRuntimeConfig>();
const booted = new Map<'systemd' | 'sysvinit', Booted>();

/** Line by line, what the console must show for each case: an intact probe line, the refusal, the KILN-LINE Docker printed. */
function consoleChecks(): Map<string, (line: string) => boolean> {
  const checks = new Map<string, (line: string) => boolean>();
  for (const x of CASES) {
    if (x.kind === 'probe') {
      let seen = '';
      checks.set(x.id, (l) => l.includes(`KILN-PROBE ${x.id} `) && parseProbes((seen += `${l}\n`)).has(x.id));
    } else if (x.kind === 'fail') checks.set(x.id, (l) => l.endsWith(`kiln-${x.id}: cannot start: ${x.reason}`));
    else {
      const want = kilnLine(dockerRuns.get(x.id)!.stdout, x.id);
      checks.set(x.id, (l) => !!want && l.endsWith(want));
    }
  }
  checks.set(HEALTH.id, (l) => l.includes(H1_HEALTHY));
  return checks;
}

const kilnLine = (text: string, id: string) => new RegExp(`^KILN-LINE ${id} .* END$`, 'm').exec(text)?.[0];

beforeAll(async () => {
  await fsp.writeFile(path.join(t.dir, 'probe'), PROBE_SCRIPT, { mode: 0o755 });
  await fsp.writeFile(path.join(t.dir, 'h1-app'), H1_APP, { mode: 0o755 });
  // The cases are built with `docker build` itself, which cannot make the base as the SDK does: on a fresh engine
  // (CI) this file may run before any build has made it.
  await ensureBase(docker, 'debian:bookworm', { mirror: 'http://deb.debian.org/debian' }, t.dir, rep);
  // debian-minimal's kernel layer, byte for byte, so the engine's layer cache serves it.
  const minimal = (await fsp.readFile(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8')).split(
    '\nLABEL',
  )[0]!;
  const systemdBase = await build('base-systemd', `${minimal}\n${SETUP}`);
  const sysvBase = await build(
    'base-sysvinit',
    `${minimal}\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sysvinit-core && apt-get clean && rm -rf /var/lib/apt/lists/*\n${SETUP}`,
  );
  for (const x of [...CASES, HEALTH, REFUSED]) {
    const image = await build(x.id, [`FROM ${systemdBase}`, ...x.dockerfile, ''].join('\n'), x.buildArgs);
    configs.set(x.id, (await docker.getImage(image).inspect()).Config as ImageRuntimeConfig);
  }
  // Four at a time: each probe takes 5 s.
  const queue = [...CASES, REFUSED];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let x = queue.shift(); x; x = queue.shift())
        dockerRuns.set(x.id, await sh('docker', ['run', '--rm', '--network', 'none', tag(x.id)]));
    }),
  );
  const bootConfigs = new Map([...CASES, HEALTH].map((x) => [x.id, configs.get(x.id)!]));
  booted.set('systemd', await bootWith('systemd', systemdBase, bootConfigs, consoleChecks()));
  booted.set('sysvinit', await bootWith('sysvinit', sysvBase, bootConfigs, consoleChecks()));
}, 60 * 60_000);

afterAll(async () => {
  for (const image of made.reverse()) await sh('docker', ['rmi', image]).catch(() => undefined);
  t.cleanup();
});

/** Each field that differs, with both values (of argv and env only the entries one side lacks): CI shows one line. */
function differences(docker: ProbeResult, vm: ProbeResult): string {
  const out: string[] = [];
  for (const k of Object.keys(docker) as Array<keyof ProbeResult>) {
    const a = docker[k];
    const b = vm[k];
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    if (Array.isArray(a) && Array.isArray(b)) {
      const only = (x: string[], y: string[]) => JSON.stringify(x.filter((e) => !y.includes(e)));
      out.push(`${k}: docker only ${only(a, b)}, vm only ${only(b, a)}${a.length === b.length ? ' (order)' : ''}`);
    } else out.push(`${k}: docker ${JSON.stringify(a)}, vm ${JSON.stringify(b)}`);
  }
  return out.join('; ');
}

/** The one exception in what the probe prints: HOSTNAME's value (the container's id vs the machine's name). */
function withoutHostname(p: ProbeResult, hostname: string): ProbeResult {
  return { ...p, env: p.env.map((e) => (e === `HOSTNAME=${hostname}` ? 'HOSTNAME=<hostname>' : e)) };
}

describe.each(['systemd', 'sysvinit'] as const)(
  'a booted %s image runs each image config as docker run does',
  (init) => {
    it.each(CASES.filter((x) => x.kind === 'probe').map((x) => [x.id, x.title, x] as const))(
      '%s: %s',
      (id, _title, x) => {
        const d = dockerRuns.get(id)!;
        // Each message names its case and shows what docker run printed: CI reports merge identical errors.
        const printed = `stdout ${JSON.stringify(d.stdout.slice(-400))}, stderr ${JSON.stringify(d.stderr.slice(-400))}`;
        expect(d.code, `docker run of ${id}: ${printed}`).toBe(0);
        const fromDocker = parseProbes(d.stdout).get(id)!;
        expect(fromDocker, `docker run of ${id} printed no whole report: ${printed}`).toBeDefined();
        const dockerHost = /^HOSTNAME=([0-9a-f]{12})$/m.exec(fromDocker.env.join('\n'))?.[1];
        const inVm = booted.get(init)!.probes.get(id)!;
        expect(inVm, `no probe line for ${id}`).toBeDefined();
        const expected = x.dockerfile.includes('ENV HOSTNAME=fixed')
          ? fromDocker
          : withoutHostname(fromDocker, dockerHost ?? '');
        const got = withoutHostname(inVm, HOSTNAME);
        expect(got, `${id} under ${init} differs from docker run: ${differences(expected, got)}`).toEqual(expected);
      },
    );

    it.each(CASES.filter((x) => x.kind === 'fail').map((x) => [x.id, x.title, x] as const))(
      '%s: %s: both refuse to start it, with the same reason',
      (id, _title, x) => {
        const d = dockerRuns.get(id)!;
        expect(d.code).not.toBe(0);
        expect(d.stdout + d.stderr).toContain(x.reason);
        expect(booted.get(init)!.lines.some((l) => l.endsWith(`kiln-${id}: cannot start: ${x.reason}`))).toBe(true);
      },
    );

    it('c34: VOLUME paths: the same files, owners and modes, writable by the same users', () => {
      const want = kilnLine(dockerRuns.get('c34')!.stdout, 'c34');
      expect(want).toBe(
        "KILN-LINE c34 owned-ok touch: cannot touch '/vol-new/x': Permission denied new-denied root:root 755 app:app 750 END",
      );
      expect(booted.get(init)!.lines.some((l) => l.endsWith(want!))).toBe(true);
    });

    it('h1: HEALTHCHECK restarts the program after `retries` failures (STOPSIGNAL first), and the status file says healthy after', () => {
      const serial = booted.get(init)!.serial;
      const order = [
        'KILN-H1 run 1',
        'kiln-h1: health: unhealthy (exit 1, 2 failed in a row), restarting it',
        'KILN-H1 got USR1 in run 1',
        'KILN-H1 run 2',
        'kiln-h1: health: healthy (exit 0)',
      ];
      const at = order.map((s) => serial.indexOf(s));
      expect(
        at.every((i) => i >= 0),
        `${JSON.stringify(at)} in:\n${serial
          .split('\n')
          .filter((l) => /h1/i.test(l))
          .join('\n')}`,
      ).toBe(true);
      expect([...at].sort((a, b) => a - b)).toEqual(at);
      expect(serial).toContain(H1_HEALTHY);
    });
  },
);

describe('the engine under test', () => {
  it('starts containers with no signal blocked or ignored, as under systemd (else every case differs)', () => {
    // Containers inherit the mask and the ignored set dockerd started with: scripts/ensure-dockerd.sh clears both
    // (with-clean-signals).
    const p = parseProbes(dockerRuns.get('c01')!.stdout).get('c01');
    expect(p?.sigBlk, 'restart the engine with scripts/ensure-dockerd.sh').toBe('0000000000000000');
    expect(p?.sigIgn, 'restart the engine with scripts/ensure-dockerd.sh').toBe('0000000000000000');
  });
});

describe('what docker run refuses', () => {
  it("r1: an unknown USER fails the build with Docker's own reason, instead of a service that cannot start", async () => {
    const d = dockerRuns.get('r1')!;
    expect(d.code).not.toBe(0);
    expect(d.stderr).toContain(REFUSED.reason);
    const root = path.join(t.dir, 'r1-root');
    await fsp.mkdir(path.join(root, 'etc'), { recursive: true });
    await fsp.writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n');
    await expect(applyImageConfig(root, configs.get('r1')!, rep)).rejects.toThrow(REFUSED.reason);
  });
});
