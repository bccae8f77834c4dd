import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidFileOf, takeResidentLock } from '../../src/glue/resident/place.js';
import { fakeSpec, kilnSnapshot, stopResident } from '../helpers/glue.js';
import { glueEnv, startJenkinsDouble, type JenkinsDouble } from '../jenkins-double/index.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/**
 * The OpenSSH door's fast path: bin/kiln hands `kiln glue` requests to bin/kiln-glue-forward when KILN_GLUE_SOCKET
 * is set, which relays them to the resident glue (`kiln glue serve`) or runs them in-process. These tests run the
 * forced command as sshd would (request in SSH_ORIGINAL_COMMAND, body on stdin); test/glue/openssh.test.ts runs the
 * door table through a real sshd and the resident. Which path answered is read from the audit log: the resident's
 * lines carry `resident: true`, an in-process run after a forwarder's refusal carries `forwardFallback: <why>`.
 */

const NOBODY = 65534;
let KILN = '';
const snap = tempDir('kiln-resident-bin-');
beforeAll(async () => {
  KILN = await kilnSnapshot(snap.dir);
});
afterAll(() => snap.cleanup());

interface Place {
  dir: string;
  data: string;
  socket: string;
}
let p: Place;
let tmp: ReturnType<typeof tempDir>;
beforeEach(() => {
  tmp = tempDir('kiln-resident-');
  p = { dir: tmp.dir, data: path.join(tmp.dir, 'data'), socket: path.join(tmp.dir, 'run', 'glue.sock') };
});
afterEach(async () => {
  await stopResident(p.socket);
  tmp.cleanup();
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
interface Req {
  command?: string;
  /** The command as printf(1) writes it (octal escapes: bytes no JS string can carry into an environment). */
  printf?: string;
  stdin?: string | Buffer;
  env?: Record<string, string>;
  /** Leave KILN_GLUE_SOCKET unset: today's in-process door. */
  inProcess?: boolean;
  /** Another launcher than the test's (bin/kiln itself). */
  bin?: string;
}

function spawnGlue(req: Req) {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, KILN_DATA_DIR: p.data, ...req.env };
  if (!req.inProcess) env.KILN_GLUE_SOCKET = p.socket;
  if (req.command !== undefined) env.SSH_ORIGINAL_COMMAND = req.command;
  const [cmd, args] =
    req.printf === undefined
      ? [req.bin ?? KILN, ['glue']]
      : [
          '/bin/sh',
          [
            '-c',
            'SSH_ORIGINAL_COMMAND=$(printf "$0"; echo .); export SSH_ORIGINAL_COMMAND="${SSH_ORIGINAL_COMMAND%.}"; exec "$1" glue',
            req.printf,
            KILN,
          ],
        ];
  return spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
}

function glue(req: Req): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawnGlue(req);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.stdin.on('error', () => undefined); // a refused body is not read to its end
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(req.stdin ?? '');
  });
}

const audit = () =>
  existsSync(path.join(p.data, 'glue', 'audit.log'))
    ? readFileSync(path.join(p.data, 'glue', 'audit.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.audit)
    : [];
const lastAudit = () => audit().at(-1);
const residentPid = () => {
  try {
    return Number(readFileSync(pidFileOf(p.socket), 'utf8'));
  } catch {
    return undefined;
  }
};
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

/** Sends requests until one is served by a resident (the first ones start it and run in-process); its pid. */
async function residentUp(env: Record<string, string> = {}): Promise<number> {
  await until(async () => {
    const r = await glue({ command: 'ping', env });
    expect(r.code).toBe(0);
    return lastAudit()?.resident === true;
  });
  return residentPid()!;
}

describe('the resident glue behind the OpenSSH forced command', () => {
  it('with none running, a request runs in-process and starts one; the next go to it, in a 0700 directory', async () => {
    const first = await glue({ command: 'ping' });
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ protocol: 1, backend: 'local' });
    expect(lastAudit()).toMatchObject({ verb: 'ping', outcome: 'ok', forwardFallback: 'no socket directory yet' });

    const pid = await residentUp();
    const r = await glue({ command: 'build.status 4 1' });
    expect(r).toEqual({ code: 3, stdout: '', stderr: '{"error":{"code":"not_found","message":"No such job"}}\n' });
    expect(lastAudit()).toMatchObject({ door: 'openssh', verb: 'build.status', outcome: 'not_found', resident: true });
    expect(lastAudit()!.pid).toBe(pid);
    expect(lstatSync(path.dirname(p.socket)).mode & 0o777).toBe(0o700);
    expect(lstatSync(p.socket).isSocket()).toBe(true);
    expect(lstatSync(p.socket).mode & 0o777).toBe(0o600);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toEqual(
      expect.arrayContaining(['glue', 'serve', '--on-demand']),
    );
  });

  it('a resident killed outright leaves its socket: the next request runs in-process and a new resident takes over', async () => {
    const pid = await residentUp();
    process.kill(pid, 'SIGKILL');
    await until(() => !alive(pid));
    expect(lstatSync(p.socket).isSocket()).toBe(true); // a dead resident's socket, nobody listening

    const r = await glue({ command: 'ping' });
    expect(r.code).toBe(0);
    // Nobody listens at the dead one's socket, unless a second on-demand resident (residentUp's pings can race and
    // spawn two; the second waits for the lock) is taking over in that instant and drops the connection: either way
    // the request runs in-process, once. (Seen once in a full run: "closed the connection"; why the successor drops
    // it rather than answering is not yet understood.)
    expect(lastAudit()).toMatchObject({
      verb: 'ping',
      forwardFallback: expect.stringMatching(/no resident glue answers|the resident glue closed the connection/),
    });
    const next = await residentUp();
    expect(next).not.toBe(pid);
  });

  it('a forwarder that finds nobody listening starts no resident while another holds the lock (one starting, say)', async () => {
    // A `node` first on the PATH that notes each start: `glue serve` in it is the forwarder starting a resident.
    const shim = path.join(p.dir, 'shim');
    const log = path.join(p.dir, 'node-starts');
    mkdirSync(shim);
    writeFileSync(path.join(shim, 'node'), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${process.execPath}' "$@"\n`, {
      mode: 0o755,
    });
    const starts = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
    // bin/kiln itself: the test launcher would put the real node first on the PATH.
    const run = () =>
      glue({
        command: 'ping',
        bin: path.join(path.dirname(KILN), 'bin', 'kiln'),
        env: { PATH: `${shim}:/usr/bin:/bin` },
      });
    mkdirSync(path.dirname(p.socket), { mode: 0o700 });
    const lock = await takeResidentLock(path.dirname(p.socket));
    expect(lock).toBeDefined();
    try {
      expect((await run()).code).toBe(0);
      expect(lastAudit()).toMatchObject({ forwardFallback: expect.stringMatching(/no resident glue answers/) });
      expect(starts()).toHaveLength(1); // the in-process run, and no `glue serve`
      expect(starts()[0]).toMatch(/kiln\.js glue$/);
    } finally {
      await new Promise((r) => lock!.close(r));
    }
    // The lock free, the same request starts one.
    expect((await run()).code).toBe(0);
    await until(() => starts().some((l) => l.endsWith('kiln.js glue serve --on-demand')));
    await until(() => existsSync(pidFileOf(p.socket))); // up, for afterEach to stop: not left starting in a removed directory
  });

  it('a request with other settings (an edited wrapper, a rewritten secret file) runs in-process, and the old resident steps aside', async () => {
    const secret = path.join(p.dir, 'token');
    writeFileSync(secret, 'one');
    const env = { KILN_GLUE_JENKINS_TOKEN_FILE: secret };
    const pid = await residentUp(env);

    const edited = await glue({ command: 'ping', env: { ...env, KILN_LOG_LEVEL: 'debug' } });
    expect(edited.code).toBe(0);
    expect(lastAudit()).toMatchObject({ forwardFallback: 'the resident glue runs with other settings' });
    await until(() => !alive(pid)); // started on demand: it stops, so the next request starts one with the new settings

    const second = await residentUp(env);
    writeFileSync(secret, 'rotated');
    const rotated = await glue({ command: 'ping', env });
    expect(rotated.code).toBe(0);
    expect(lastAudit()).toMatchObject({ forwardFallback: 'the resident glue runs with other settings' });
    await until(() => !alive(second));
  });

  it('case 26: answers and refuses exactly as the in-process glue does (odd bytes, long lines, bad and oversized bodies)', async () => {
    await residentUp();
    const cases: Req[] = [
      { command: 'ping' },
      { command: '' },
      { command: 'job.put 7; id' },
      { command: 'job.build 5 $(id)' },
      { command: 'job.build 5\nid' },
      { command: 'ping\tx' },
      { command: `job.get ${'1'.repeat(300)}` },
      { command: `build.log 1 1 ${'é'.repeat(120)}` },
      { printf: 'ping\\377' },
      { printf: 'job.get \\342\\200\\256 1' },
      { command: 'job.put 8' },
      { command: 'job.put 8', stdin: 'FROM debian' },
      { command: 'job.put 8', stdin: Buffer.from([0xff, 0xfe, 0x7b]) },
      { command: 'job.put 8', stdin: JSON.stringify({ ...fakeSpec(), shell: 'id' }) },
      { command: 'job.put 8', stdin: Buffer.alloc(25 * 1024 * 1024, 0x20) },
      { command: 'job.put 8', stdin: JSON.stringify(fakeSpec()) },
      { command: 'job.put 8', stdin: JSON.stringify(fakeSpec()) },
      { command: 'job.build 8 same-key-0001' },
      { command: 'job.build 8 same-key-0001' },
      { command: 'build.artifact 8 1 image.raw' },
      { command: 'build.artifact 8 1 ../../etc/passwd' },
      { command: 'job.delete 8' },
      { command: 'job.delete 8' },
    ];
    const results: Array<[string, Result, Result]> = [];
    for (const c of cases) {
      const viaResident = await glue(c);
      expect(lastAudit()?.resident, JSON.stringify(c.command ?? c.printf)).toBe(true);
      // The same request again in-process, on a data directory in the state the first left: job.put and job.delete
      // are idempotent, so their second run answers as the first would have had it run in-process.
      const inProcess = await glue({ ...c, inProcess: true });
      results.push([String(c.command ?? c.printf).slice(0, 40), viaResident, inProcess]);
    }
    for (const [name, a, b] of results) {
      if (name.startsWith('job.put 8') || name.startsWith('job.build 8') || name.startsWith('job.delete 8'))
        expect({ code: a.code, stderr: a.stderr }, name).toEqual({ code: b.code, stderr: b.stderr });
      else expect(a, name).toEqual(b);
    }
    const byName = Object.fromEntries(results.map(([n, a]) => [n, a]));
    expect(byName['ping\\377']).toMatchObject({ code: 2 });
    expect(JSON.parse(results[14]![1].stderr)).toMatchObject({ error: { code: 'too_large' } });
    expect(results[15]![1]).toMatchObject({ code: 0, stdout: '{"job":8,"created":true}\n' });
    expect(results[16]![1]).toMatchObject({ code: 0, stdout: '{"job":8,"created":false}\n' });
    expect(results[19]![1]).toMatchObject({ code: 3 }); // no artifact: the build is only queued (no runner here)
    expect(readFileSync(path.join(p.data, 'glue', 'audit.log'), 'utf8')).not.toContain('FROM debian');
  });

  it('serves concurrent requests, each its own answer, all from one resident', async () => {
    const pid = await residentUp();
    expect((await glue({ command: 'job.put 3', stdin: JSON.stringify(fakeSpec()) })).code).toBe(0);
    const before = audit().length;
    const builds = Array.from({ length: 12 }, (_, i) => glue({ command: `job.build 3 concurrent-key-${i}` }));
    const statuses = Array.from({ length: 12 }, () => glue({ command: 'job.get 3' }));
    const [b, s] = await Promise.all([Promise.all(builds), Promise.all(statuses)]);
    const numbers = b.map((r) => {
      expect(r.code).toBe(0);
      const reply = JSON.parse(r.stdout) as { job: number; build: number; created: boolean };
      expect(reply).toMatchObject({ job: 3, created: true });
      return reply.build;
    });
    expect(numbers.sort((x, y) => x - y)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    for (const r of s) expect(JSON.parse(r.stdout)).toMatchObject({ job: 3, enabled: true });
    const served = audit().slice(before);
    expect(served).toHaveLength(24);
    expect(served.every((l) => l.resident === true && l.pid === pid)).toBe(true);
  });

  it('a resident that dies holding a request: the caller gets backend_unavailable (exit 5), and nothing runs twice', async () => {
    const pid = await residentUp();
    const child = spawnGlue({ command: 'job.put 9' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.stdin.on('error', () => undefined);
    const closed = new Promise<number | null>((r) => child.on('close', r));
    // A body bigger than a pipe holds: once it has drained, the forwarder is reading stdin, which it does only after
    // the resident took the request.
    const drained = child.stdin.write(`{"owner":"alice","name":"${'x'.repeat(1024 * 1024)}`);
    if (!drained) await new Promise((r) => child.stdin.once('drain', r));
    process.kill(pid, 'SIGKILL');
    expect(await closed).toBe(5);
    expect(stdout).toBe('');
    expect(JSON.parse(stderr)).toEqual({
      error: { code: 'backend_unavailable', message: 'The glue stopped before it answered; try again' },
    });
    child.stdin.destroy();
    expect(audit().filter((l) => l.verb === 'job.put')).toEqual([]); // not answered, and not run again in-process
    expect(existsSync(path.join(p.data, 'glue', 'jobs', 'kiln-job-9'))).toBe(false);
  });

  it('a resident that does not take the request (stopped) is bypassed after the wait: the request runs in-process', async () => {
    const pid = await residentUp();
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await glue({ command: 'job.get 4' });
      expect(r).toMatchObject({ code: 3, stdout: '' });
      expect(lastAudit()).toMatchObject({
        verb: 'job.get',
        forwardFallback: 'the resident glue did not take the request in time',
      });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('a socket directory open to other users, or theirs, is never used: requests run in-process, no resident starts', async () => {
    const run = path.dirname(p.socket);
    mkdirSync(run, { mode: 0o755 });
    chmodSync(run, 0o755);
    const open = await glue({ command: 'ping' });
    expect(open.code).toBe(0);
    expect(lastAudit()).toMatchObject({ forwardFallback: 'the socket directory is open to other users' });
    const serveOpen = await serve(['--socket', p.socket]);
    expect(serveOpen).toMatchObject({ code: 2, stderr: expect.stringMatching(/open to other users: .*chmod 700/) });

    chmodSync(run, 0o700);
    chownSync(run, NOBODY, NOBODY);
    const theirs = await glue({ command: 'ping' });
    expect(theirs.code).toBe(0);
    expect(lastAudit()).toMatchObject({ forwardFallback: "the socket directory is not the glue user's" });
    const serveTheirs = await serve(['--socket', p.socket]);
    expect(serveTheirs).toMatchObject({ code: 2, stderr: expect.stringMatching(/not the glue user's/) });
    expect(existsSync(pidFileOf(p.socket))).toBe(false);
  });

  it("the forwarder checks the resident's uid (SO_PEERCRED): another user's listener at the socket gets no byte", async () => {
    // Another user's process listening in its own directory; its socket is then moved to where ours would be.
    const theirs = mkdtempSync(path.join(os.tmpdir(), 'kiln-resident-other-'));
    try {
      chownSync(theirs, NOBODY, NOBODY);
      const impostor = spawn(
        process.execPath,
        [
          '-e',
          `const s = require('net').createServer((c) => { let n = 0; console.log('conn');
             c.on('error', () => {}); c.on('data', (d) => { n += d.length; }); c.on('close', () => console.log('bytes ' + n)); c.write('A\\0\\0\\0\\0'); });
           s.listen(process.argv[1], () => console.log('listening'));`,
          path.join(theirs, 's.sock'),
        ],
        { uid: NOBODY, gid: NOBODY, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let said = '';
      impostor.stdout.on('data', (c: Buffer) => (said += c));
      try {
        await until(() => said.includes('listening'));
        mkdirSync(path.dirname(p.socket), { mode: 0o700 });
        renameSync(path.join(theirs, 's.sock'), p.socket);
        const r = await glue({ command: 'ping' });
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({ protocol: 1 });
        expect(lastAudit()).toMatchObject({ forwardFallback: `the socket's peer runs as uid ${NOBODY}, not 0` });
        await until(() => said.includes('bytes'));
        expect(said).toContain('conn\nbytes 0\n');
      } finally {
        impostor.kill();
      }
    } finally {
      rmSync(theirs, { recursive: true, force: true });
    }
  });

  it('another user cannot reach the resident: connect() to the socket in its 0700 directory is refused', async () => {
    // The socket's parent is open to all (0711), so only the resident's own 0700 directory stands in the way.
    chmodSync(p.dir, 0o711);
    await residentUp();
    const probe = spawn(
      process.execPath,
      [
        '-e',
        `require('net').connect(process.argv[1]).on('connect', () => { console.log('connected'); process.exit(0); })
           .on('error', (e) => { console.log(e.code); process.exit(0); });`,
        p.socket,
      ],
      { uid: NOBODY, gid: NOBODY, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    probe.stdout.on('data', (c: Buffer) => (out += c));
    await new Promise((r) => probe.on('close', r));
    expect(out.trim()).toBe('EACCES');
  });

  it('case 35: against a Jenkins it refuses, the resident answers every request with the reason, as in-process; then serves once Jenkins is fixed', async () => {
    const user = { name: 'kiln-glue', token: 'glue-api-token-0123' };
    const old = await startJenkinsDouble({ users: [user], version: '2.555.2' });
    let fixed: JenkinsDouble | undefined;
    try {
      const env = glueEnv(old, user, ['/bin/false']);
      const refusal = {
        code: 5,
        stdout: '',
        stderr: expect.stringMatching(/^\{"error":\{"code":"backend_unavailable","message":"Jenkins 2.555.2 is older/),
      };
      expect(await glue({ command: 'jobs.list', env })).toMatchObject(refusal); // in-process; starts the resident
      await until(() => existsSync(pidFileOf(p.socket)));
      const viaResident = await glue({ command: 'jobs.list', env });
      expect(viaResident).toMatchObject(refusal);
      expect(lastAudit()).toMatchObject({ resident: true, outcome: 'backend_unavailable' });
      expect(viaResident).toEqual(await glue({ command: 'jobs.list', env, inProcess: true }));
      // Jenkins upgraded on the same address: the same resident now starts its backend and answers.
      const port = old.port;
      await old.stop();
      fixed = await startJenkinsDouble({ users: [user], port });
      const served = await glue({ command: 'jobs.list', env });
      expect(served).toEqual({ code: 0, stdout: '{"jobs":[]}\n', stderr: '' });
      expect(lastAudit()).toMatchObject({ resident: true, outcome: 'ok' });
    } finally {
      await (fixed ?? old).stop();
    }
  });

  it('kiln glue serve (supervised): one per socket, kept when a request brings other settings, gone on SIGTERM', async () => {
    // Started as a service would be, with the forced command's settings (KILN_GLUE_SOCKET among them).
    const env = { PATH: process.env.PATH, KILN_DATA_DIR: p.data, KILN_GLUE_SOCKET: p.socket };
    const resident = spawn(KILN, ['glue', 'serve'], { env, stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => resident.on('close', r));
    try {
      await until(() => existsSync(pidFileOf(p.socket)));
      expect(await serve(['--socket', p.socket])).toEqual({
        code: 0,
        stderr: `kiln glue serve: another resident glue serves ${p.socket}\n`,
      });
      expect((await glue({ command: 'ping' })).code).toBe(0);
      expect(lastAudit()).toMatchObject({ resident: true, pid: resident.pid });
      expect((await glue({ command: 'ping', env: { KILN_LOG_LEVEL: 'debug' } })).code).toBe(0);
      expect(lastAudit()).toMatchObject({ forwardFallback: 'the resident glue runs with other settings' });
      // Not started on demand: it stays (an operator's service), and serves requests with its settings.
      expect((await glue({ command: 'ping' })).code).toBe(0);
      expect(lastAudit()).toMatchObject({ resident: true, pid: resident.pid });
    } finally {
      resident.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(existsSync(p.socket)).toBe(false);
    expect(existsSync(pidFileOf(p.socket))).toBe(false);
  });
});

function serve(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(KILN, ['glue', 'serve', ...args], {
      env: { PATH: process.env.PATH, KILN_DATA_DIR: p.data },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}
