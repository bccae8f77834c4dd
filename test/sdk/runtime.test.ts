import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { applyImageConfig, initKind, resetSshHostKeys } from '../../src/sdk/app.js';
import { parseOsRelease } from '../../src/sdk/bootable.js';
import { finishRootfs } from '../../src/sdk/finish.js';
import { editInittab, renderSysvRunner, shQuote } from '../../src/sdk/initscript.js';
import { bootPackages } from '../../src/sdk/pipeline.js';
import { Reporter } from '../../src/sdk/reporter.js';
import type { ImageRuntimeConfig } from '../../src/sdk/runtime/config.js';
import { containerEnv, DOCKER_DEFAULT_PATH } from '../../src/sdk/runtime/env.js';
import { planHealthcheck } from '../../src/sdk/runtime/healthcheck.js';
import { appNames, execArgs, healthArgs, KILN_EXEC_SOURCE } from '../../src/sdk/runtime/kiln-exec.js';
import { appCommand, planRuntime, type RuntimePlan } from '../../src/sdk/runtime/plan.js';
import { parseStopSignal } from '../../src/sdk/runtime/signal.js';
import { appUnit, healthUnits, systemdQuote } from '../../src/sdk/runtime/systemd.js';
import { parseGroup, parsePasswd, resolveUser } from '../../src/sdk/runtime/user.js';
import { parseProbes, PROBE_SCRIPT } from '../helpers/runtime-probe.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const tmp = tempDir('kiln-sdk-runtime-');
// kiln-exec drops to other uids here: they must be able to reach the programs under it.
chmodSync(tmp.dir, 0o711);
afterAll(() => tmp.cleanup());
let seq = 0;
const fresh = (name: string) => {
  const d = path.join(tmp.dir, `${++seq}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const quiet = () =>
  new Reporter(
    undefined,
    1 << 20,
    () => undefined,
    () => undefined,
  );

// What the differential test's image has (test/sdk/runtime-diff.test.ts), with what Docker 20.10 gave for each USER.
const PASSWD = parsePasswd(
  'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' +
    'app:x:1000:1000::/home/app:/bin/sh\nsolo:x:1001:2000::/nohome:/bin/sh\ndupe:x:1000:1000::/dupehome:/bin/sh\n',
);
const GROUP = parseGroup('root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\nextra2:x:2001:app\n');

describe('USER as docker run resolves it (runc GetExecUser + moby)', () => {
  it.each([
    ['', 0, 0, [0], '/root'],
    ['app', 1000, 1000, [1000, 2000, 2001], '/home/app'],
    ['1000', 1000, 1000, [1000, 2000, 2001], '/home/app'],
    ['solo', 1001, 2000, [2000], '/nohome'],
    ['1001', 1001, 2000, [2000], '/nohome'],
    ['4242', 4242, 0, [0], '/'],
    ['4242:4243', 4242, 4243, [4243], '/'],
    ['app:extra2', 1000, 2001, [2001], '/home/app'],
    ['1000:2001', 1000, 2001, [2001], '/home/app'],
    ['app:4243', 1000, 4243, [4243], '/home/app'],
    ['solo:root', 1001, 0, [0], '/nohome'],
    ['0:2000', 0, 2000, [2000], '/root'],
    [':2000', 0, 2000, [2000], '/root'],
    ['1000:', 1000, 1000, [1000, 2000, 2001], '/home/app'],
    ['nobody', 65534, 65534, [65534], '/nonexistent'],
    ['root:root', 0, 0, [0], '/root'],
    // A second name for uid 1000: its own groups (none), but HOME from the first entry with that uid.
    ['dupe', 1000, 1000, [1000], '/home/app'],
  ])('USER %j: uid %i gid %i groups %j HOME %s', (spec, uid, gid, groups, home) => {
    expect(resolveUser(spec, PASSWD, GROUP)).toEqual({ spec, uid, gid, groups, home });
  });

  it('lists a group once when the user is also a member of its own group; root gets the groups that list it', () => {
    const g = parseGroup('root:x:0:\napp:x:1000:app\nextra:x:2000:app,root\n');
    expect(resolveUser('app', PASSWD, g).groups).toEqual([1000, 2000]);
    expect(resolveUser('', PASSWD, g).groups).toEqual([0, 2000]);
  });

  it("refuses what docker run refuses, in Docker's words", () => {
    expect(() => resolveUser('nosuch', PASSWD, GROUP)).toThrow(
      'unable to find user nosuch: no matching entries in passwd file',
    );
    expect(() => resolveUser('app:nosuch', PASSWD, GROUP)).toThrow(
      'unable to find group nosuch: no matching entries in group file',
    );
    expect(() => resolveUser('-1', PASSWD, GROUP)).toThrow(/out of range/);
    expect(() => resolveUser('2147483648', PASSWD, GROUP)).toThrow(/out of range/);
  });

  it('reads passwd and group like runc: blank lines skipped, CRLF trimmed, unparsable numbers as 0, missing files empty', () => {
    expect(parsePasswd('\n  \nweird:x:abc:7::/w:/bin/sh\r\nshort:x:5\n')).toEqual([
      { name: 'weird', uid: 0, gid: 7, home: '/w' },
      { name: 'short', uid: 5, gid: 0, home: '' },
    ]);
    expect(parseGroup('g:x:9:a,b\nh:x:10:\n')).toEqual([
      { name: 'g', gid: 9, members: ['a', 'b'] },
      { name: 'h', gid: 10, members: [] },
    ]);
    expect(resolveUser('77', [], [])).toEqual({ spec: '77', uid: 77, gid: 0, groups: [0], home: '/' });
    expect(resolveUser('', [], [])).toEqual({ spec: '', uid: 0, gid: 0, groups: [0], home: '/' });
  });
});

describe('the environment docker run gives', () => {
  const show = (env: ReturnType<typeof containerEnv>) => env.map((v) => `${v.name}=${v.value ?? '<hostname>'}`);
  it('PATH and HOSTNAME first, the image ENV in order (replacing in place), HOME last unless set', () => {
    expect(show(containerEnv([], '/root'))).toEqual([
      `PATH=${DOCKER_DEFAULT_PATH}`,
      'HOSTNAME=<hostname>',
      'HOME=/root',
    ]);
    expect(show(containerEnv(['A=1', 'PATH=/opt/bin', 'HOSTNAME=fixed', 'B=x=y'], '/h'))).toEqual([
      'PATH=/opt/bin',
      'HOSTNAME=fixed',
      'A=1',
      'B=x=y',
      'HOME=/h',
    ]);
    expect(show(containerEnv(['HOME=/custom', 'Z=1'], '/h'))).toEqual([
      `PATH=${DOCKER_DEFAULT_PATH}`,
      'HOSTNAME=<hostname>',
      'HOME=/custom',
      'Z=1',
    ]);
    // An empty HOME is no HOME (runc); a name twice keeps its first place and last value (runc sets them in turn).
    expect(show(containerEnv(['HOME=', 'A=1', 'A=2'], '/h'))).toEqual([
      `PATH=${DOCKER_DEFAULT_PATH}`,
      'HOSTNAME=<hostname>',
      'HOME=/h',
      'A=2',
    ]);
    // Without `=`, moby unsets a default.
    expect(show(containerEnv(['PATH'], '/'))).toEqual(['HOSTNAME=<hostname>', 'HOME=/']);
  });

  it('keeps every byte of a value, refuses what runc refuses', () => {
    const odd = [
      'S=two words',
      'Q=it\'s "q"',
      'D=$HOME ${X} $(id)',
      'P=%h %%',
      'N=line1\nline2',
      'E=',
      'dotted.name=1',
      'U=é✓',
    ];
    expect(show(containerEnv(odd, '/')).slice(2, -1)).toEqual(odd);
    expect(() => containerEnv(['=x'], '/')).toThrow(/name cannot be empty/);
    expect(() => containerEnv(['A=a\0b'], '/')).toThrow(/nul byte/);
  });
});

describe('STOPSIGNAL, HEALTHCHECK and the rest of the config', () => {
  it.each([
    [undefined, 15, 'SIGTERM'],
    ['SIGUSR1', 10, 'SIGUSR1'],
    ['usr1', 10, 'SIGUSR1'],
    ['10', 10, 'SIGUSR1'],
    ['SIGINT', 2, 'SIGINT'],
    ['SIGRTMIN+3', 37, 'SIGRTMIN+3'],
    ['RTMIN', 34, 'SIGRTMIN'],
    ['RTMAX', 64, 'SIGRTMIN+30'],
    ['rtmax-14', 50, 'SIGRTMIN+16'],
    ['SIGIOT', 6, 'SIGABRT'],
  ])('STOPSIGNAL %j is signal %i (%s)', (raw, n, name) => {
    expect(parseStopSignal(raw)).toEqual({ number: n, name });
  });

  it.each(['SIGFOO', '0', '65', 'RTMIN+16', 'RTMAX-15', 'RTMIN-1', 'constructor', ' SIGTERM'])(
    'STOPSIGNAL %j is refused, as Docker refuses it',
    (raw) => {
      expect(() => parseStopSignal(raw)).toThrow(/is not a signal/);
    },
  );

  it("HEALTHCHECK: CMD runs its words, CMD-SHELL the image's SHELL, NONE nothing; Docker's defaults for 0", () => {
    expect(planHealthcheck({ Healthcheck: { Test: ['CMD', 'curl', '-f', 'http://x/'] } })).toEqual({
      test: ['CMD', 'curl', '-f', 'http://x/'],
      argv: ['curl', '-f', 'http://x/'],
      intervalMs: 30_000,
      timeoutMs: 30_000,
      startPeriodMs: 0,
      retries: 3,
    });
    expect(
      planHealthcheck({
        Healthcheck: {
          Test: ['CMD-SHELL', 'test -f /ok'],
          Interval: 5e9,
          Timeout: 1.5e9,
          StartPeriod: 60e9,
          Retries: 7,
        },
      }),
    ).toMatchObject({
      argv: ['/bin/sh', '-c', 'test -f /ok'],
      intervalMs: 5000,
      timeoutMs: 1500,
      startPeriodMs: 60_000,
      retries: 7,
    });
    expect(
      planHealthcheck({ Shell: ['/bin/bash', '-eo', 'pipefail', '-c'], Healthcheck: { Test: ['CMD-SHELL', 'x | y'] } })
        ?.argv,
    ).toEqual(['/bin/bash', '-eo', 'pipefail', '-c', 'x | y']);
    expect(planHealthcheck({ Healthcheck: { Test: ['NONE'] } })).toBeUndefined();
    expect(planHealthcheck({ Healthcheck: { Test: ['SOMETHING', 'x'] } })).toBeUndefined();
    expect(planHealthcheck({})).toBeUndefined();
  });

  it('ignores base-image shells and inits as commands; combines ENTRYPOINT and CMD', () => {
    expect(appCommand({ Cmd: ['bash'] })).toBeUndefined();
    expect(appCommand({ Cmd: ['/bin/sh'] })).toBeUndefined();
    expect(appCommand({ Cmd: ['/sbin/init'] })).toBeUndefined();
    expect(appCommand({})).toBeUndefined();
    expect(appCommand({ Entrypoint: ['/app'], Cmd: ['--port', '80'] })).toEqual(['/app', '--port', '80']);
    expect(appCommand({ Entrypoint: ['bash'], Cmd: ['-c', 'x'] })).toEqual(['bash', '-c', 'x']);
    // Shell-form ENTRYPOINT: CMD's words become $0, $1... of the script, which ignores them (Docker's rule, by construction).
    expect(appCommand({ Entrypoint: ['/bin/sh', '-c', 'exec app'], Cmd: ['ignored'] })).toEqual([
      '/bin/sh',
      '-c',
      'exec app',
      'ignored',
    ]);
  });

  it('plans WORKDIR, EXPOSE and VOLUME as Docker reads them, and refuses what docker run refuses', () => {
    const accounts = { passwd: PASSWD, group: GROUP };
    const p = planRuntime(
      {
        Cmd: ['run'],
        WorkingDir: '/srv//app/',
        ExposedPorts: { '8080/tcp': {}, '53/udp': {} },
        Volumes: { '/data/': {}, rel: {}, '/data': {} },
        StopSignal: 'SIGQUIT',
      },
      accounts,
    );
    expect(p).toMatchObject({
      argv: ['run'],
      workdir: '/srv/app',
      exposedPorts: ['53/udp', '8080/tcp'],
      volumes: ['/data', '/rel'],
      stop: { number: 3, name: 'SIGQUIT', timeoutSeconds: 10 },
    });
    expect(planRuntime({ Cmd: ['run'] }, accounts).workdir).toBe('/');
    expect(planRuntime({ Cmd: ['run'], StopTimeout: -1 }, accounts).stop.timeoutSeconds).toBeNull();
    const none = planRuntime({ Cmd: ['bash'], User: 'nosuch' }, accounts);
    expect(none.argv).toBeUndefined();
    expect(none.skipped).toMatch(/no ENTRYPOINT/);
    expect(() => planRuntime({ Cmd: ['run'], User: 'nosuch' }, accounts)).toThrow(
      'docker run of this image would fail, and so would its service at boot: unable to find user nosuch: no matching entries in passwd file',
    );
    expect(() => planRuntime({ Cmd: ['run'], WorkingDir: 'rel' }, accounts)).toThrow(/needs to be an absolute path/);
    expect(() => planRuntime({ Cmd: ['run', 'a\0b'] }, accounts)).toThrow(/NUL/);
  });
});

// Words a user might put in ENV/CMD/WORKDIR that a careless shell or unit file would expand, split or execute.
const HOSTILE = [
  "it's",
  '$HOME',
  '${PATH}',
  '`touch PWNED-backtick`',
  '$(touch PWNED-subst)',
  'a b  c',
  'line1\nline2',
  '"dq"',
  '\\',
  '*',
  ';',
  '|',
  '&',
  '-n',
  '',
  '\t tab',
  '%h',
  '%%',
  '$$',
  '\\;',
  'é✓',
];

/** A plan as planRuntime makes it, for running kiln-exec and the runner on this host. */
function plan(p: Partial<RuntimePlan> & { argv: string[] }): RuntimePlan {
  return {
    workdir: '/',
    stop: { number: 15, name: 'SIGTERM', timeoutSeconds: 10 },
    exposedPorts: [],
    volumes: [],
    identity: { spec: '', uid: 0, gid: 0, groups: [0], home: '/root' },
    env: [
      { name: 'PATH', value: '/usr/bin:/bin' },
      { name: 'HOSTNAME', value: null },
      { name: 'HOME', value: '/root' },
    ],
    ...p,
  };
}

describe("kiln-exec (the Perl program that starts the image's program; run here as root)", () => {
  const dir = fresh('exec');
  const kilnExec = path.join(dir, 'kiln-exec');
  writeFileSync(kilnExec, KILN_EXEC_SOURCE, { mode: 0o755 });
  const probe = path.join(dir, 'bin', 'probe');
  mkdirSync(path.dirname(probe));
  writeFileSync(probe, PROBE_SCRIPT, { mode: 0o755 });

  /**
   * Runs kiln-exec through sh, which first ignores SIGINT/SIGPIPE, and before that signals 32 and 33 (glibc's own,
   * which its sigaction() will not touch; a CI run inherited an ignored 32): kiln-exec must undo all of it.
   */
  function exec(p: RuntimePlan, argv = p.argv!): { code: number | null; out: string; err: string } {
    const words = [kilnExec, ...execArgs(p, appNames(), argv)].map(shQuote).join(' ');
    const ignore3233 =
      'for my $s (32, 33) { my $a = pack("Q4", 1, 0, 0, 0); syscall(13, $s + 0, $a, 0, 8) == 0 or die "rt_sigaction: $!" } exec @ARGV or die';
    const r = spawnSync('perl', ['-e', ignore3233, 'sh', '-c', `trap '' INT PIPE; exec ${words} <&-`], {
      cwd: dir,
      env: { PATH: '/usr/bin:/bin', LEAK: 'x' },
      timeout: 20_000,
    });
    return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
  }
  const probed = (p: RuntimePlan, argv?: string[]) => {
    const r = exec(p, argv);
    expect(r.err).toBe('');
    return parseProbes(r.out).get('t')!;
  };

  it('is valid Perl that perl-base alone runs (no module outside it)', () => {
    expect(spawnSync('perl', ['-c', kilnExec]).stderr.toString()).toBe(`${kilnExec} syntax OK\n`);
    expect(KILN_EXEC_SOURCE).not.toMatch(/^\s*use (?!strict|warnings|POSIX)/m);
  });

  it('starts the program with exactly the given environment, in order, and argv[0] as given', () => {
    const env = [
      { name: 'PATH', value: `${path.dirname(probe)}:/usr/bin:/bin` },
      { name: 'HOSTNAME', value: null },
      { name: 'KILN_CASE', value: 't' },
      { name: 'KILN_PROBE_ONCE', value: '1' },
      ...HOSTILE.map((w, i) => ({ name: `V${i}`, value: w })),
      { name: 'dotted.name', value: 'ok' },
      { name: 'HOME', value: '/h' },
    ];
    const r = probed(plan({ argv: ['probe', ...HOSTILE], env }));
    expect(r.argv).toEqual(['/bin/sh', probe, ...HOSTILE]);
    const hostname = execFileSync('uname', ['-n']).toString().trim();
    expect(r.env).toEqual(env.map((v) => `${v.name}=${v.value ?? hostname}`));
    // A binary started by a bare name keeps that name as argv[0] (execvp would pass the path it found).
    const sh = exec(plan({ argv: ['sh', '-c', 'tr "\\0" " " </proc/$$/cmdline'] }));
    expect(sh.out).toBe('sh -c tr "\\0" " " </proc/$$/cmdline ');
    expect(execFileSync('find', [tmp.dir, '-name', 'PWNED*']).toString()).toBe('');
  });

  // Node hands its children sockets for stdio, as systemd does (the journal's stream): both must become pipes.
  it('stdout and stderr are pipes, as docker run gives them, so /dev/stdout and /dev/stderr open; the relay is not a child the program waits for', () => {
    const r = exec(
      plan({
        argv: [
          'sh',
          '-c',
          'echo out >/dev/stdout; echo err >/dev/stderr; readlink /proc/self/fd/1 /proc/self/fd/2 | cut -d: -f1; wait; echo waited',
        ],
      }),
    );
    expect(r).toEqual({ code: 0, out: 'out\npipe\npipe\nwaited\n', err: 'err\n' });
  });

  /**
   * kiln-exec started as systemd starts a unit's main process, with stdout and stderr on sockets (node's stdio pipes
   * are socket pairs, as the journal's stream is), in a cgroup of its own: once the main process has ended, whatever
   * is left in the group is killed at once, as systemd's final SIGKILL does under KillMode=mixed.
   */
  async function asUnit(
    argv: string[],
    poke?: (child: ReturnType<typeof spawn>, out: () => string) => Promise<void>,
  ): Promise<{ code: number | null; signal: string | null; out: string }> {
    const root = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
    const cg = path.join(root, `kiln-test-unit-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
    mkdirSync(cg);
    try {
      const words = [kilnExec, ...execArgs(plan({ argv }), appNames(), argv)];
      const child = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$@"`, 'sh', ...words], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
      const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
      const ended = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.on('exit', (code, signal) => {
          writeFileSync(path.join(cg, 'cgroup.kill'), '1');
          resolve({ code, signal });
        }),
      );
      await poke?.(child, () => out);
      const r = await ended;
      await closed;
      return { ...r, out };
    } finally {
      await until(() => readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim() === '');
      rmdirSync(cg);
    }
  }

  it("the unit's main process ends only after the program's last output is out, so the final SIGKILL of what is left cuts nothing", async () => {
    // 3 MB, then the last line: the pipes hold far less, so the end of it is still on its way when the program exits.
    const r = await asUnit(['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x; echo; echo LAST; exit 5']);
    expect(r.code).toBe(5);
    expect(r.out.length).toBe(3_000_006);
    expect(r.out.endsWith('x\nLAST\n')).toBe(true);
  });

  it("the main process passes signals on to the program (systemd's KillSignal reaches it) and ends as the program did", async () => {
    const trapped = await asUnit(
      ['sh', '-c', 'trap "echo got USR1; exit 7" USR1; echo ready; while :; do sleep 0.1; done'],
      async (child, out) => {
        await until(() => out().includes('ready\n'));
        child.kill('SIGUSR1');
      },
    );
    expect(trapped).toEqual({ code: 7, signal: null, out: 'ready\ngot USR1\n' });
    // Killed by a signal: the main process ends by the same signal, so systemd records the same result.
    expect(await asUnit(['sh', '-c', 'echo bye; kill -TERM $$'])).toEqual({
      code: null,
      signal: 'SIGTERM',
      out: 'bye\n',
    });
  });

  it('runs as uid, gid and exactly the groups given, with umask 022, default signals, its own session, stdin from /dev/null', () => {
    const env = [
      { name: 'PATH', value: '/usr/bin:/bin' },
      { name: 'KILN_CASE', value: 't' },
      { name: 'KILN_PROBE_ONCE', value: '1' },
    ];
    const r = probed(
      plan({
        argv: [probe],
        env,
        identity: { spec: '4242:4243', uid: 4242, gid: 4243, groups: [4243, 5000], home: '/' },
      }),
    );
    expect(r).toMatchObject({
      uid: '4242,4242,4242,4242',
      gid: '4243,4243,4243,4243',
      groups: '4243,5000',
      umask: '0022',
      sigIgn: '0000000000000000',
      sigBlk: '0000000000000000',
      leader: 'yes',
      stdin: '/dev/null',
    });
  });

  it('makes a missing WORKDIR (root, 0755) and enters it as root before dropping to the user', () => {
    const wd = path.join(fresh('wd'), 'made', 'deep');
    const env = [
      { name: 'KILN_CASE', value: 't' },
      { name: 'KILN_PROBE_ONCE', value: '1' },
    ];
    expect(probed(plan({ argv: [probe], env, workdir: wd })).cwd).toBe(wd);
    expect(statSync(wd).mode & 0o7777).toBe(0o755);
    expect(statSync(path.dirname(wd)).uid).toBe(0);
    // Like /root with USER app under Docker: entered as root, the program then runs as the user inside it.
    const closed = fresh('closed');
    execFileSync('chmod', ['0700', closed]);
    expect(
      probed(
        plan({
          argv: [probe],
          env,
          workdir: closed,
          identity: { spec: '1234', uid: 1234, gid: 0, groups: [0], home: '/' },
        }),
      ),
    ).toMatchObject({ cwd: closed, uid: '1234,1234,1234,1234' });
    const file = path.join(closed, 'file');
    writeFileSync(file, '');
    expect(exec(plan({ argv: [probe], workdir: file }))).toMatchObject({
      code: 126,
      err: `kiln-app: cannot start: Cannot mkdir: ${file} is not a directory\n`,
    });
  });

  it("looks the command up like Go's exec.LookPath, as the user, and fails like docker run", () => {
    const d = fresh('lookup');
    const put = (rel: string, text: string | Buffer, mode: number) => {
      mkdirSync(path.dirname(path.join(d, rel)), { recursive: true });
      writeFileSync(path.join(d, rel), text, { mode });
    };
    put('p1/tool', '#!/bin/sh\necho p1\n', 0o644); // no execute bit: skipped
    mkdirSync(path.join(d, 'p0/tool'), { recursive: true }); // a directory: skipped
    put('p2/tool', '#!/bin/sh\necho "p2 $0"\n', 0o755);
    put('closed/tool', '#!/bin/sh\necho closed\n', 0o755);
    execFileSync('chmod', ['0700', path.join(d, 'closed')]);
    put('wd/run.sh', '#!/bin/sh\necho "run $0"\n', 0o755);
    put('wd/noshebang', 'echo ran by a shell\n', 0o755);
    put('wd/xonly', readFileSync('/bin/true'), 0o711);
    put('wd/badinterp', '#!/nonexistent\n', 0o755);
    const run = (argv: string[], pathEnv: string, uid = 0) =>
      exec(
        plan({
          argv,
          workdir: path.join(d, 'wd'),
          env: [{ name: 'PATH', value: pathEnv }],
          identity: { spec: String(uid), uid, gid: 0, groups: [0], home: '/' },
        }),
      );
    expect(run(['tool'], `${d}/p0:${d}/p1:${d}/p2`).out).toBe(`p2 ${d}/p2/tool\n`);
    // Joined and cleaned like filepath.Join: the script sees the cleaned path as $0.
    expect(run(['tool'], `${d}//p2/`).out).toBe(`p2 ${d}/p2/tool\n`);
    expect(run(['tool'], `${d}/p2/../p2`).out).toBe(`p2 ${d}/p2/tool\n`);
    // A directory the user cannot search is skipped (runc looks up after dropping to the user).
    expect(run(['tool'], `${d}/closed:${d}/p2`, 1234).out).toBe(`p2 ${d}/p2/tool\n`);
    expect(run(['tool'], `${d}/closed:${d}/p2`, 0).out).toBe('closed\n');
    expect(run(['./run.sh'], '/usr/bin').out).toBe('run ./run.sh\n');
    // An execute-only binary: found and run by a user who cannot read it.
    expect(run(['xonly'], `${d}/wd`, 1234)).toMatchObject({ code: 0, err: '' });
    const fails: [string[], string, number, string][] = [
      [['run.sh'], '/usr/bin:/bin', 127, 'exec: "run.sh": executable file not found in $PATH'],
      [['run.sh'], '.:/usr/bin', 126, 'exec: "run.sh": cannot run executable found relative to current directory'],
      [['run.sh'], ':/usr/bin', 126, 'exec: "run.sh": cannot run executable found relative to current directory'],
      [['run.sh'], '', 127, 'exec: "run.sh": executable file not found in $PATH'],
      [['bin/nothere'], '/usr/bin', 127, 'exec: "bin/nothere": stat bin/nothere: no such file or directory'],
      [['./noshebang'], '/usr/bin', 126, 'exec ./noshebang: exec format error'],
      [['./badinterp'], '/usr/bin', 126, 'exec ./badinterp: no such file or directory'],
      [[''], '/usr/bin', 127, 'exec: "": executable file not found in $PATH'],
    ];
    for (const [argv, p, code, why] of fails)
      expect(run(argv, p), `${argv} PATH=${p}`).toMatchObject({
        code,
        out: '',
        err: `kiln-app: cannot start: ${why}\n`,
      });
  });
});

describe("HEALTHCHECK runs (kiln-exec --health): Docker's states, the status file, the restart", () => {
  const dir = fresh('health');
  const kilnExec = path.join(dir, 'kiln-exec');
  writeFileSync(kilnExec, KILN_EXEC_SOURCE, { mode: 0o755 });
  const status = path.join(dir, 'status.json');
  const consoleFile = path.join(dir, 'console');
  const names = { ...appNames(), statusFile: status };
  const check = (script: string, h: Partial<NonNullable<RuntimePlan['health']>>) => {
    const p = plan({
      argv: ['x'],
      health: {
        test: [],
        argv: ['/bin/sh', '-c', script],
        intervalMs: 0,
        timeoutMs: 5000,
        startPeriodMs: 0,
        retries: 2,
        ...h,
      },
    });
    const r = spawnSync(kilnExec, healthArgs(p, names, { console: consoleFile }), { env: {}, timeout: 30_000 });
    return {
      code: r.status,
      out: r.stdout.toString(),
      state: JSON.parse(readFileSync(status, 'utf8')) as {
        Status: string;
        FailingStreak: number;
        Log: { ExitCode: number; Output: string }[];
      },
    };
  };
  const reset = () => execFileSync(kilnExec, [`--health-reset=${status}`]);

  it('starting → healthy → unhealthy after `retries` failures in a row, which asks for a restart (exit 3)', () => {
    reset();
    expect(JSON.parse(readFileSync(status, 'utf8'))).toMatchObject({ Status: 'starting', FailingStreak: 0, Log: [] });
    let r = check('echo fine; echo "\\"quoted\\" \\\\ \x01"', {});
    expect(r.code).toBe(0);
    expect(r.state).toMatchObject({
      Status: 'healthy',
      FailingStreak: 0,
      Log: [{ ExitCode: 0, Output: 'fine\n"quoted" \\ \x01\n' }],
    });
    expect(r.out).toBe('kiln-app: health: healthy (exit 0)\n');
    r = check('echo bad >&2; exit 1', {});
    expect(r).toMatchObject({
      code: 0,
      state: { Status: 'healthy', FailingStreak: 1, Log: [{ ExitCode: 1, Output: 'bad\n' }] },
    });
    r = check('exit 7', {});
    expect(r).toMatchObject({ code: 3, state: { Status: 'unhealthy', FailingStreak: 2 } });
    expect(r.out).toBe('kiln-app: health: unhealthy (exit 7, 2 failed in a row), restarting it\n');
  });

  it('failures in the start period do not count until a check has passed; a check past its timeout is killed and fails', async () => {
    reset();
    for (let i = 0; i < 3; i++)
      expect(check('exit 1', { startPeriodMs: 600_000 }).state).toMatchObject({ Status: 'starting', FailingStreak: 0 });
    expect(check('exit 0', { startPeriodMs: 600_000 }).state.Status).toBe('healthy');
    expect(check('exit 1', { startPeriodMs: 600_000 }).state).toMatchObject({ Status: 'healthy', FailingStreak: 1 });
    const bg = path.join(dir, 'bg.pid');
    const r = check(`sleep 30 & echo $! > ${bg}; sleep 30`, { timeoutMs: 1000 });
    // The check's whole process group goes, its background child too (left to init, which reaps it).
    const pid = readFileSync(bg, 'utf8').trim();
    await until(() => {
      try {
        return / [ZX] \S+ \S+ \S+/.test(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)/s, ''));
      } catch {
        return true;
      }
    });
    expect(r).toMatchObject({
      code: 3,
      state: {
        Status: 'unhealthy',
        FailingStreak: 2,
        Log: [{ ExitCode: -1, Output: 'Health check exceeded timeout (1s)' }],
      },
    });
  });

  it('a call soon after a (re)start is not a check (systemd fires a restarted timer at once)', () => {
    reset();
    const r = check('exit 1', { intervalMs: 600_000 });
    expect(r).toMatchObject({ code: 0, out: '', state: { Status: 'starting', Log: [] } });
  });
});

describe('systemd units (runtime/systemd.ts)', () => {
  it('quotes every word so systemd neither splits nor expands it', () => {
    expect(systemdQuote('a b')).toBe('"a b"');
    expect(systemdQuote('$HOME %h "q" \\')).toBe('"$$HOME %%h \\"q\\" \\\\"');
    expect(systemdQuote('x\ny\x01')).toBe('"x\\ny\\x01"');
  });

  it('starts kiln-exec with the plan, stops like docker stop, and cannot be injected', () => {
    const p = plan({
      argv: ['/app', 'x\n[Service]\nExecStartPre=/bin/evil', '%h'],
      workdir: '/srv/a b',
      stop: { number: 10, name: 'SIGUSR1', timeoutSeconds: 25 },
    });
    const unit = appUnit(p, appNames());
    expect(unit).toContain(
      '\nExecStart=/usr/lib/kiln/kiln-exec "--name=kiln-app" "--workdir=/srv/a b" "--uid=0" "--gid=0" "--groups=0" ' +
        '"--env=PATH=/usr/bin:/bin" "--env-hostname" "--env=HOME=/root" "--" "/app" "x\\n[Service]\\nExecStartPre=/bin/evil" "%%h"\n',
    );
    expect(unit).toContain('\nKillMode=mixed\nKillSignal=SIGUSR1\nTimeoutStopSec=25\n');
    expect(unit).toContain('\nStandardInput=null\nStandardOutput=journal+console\nStandardError=journal+console\n');
    expect(unit.split('\n').filter((l) => /^(ExecStartPre|User|Group|Environment|WorkingDirectory)=/.test(l))).toEqual(
      [],
    );
  });

  it('HEALTHCHECK: a timer bound to the app, a oneshot check that restarts it, the state reset at each start', () => {
    const p = plan({
      argv: ['/app'],
      health: {
        test: ['CMD', 'check'],
        argv: ['check'],
        intervalMs: 1500,
        timeoutMs: 2000,
        startPeriodMs: 0,
        retries: 4,
      },
    });
    const unit = appUnit(p, appNames());
    expect(unit).toContain('\nWants=kiln-app-health.timer\n');
    expect(unit).toContain('\nExecStartPre=/usr/lib/kiln/kiln-exec "--health-reset=/run/kiln/kiln-app.health"\n');
    const u = healthUnits(p, appNames());
    expect(u.timer).toContain(
      '\nBindsTo=kiln-app.service\nAfter=kiln-app.service\n\n[Timer]\nOnActiveSec=1500ms\nOnUnitInactiveSec=1500ms\n',
    );
    expect(u.service).toContain(
      '\nExecStart=/usr/lib/kiln/kiln-exec "--health=/run/kiln/kiln-app.health" "--interval-ms=1500" "--timeout-ms=2000" "--start-period-ms=0" "--retries=4" "--restart-unit=kiln-app.service" "--name=kiln-app"',
    );
    expect(u.service).toContain('"--" "check"\n');
  });
});

/** Writes the runner with its console pointed at a file, runs it with sh (as this root user), returns the console text. */
function runRunner(
  p: RuntimePlan,
  dir: string,
  o: { signalAfterMs?: number; signal?: NodeJS.Signals } = {},
): Promise<{ code: number | null; out: string }> {
  const consoleFile = path.join(dir, 'console.log');
  const script = path.join(dir, 'app.sh');
  const kilnExec = path.join(dir, 'kiln-exec');
  writeFileSync(kilnExec, KILN_EXEC_SOURCE, { mode: 0o755 });
  writeFileSync(
    script,
    renderSysvRunner({
      plan: p,
      names: { ...appNames(), statusFile: path.join(dir, 'health.json') },
      console: consoleFile,
      kilnExec,
    }),
  );
  expect(spawnSync('sh', ['-n', script]).status).toBe(0);
  return new Promise((resolve) => {
    const c = spawn('sh', [script], { cwd: dir, stdio: 'ignore' });
    if (o.signalAfterMs !== undefined) setTimeout(() => c.kill(o.signal ?? 'SIGTERM'), o.signalAfterMs);
    c.on('close', (code) => resolve({ code, out: existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8') : '' }));
  });
}

describe('ENTRYPOINT/CMD on sysvinit (/etc/inittab + /etc/kiln/app.sh)', () => {
  it('quotes words for /bin/sh so they come back verbatim', () => {
    expect(shQuote('a b')).toBe("'a b'");
    expect(shQuote("it's")).toBe("'it'\\''s'");
    expect(shQuote('$(x) `y`')).toBe("'$(x) `y`'");
    expect(shQuote('')).toBe("''");
    expect(() => shQuote('a\0b')).toThrow();
    for (const w of HOSTILE) expect(execFileSync('sh', ['-c', `printf %s ${shQuote(w)}`]).toString()).toBe(w);
  });

  it('the runner passes hostile argv, ENV and WORKDIR through untouched', async () => {
    const dir = fresh('runner');
    const wd = path.join(dir, "w 'q' $(touch PWNED-wd) `id`\nx");
    mkdirSync(wd);
    const env = [{ name: 'PATH', value: '/usr/bin:/bin' }, ...HOSTILE.map((w, i) => ({ name: `V${i}`, value: w }))];
    const { code, out } = await runRunner(
      plan({
        argv: ['/bin/sh', '-c', 'printf "pwd=[%s]\\n" "$(pwd)"; printf "arg=[%s]\\n" "$@"', 'sh', ...HOSTILE],
        env,
        workdir: wd,
      }),
      dir,
    );
    expect(code).toBe(0);
    expect(out.startsWith(`kiln-app: started as root (uid 0 gid 0) in ${wd}\n`)).toBe(true);
    expect(out).toContain(`pwd=[${wd}]\n`);
    expect(out).toContain(HOSTILE.map((w) => `arg=[${w}]\n`).join(''));
    expect(out).toContain('kiln-app: exited with status 0, not restarted');
    expect(execFileSync('find', [tmp.dir, '-name', 'PWNED*']).toString()).toBe('');
  });

  it('restarts the program after a failure (2 s later) and stops after a clean exit', async () => {
    const dir = fresh('restart');
    const counter = path.join(dir, 'runs');
    const script = `echo x >> ${shQuote(counter)}; [ "$(wc -l < ${shQuote(counter)})" -ge 2 ] || exit 3; echo second run ok`;
    const t0 = Date.now();
    const r = await runRunner(plan({ argv: ['/bin/sh', '-c', script] }), dir);
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    expect(r.out.replace(/kiln-app: started as root \(uid 0 gid 0\) in \//g, 'STARTED')).toBe(
      'STARTED\nkiln-app: exited with status 3, restarting in 2 s\nSTARTED\nsecond run ok\nkiln-app: exited with status 0, not restarted\n',
    );
  });

  it('when init stops the entry (SIGTERM), the program gets its STOPSIGNAL alone and is not restarted', async () => {
    const dir = fresh('stop');
    const script =
      'trap "echo got USR1; exit 0" USR1; trap "echo got TERM; exit 0" TERM; echo up; while :; do sleep 0.1; done';
    const r = await runRunner(
      plan({ argv: ['/bin/sh', '-c', script], stop: { number: 10, name: 'SIGUSR1', timeoutSeconds: 10 } }),
      dir,
      { signalAfterMs: 1500 },
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^kiln-app: started as root .*\nup\ngot USR1\n$/);
  });

  it('HEALTHCHECK: after `retries` failed checks the runner stops the program with its STOPSIGNAL and starts it again', async () => {
    const dir = fresh('health-runner');
    const runs = path.join(dir, 'runs');
    // The program counts its starts; the check fails while it is on its first run, passes on the second.
    const app = `echo run >> ${shQuote(runs)}; trap "echo stopped; exit 0" TERM; while :; do sleep 0.1; done`;
    const hc = `[ "$(wc -l < ${shQuote(runs)})" -ge 2 ]`;
    const p = plan({
      argv: ['/bin/sh', '-c', app],
      health: {
        test: ['CMD-SHELL', hc],
        argv: ['/bin/sh', '-c', hc],
        intervalMs: 300,
        timeoutMs: 5000,
        startPeriodMs: 0,
        retries: 2,
      },
    });
    const r = await runRunner(p, dir, { signalAfterMs: 6000 });
    expect(r.out).toMatch(
      /^kiln-app: started as root .*\nkiln-app: health: unhealthy \(exit 1, 2 failed in a row\), restarting it\nstopped\n/,
    );
    expect(r.out).toMatch(
      /\nkiln-app: restarted after failed health checks\nkiln-app: started as root .*\nkiln-app: health: healthy \(exit 0\)\nstopped\n$/,
    );
    expect(readFileSync(runs, 'utf8')).toBe('run\nrun\n');
    expect(JSON.parse(readFileSync(path.join(dir, 'health.json'), 'utf8'))).toMatchObject({
      Status: 'healthy',
      FailingStreak: 0,
    });
  });

  const DEBIAN_INITTAB =
    'id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\nl2:2:wait:/etc/init.d/rc 2\n1:2345:respawn:/sbin/getty --noclear 38400 tty1\n#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n';

  it('edits /etc/inittab idempotently: keygen after rcS, serial getty once, app entry last', () => {
    const app = appNames();
    const once = editInittab(DEBIAN_INITTAB, { app, serialGetty: true, sshKeygen: true });
    expect(once.text).toBe(
      'id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\nkssh::sysinit:/usr/bin/ssh-keygen -A\nl2:2:wait:/etc/init.d/rc 2\n' +
        '1:2345:respawn:/sbin/getty --noclear 38400 tty1\n#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n' +
        'kS0:2345:respawn:/sbin/getty -L ttyS0 115200 vt102\nkapp:2345:once:/etc/kiln/app.sh\n',
    );
    expect(editInittab(once.text, { app, serialGetty: true, sshKeygen: true }).text).toBe(once.text);
    expect(editInittab(once.text, { app: appNames('c07') }).text).toBe(`${once.text}kc07:2345:once:/etc/kiln/c07.sh\n`);
    // An image that already runs a getty on the serial port keeps its own.
    const own = 'si::sysinit:/etc/init.d/rcS\nT0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n';
    expect(editInittab(own, { serialGetty: true })).toEqual({ text: own, added: [] });
  });

  /** A fake root filesystem with what decides the init: /usr/sbin/init, /etc/inittab, systemd, perl, sshd. */
  function fakeRoot(o: {
    init: 'sysvinit' | 'systemd';
    osRelease?: string;
    systemdBinary?: boolean;
    perl?: boolean;
  }): string {
    const root = fresh(`root-${o.init}`);
    for (const d of ['usr/sbin', 'usr/bin', 'usr/lib/systemd', 'etc/ssh', 'etc/apt/apt.conf.d'])
      mkdirSync(path.join(root, d), { recursive: true });
    symlinkSync('usr/sbin', path.join(root, 'sbin'));
    if (o.init === 'sysvinit') {
      writeFileSync(path.join(root, 'usr/sbin/init'), '\x7fELF...INIT_VERSION=sysvinit-3.06...');
      writeFileSync(path.join(root, 'etc/inittab'), DEBIAN_INITTAB);
    } else {
      symlinkSync('../lib/systemd/systemd', path.join(root, 'usr/sbin/init'));
    }
    if (o.init === 'systemd' || o.systemdBinary) writeFileSync(path.join(root, 'usr/lib/systemd/systemd'), 'ELF');
    if (o.perl !== false) writeFileSync(path.join(root, 'usr/bin/perl'), 'ELF');
    writeFileSync(path.join(root, 'usr/bin/ssh-keygen'), 'ELF');
    writeFileSync(path.join(root, 'usr/sbin/sshd'), 'ELF');
    writeFileSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'), 'SECRET');
    writeFileSync(path.join(root, 'etc/os-release'), o.osRelease ?? 'ID=debian\n');
    writeFileSync(
      path.join(root, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/sh\n',
    );
    writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n');
    return root;
  }

  it('Devuan (sysvinit-core added by bootPackages) gets the inittab path, getty and keygen, once, even with a systemd binary present', async () => {
    const os = parseOsRelease('PRETTY_NAME="Devuan GNU/Linux 5 (daedalus)"\nID=devuan\nID_LIKE=debian\n');
    expect(bootPackages(os)).toContain('sysvinit-core');
    const root = fakeRoot({ init: 'sysvinit', osRelease: 'ID=devuan\nID_LIKE=debian\n', systemdBinary: true });
    expect(await initKind(root)).toBe('sysvinit');
    const cfg: ImageRuntimeConfig = {
      Entrypoint: ['/app'],
      Cmd: ["it's $(id)"],
      Env: ['A=1'],
      WorkingDir: '/srv',
      User: 'app',
    };
    for (let i = 0; i < 2; i++) {
      await finishRootfs(root, quiet());
      expect(await resetSshHostKeys(root, quiet())).toMatch(/ssh-keygen -A/);
      const app = await applyImageConfig(root, cfg, quiet());
      expect(app.notes.join('\n')).toContain('/etc/inittab entry kapp starts /etc/kiln/app.sh');
      expect(app.boot?.expect.map(String)).toEqual(['/kiln-app: started as /']);
      expect(app.runtime).toMatchObject({
        service: { init: 'sysvinit', runner: '/etc/kiln/app.sh' },
        user: { spec: 'app', uid: 1000, gid: 1000, groups: [1000, 2000] },
      });
    }
    const inittab = readFileSync(path.join(root, 'etc/inittab'), 'utf8');
    expect(inittab).toBe(editInittab(DEBIAN_INITTAB, { app: appNames(), serialGetty: true, sshKeygen: true }).text);
    const runner = path.join(root, 'etc/kiln/app.sh');
    expect(statSync(runner).mode & 0o777).toBe(0o755);
    expect(readFileSync(runner, 'utf8')).toContain(`'--' '/app' 'it'\\''s $(id)' &\n`);
    expect(readFileSync(path.join(root, 'usr/lib/kiln/kiln-exec'), 'utf8')).toBe(KILN_EXEC_SOURCE);
    expect(statSync(path.join(root, 'usr/lib/kiln/kiln-exec')).mode & 0o777).toBe(0o755);
    expect(existsSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'))).toBe(false);
    expect(existsSync(path.join(root, 'etc/systemd/system/kiln-app.service'))).toBe(false);
  });

  it('systemd images get the units; an inittab that is a link is never followed; an image without perl is refused', async () => {
    const sd = fakeRoot({ init: 'systemd' });
    expect(await initKind(sd)).toBe('systemd');
    const app = await applyImageConfig(
      sd,
      { Cmd: ['/app'], Healthcheck: { Test: ['CMD', 'true'] }, Volumes: { '/data': {}, '/etc': {} } },
      quiet(),
    );
    expect(app.notes.join('\n')).toContain('kiln-app.service');
    expect(app.runtime).toMatchObject({
      service: {
        init: 'systemd',
        unit: 'kiln-app.service',
        healthcheck: { timer: 'kiln-app-health.timer', statusFile: '/run/kiln/kiln-app.health' },
      },
      volumes: [
        { path: '/data', state: 'created (root, 0755)' },
        { path: '/etc', state: 'in the image' },
      ],
    });
    expect(statSync(path.join(sd, 'data')).mode & 0o7777).toBe(0o755);
    expect(
      lstatSync(path.join(sd, 'etc/systemd/system/multi-user.target.wants/kiln-app.service')).isSymbolicLink(),
    ).toBe(true);
    expect(existsSync(path.join(sd, 'etc/systemd/system/kiln-app-health.timer'))).toBe(true);
    expect(existsSync(path.join(sd, 'etc/kiln/app.sh'))).toBe(false);
    const evil = fakeRoot({ init: 'sysvinit' });
    const outside = path.join(fresh('outside'), 'inittab');
    writeFileSync(outside, 'host file\n');
    execFileSync('rm', [path.join(evil, 'etc/inittab')]);
    symlinkSync(outside, path.join(evil, 'etc/inittab'));
    expect(await initKind(evil)).toBeUndefined();
    await finishRootfs(evil, quiet());
    expect((await applyImageConfig(evil, { Cmd: ['/app'] }, quiet())).notes.join('\n')).toMatch(
      /no service was created/,
    );
    expect(readFileSync(outside, 'utf8')).toBe('host file\n');
    await expect(
      applyImageConfig(fakeRoot({ init: 'systemd', perl: false }), { Cmd: ['/app'] }, quiet()),
    ).rejects.toThrow(/no \/usr\/bin\/perl/);
  });
});
