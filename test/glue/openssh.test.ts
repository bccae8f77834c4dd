import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ssh2, { type ClientChannel } from 'ssh2';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import { pidFileOf } from '../../src/glue/resident/place.js';
import { defaultKeyPaths, fingerprint } from '../../src/shared/ssh-keys.js';
import type { GluePort } from '../../src/core/ports.js';
import {
  fakeSpec,
  openGate,
  startOpenSshGlue,
  startTestGlue,
  writeFakeSdk,
  type OpenSshGlue,
  type TestGlue,
} from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/**
 * The two SSH front doors answer identically. Each door has its own data directory with its own runner, and both
 * receive the same request sequence, so their states evolve the same way. Timestamps are normalised. The OpenSSH
 * door runs as deployed for speed: the forced command hands each request to the resident glue (bin/kiln-glue-forward);
 * test/glue/resident.test.ts covers its in-process fallback.
 */

let builtin: TestGlue;
let openssh: OpenSshGlue;
let runnerB: LocalBackend;
let dirB: ReturnType<typeof tempDir>;
let work: ReturnType<typeof tempDir>;
/** Audit lines of the OpenSSH door's data directory written before the table ran (the resident's start). */
let auditBefore = 0;
const auditLines = () =>
  readFileSync(path.join(dirB.dir, 'glue', 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

interface Door {
  name: string;
  port: number;
  user: string;
  fingerprint: string;
  hostPub: string;
  client: GluePort;
}
let doors: Door[];

beforeAll(async () => {
  builtin = await startTestGlue();
  dirB = tempDir('kiln-glue-openssh-data-');
  runnerB = new LocalBackend({ dataDir: dirB.dir, sdkCommand: writeFakeSdk(dirB.dir), pollMs: 50 });
  await runnerB.start();
  openssh = await startOpenSshGlue({ dataDir: dirB.dir, clientKey: builtin.clientKey, resident: true });
  // The first request runs in-process and starts the resident; from then on requests go to the resident.
  await until(async () => {
    await openssh.client.call('ping', []);
    return existsSync(pidFileOf(openssh.socketPath!));
  });
  auditBefore = auditLines().length;
  work = tempDir('kiln-glue-openssh-client-');
  doors = [
    {
      name: 'built-in',
      port: builtin.port,
      user: 'kiln',
      fingerprint: builtin.hostFingerprint,
      hostPub: readFileSync(`${defaultKeyPaths(builtin.dataDir).host}.pub`, 'utf8'),
      client: builtin.client,
    },
    {
      name: 'openssh',
      port: openssh.port,
      user: openssh.username,
      fingerprint: openssh.hostFingerprint,
      hostPub: readFileSync(path.join(openssh.dir, 'ssh_host_ed25519_key.pub'), 'utf8'),
      client: openssh.client,
    },
  ];
  writeFileSync(path.join(work.dir, 'id'), builtin.clientKey.privateKey, { mode: 0o600 });
});

afterAll(async () => {
  await openssh?.cleanup();
  await runnerB?.close();
  await builtin?.cleanup();
  dirB?.cleanup();
  work?.cleanup();
});

const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g;
const norm = (v: unknown) => JSON.parse(JSON.stringify(v).replace(ISO, '<time>')) as unknown;
async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    const v = await p;
    if (v && typeof (v as NodeJS.ReadableStream).pipe === 'function') {
      const chunks: Buffer[] = [];
      for await (const c of v as AsyncIterable<Buffer>) chunks.push(c);
      return { bytes: Buffer.concat(chunks).toString('utf8') };
    }
    return norm(v);
  } catch (e) {
    const k = e as { code?: string; message?: string };
    return {
      error: k.code,
      message: k.message,
      ...(k.code === 'internal' ? { detail: (e as { detail?: unknown }).detail } : {}),
    };
  }
}

async function settle(c: GluePort, job: number, build: number): Promise<unknown> {
  return norm(
    await until(
      async () => {
        const st = await c.call('build.status', [job, build]);
        return !['queued', 'running'].includes(st.state) && st;
      },
      60_000,
      50,
    ),
  );
}

/** A wait on a gated build while it runs, then the gate opened: the wait answers with the build's end. */
async function holdThroughGate(c: GluePort, job: number, build: number, gate: string): Promise<unknown> {
  await until(async () => (await c.call('build.status', [job, build])).state === 'running', 60_000, 50);
  const held = c.wait(job, build, 'running', 60);
  openGate(c === builtin.client ? builtin.dataDir : dirB.dir, gate);
  return norm(await held);
}

const STEPS: Array<[string, (c: GluePort) => Promise<unknown>]> = [
  ['ping', (c) => c.call('ping', [])],
  [
    'job.put new',
    (c) =>
      c.call(
        'job.put',
        [21],
        JSON.stringify(fakeSpec(undefined, { formats: ['raw', 'qcow2'], buildArgs: { A: 'b c' } })),
      ),
  ],
  ['job.put again', (c) => c.call('job.put', [21], JSON.stringify(fakeSpec()))],
  ['job.put bad spec', (c) => c.call('job.put', [22], JSON.stringify({ ...fakeSpec(), name: '../x' }))],
  ['job.put not JSON', (c) => c.call('job.put', [22], 'FROM debian')],
  ['job.put no body', (c) => c.call('job.put', [22])],
  ['job.build', (c) => c.call('job.build', [21, 'door-key-0001'])],
  ['job.build same key', (c) => c.call('job.build', [21, 'door-key-0001'])],
  ['job.build missing job', (c) => c.call('job.build', [99, 'door-key-0001'])],
  ['wait', (c) => settle(c, 21, 1)],
  ['build.status', (c) => c.call('build.status', [21, 1])],
  ['build.status missing', (c) => c.call('build.status', [21, 7])],
  ['build.wait ended', (c) => c.wait(21, 1, 'running', 30)],
  ['build.wait missing', (c) => c.wait(21, 7, 'running', 30)],
  ['build.log', (c) => c.call('build.log', [21, 1, 0])],
  ['build.log offset', (c) => c.call('build.log', [21, 1, 10])],
  ['artifact', (c) => c.artifact(21, 1, 'image.raw')],
  ['artifact offset', (c) => c.artifact(21, 1, 'image.raw', 4)],
  ['artifact missing', (c) => c.artifact(21, 1, 'manifest.json')],
  ['artifact offset past end', (c) => c.artifact(21, 1, 'image.raw', 500)],
  ['build.cancel finished', (c) => c.call('build.cancel', [21, 1])],
  ['job.put held', (c) => c.call('job.put', [24], JSON.stringify(fakeSpec('gate door-hold')))],
  ['job.build held', (c) => c.call('job.build', [24, 'door-key-0004'])],
  // Held by the door's process (under OpenSSH a `kiln glue` of its own) until the runner ends the build.
  ['build.wait held', (c) => holdThroughGate(c, 24, 1, 'door-hold')],
  ['job.put failing', (c) => c.call('job.put', [23], JSON.stringify(fakeSpec('fail')))],
  ['job.build failing', (c) => c.call('job.build', [23, 'door-key-0002'])],
  ['wait failing', (c) => settle(c, 23, 1)],
  ['job.disable', (c) => c.call('job.disable', [21])],
  ['job.disable again', (c) => c.call('job.disable', [21])],
  ['job.build disabled', (c) => c.call('job.build', [21, 'door-key-0003'])],
  ['job.enable', (c) => c.call('job.enable', [21])],
  ['jobs.list', (c) => c.call('jobs.list', [])],
  ['queue.list', (c) => c.call('queue.list', [])],
  ['job.delete', (c) => c.call('job.delete', [23])],
  ['job.delete again', (c) => c.call('job.delete', [23])],
  ['job.enable missing', (c) => c.call('job.enable', [23])],
];

/** One exec over a fresh ssh2 connection, with options the web's client never uses. */
function rawExec(
  d: Door,
  cmd: string,
  opts: Record<string, unknown> = {},
  connectOpts: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const c = new ssh2.Client();
    c.on('error', (e) => resolve({ connectError: e.message }));
    c.on('ready', () => {
      c.exec(cmd, opts, (err: Error | undefined, ch: ClientChannel) => {
        if (err) {
          c.end();
          return resolve({ refused: err.message });
        }
        let stdout = '';
        let stderr = '';
        let code: number | null = null;
        ch.on('data', (x: Buffer) => {
          stdout += x;
        });
        ch.stderr.on('data', (x: Buffer) => {
          stderr += x;
        });
        ch.on('exit', (x: number | null) => {
          code = x;
        });
        ch.on('close', () => {
          c.end();
          resolve({ code, stdout, stderr });
        });
        ch.end();
      });
    });
    c.connect({
      host: '127.0.0.1',
      port: d.port,
      username: d.user,
      privateKey: builtin.clientKey.privateKey,
      readyTimeout: 10_000,
      hostVerifier: (k: Buffer) => fingerprint(k) === d.fingerprint,
      ...connectOpts,
    });
  });
}

function onConn<T>(d: Door, fn: (c: ssh2.Client) => Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on('error', reject);
    c.on('ready', () => {
      fn(c)
        .then(resolve, reject)
        .finally(() => c.end());
    });
    c.connect({
      host: '127.0.0.1',
      port: d.port,
      username: d.user,
      privateKey: builtin.clientKey.privateKey,
      readyTimeout: 10_000,
      hostVerifier: (k: Buffer) => fingerprint(k) === d.fingerprint,
    });
  });
}

/** The OpenSSH client binary, strict about the host key (its own known_hosts), batch mode, only our key. */
function sshCli(
  d: Door,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const known = path.join(work.dir, `known_hosts-${d.name}`);
  writeFileSync(known, `[127.0.0.1]:${d.port} ${d.hostPub.split(' ').slice(0, 2).join(' ')}\n`);
  chmodSync(path.join(work.dir, 'id'), 0o600);
  const base = [
    '-F',
    '/dev/null',
    '-p',
    String(d.port),
    '-i',
    path.join(work.dir, 'id'),
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${known}`,
    '-o',
    'ConnectTimeout=10',
    '-o',
    'LogLevel=ERROR',
    '-l',
    d.user,
  ];
  return new Promise((resolve) => {
    execFile(
      'ssh',
      [...base, ...args],
      { env: { PATH: process.env.PATH, HOME: work.dir, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : -1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('the two SSH front doors', () => {
  it('answer the same request sequence identically', async () => {
    const answers: Record<string, unknown[]> = {};
    for (const [name, step] of STEPS) {
      answers[name] = [];
      for (const d of doors) answers[name]!.push(await outcome(step(d.client)));
    }
    for (const [name] of STEPS) {
      expect(answers[name]![1], `${name}: openssh vs built-in`).toEqual(answers[name]![0]);
    }
    // Sanity: the sequence did what it says (so "identical" is not "identically broken").
    expect(answers['wait']![0]).toMatchObject({
      state: 'succeeded',
      artifacts: [{ name: 'image.raw' }, { name: 'result.json' }, { name: 'SHA256SUMS' }],
    });
    expect(answers['build.wait ended']![0]).toMatchObject({ state: 'succeeded' });
    expect(answers['build.wait missing']![0]).toMatchObject({ error: 'not_found' });
    expect(answers['build.wait held']![0]).toMatchObject({ state: 'succeeded' });
    expect(answers['wait failing']![0]).toMatchObject({ state: 'failed', reason: 'RUN step 2 failed: exit 100' });
    expect(answers['artifact offset']![0]).toEqual({ bytes: 'IMAGE-BYTES' });
    expect(answers['job.build disabled']![0]).toMatchObject({ error: 'conflict' });
    expect(answers['job.put bad spec']![0]).toMatchObject({ error: 'invalid_input' });
    // And the OpenSSH door's answers all came from the resident glue, none from the in-process fallback.
    const served = auditLines()
      .slice(auditBefore)
      .filter((l) => l.audit);
    expect(served.length).toBeGreaterThanOrEqual(STEPS.length);
    expect(served.filter((l) => l.resident !== true || l.forwardFallback)).toEqual([]);
    // Two doors times every step, builds included, on a loaded machine: no bound of its own.
  }, 900_000);

  it('a held build.wait whose caller goes away ends there and then at either door, not at its deadline; one whose input ends is answered at once, alike', async () => {
    const audits: Record<string, () => Array<Record<string, unknown>>> = {
      'built-in': () => builtin.logs,
      openssh: () =>
        readFileSync(path.join(dirB.dir, 'glue', 'audit.log'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    };
    const answers: unknown[] = [];
    for (const d of doors) {
      const c = d.client;
      await c.call('job.put', [25], JSON.stringify(fakeSpec('gate door-gone')));
      const { build } = await c.call('job.build', [25, 'door-gone-0001']);
      // At its gate: running, and its progress line printed (the fake SDK prints it just after the build starts),
      // so both doors' answers below describe the same moment of the build.
      await until(
        async () => {
          const st = await c.call('build.status', [25, build]);
          return st.state === 'running' && st.progress !== undefined;
        },
        60_000,
        50,
      );
      const gone = new AbortController();
      const held = c.wait(25, build, 'running', 60, gone.signal).catch((e: unknown) => e);
      // Held once the door ran it: under OpenSSH a `kiln glue` process of its own.
      gone.abort(new Error('not waiting any more'));
      expect(await held, d.name).toEqual(new Error('not waiting any more'));
      const ended = await until(
        () => audits[d.name]!().find((l) => l.verb === 'build.wait' && (l.args as number[])[0] === 25 && l.callerGone),
        90_000,
        50,
      );
      expect(ended, d.name).toMatchObject({ outcome: 'ok', callerGone: true });
      // It ended because its caller went, not because the build moved: the build is still at its gate.
      expect((await c.call('build.status', [25, build])).state, d.name).toBe('running');
      // A caller that ends its input (and reads on) gets the answer there and then, from either door alike.
      const r = await rawExec(d, `build.wait 25 ${build} running 60`);
      answers.push({ ...r, stdout: norm(JSON.parse(String(r.stdout))) });
      const told = audits[d.name]!().filter((l) => l.verb === 'build.wait' && (l.args as number[])[0] === 25);
      expect(told.at(-1), d.name).toMatchObject({ outcome: 'ok', callerGone: true });
      await c.call('build.cancel', [25, build]);
    }
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[0]).toMatchObject({ code: 0, stderr: '', stdout: { state: 'running' } });
  }, 900_000);

  it.each([
    'job.put 7; rm -rf /',
    'job.build 5 $(id)',
    'job.build 5\nid',
    'job.put -x',
    'job.build 99999999999999 abcdefgh',
    'build.artifact 1 1 ../x',
    'sh',
    'scp -f /etc/passwd',
    'internal-sftp',
    'job.put 7 ',
    'ping\tx',
  ])('case 26: both doors refuse %j identically (exit 2, same stderr)', async (cmd) => {
    const [a, b] = await Promise.all(doors.map((d) => rawExec(d, cmd)));
    expect(a).toMatchObject({ code: 2, stdout: '' });
    expect(JSON.parse(String(a!.stderr))).toMatchObject({ error: { code: 'invalid_input' } });
    expect(b).toEqual(a);
  });

  it.each([
    ['pty', { pty: true }, /pseudo-terminal/i],
    ['x11', { x11: true }, /X11/i],
  ])('both refuse a %s request', async (_n, opts, msg) => {
    for (const d of doors)
      expect(await rawExec(d, 'ping', opts), d.name).toMatchObject({ refused: expect.stringMatching(msg) });
  });

  it('case 27: both refuse agent forwarding, subsystems (sftp) and port forwarding in both directions', async () => {
    for (const d of doors) {
      const agent = new (class extends ssh2.BaseAgent<ssh2.ParsedKey> {
        getIdentities(cb: (e: Error | undefined, k?: ssh2.ParsedKey[]) => void) {
          cb(undefined, []);
        }
        sign(_p: ssh2.ParsedKey, _d: Buffer, _o: unknown, cb?: (e: Error | undefined, s?: Buffer) => void) {
          cb?.(new Error('no'));
        }
      })();
      expect(await rawExec(d, 'ping', { agentForward: true }, { agent }), d.name).toMatchObject({
        refused: expect.stringMatching(/agent/i),
      });
      await onConn(d, async (c) => {
        await expect(new Promise((res, rej) => c.sftp((e, s) => (e ? rej(e) : res(s)))), d.name).rejects.toThrow(
          /subsystem/i,
        );
        await expect(
          new Promise((res, rej) => c.subsys('netconf', (e, s) => (e ? rej(e) : res(s)))),
          d.name,
        ).rejects.toThrow(/subsystem/i);
        await expect(
          new Promise((res, rej) => c.forwardIn('127.0.0.1', 0, (e, p) => (e ? rej(e) : res(p)))),
          d.name,
        ).rejects.toThrow(/unable to bind/i);
        await expect(
          new Promise((res, rej) => c.forwardOut('127.0.0.1', 1, '127.0.0.1', d.port, (e, s) => (e ? rej(e) : res(s)))),
          d.name,
        ).rejects.toThrow(/prohibited|open failure|fail/i);
      });
    }
  });

  it('a shell request runs nothing: refused by the built-in server, an empty (refused) request under OpenSSH', async () => {
    const shell = (d: Door) =>
      onConn(
        d,
        (c) =>
          new Promise<Record<string, unknown>>((resolve) => {
            c.shell(false, (e, ch) => {
              if (e) return resolve({ refused: e.message });
              let stderr = '';
              let code: number | null = null;
              ch.stderr.on('data', (x: Buffer) => {
                stderr += x;
              });
              ch.on('data', (x: Buffer) => {
                stderr += `stdout: ${x}`;
              });
              ch.on('exit', (x: number | null) => {
                code = x;
              });
              ch.on('close', () => resolve({ code, stderr }));
              ch.end('id\n');
            });
          }),
      );
    expect(await shell(doors[0]!)).toMatchObject({ refused: expect.stringMatching(/shell/i) });
    const o = await shell(doors[1]!);
    expect(o.code).toBe(2);
    expect(JSON.parse(String(o.stderr))).toEqual({ error: { code: 'invalid_input', message: 'empty command' } });
  });

  it('case 27: the OpenSSH client gets the same refusals from both doors (-tt, -s, -R, -W, SetEnv)', async () => {
    for (const d of doors) {
      // An explicitly requested tty that the server refuses makes the OpenSSH client give up: nothing runs.
      const tty = await sshCli(d, ['-tt', '127.0.0.1', 'ping']);
      expect(tty, d.name).toMatchObject({ code: 255, stdout: '' });
      expect(tty.stderr, d.name).toMatch(/PTY allocation request failed/);
      const sftp = await sshCli(d, ['-s', '127.0.0.1', 'sftp']);
      expect(sftp.code, d.name).not.toBe(0);
      expect(sftp.stdout, d.name).toBe('');
      const remote = await sshCli(d, ['-o', 'ExitOnForwardFailure=yes', '-R', '0:127.0.0.1:9', '127.0.0.1', 'ping']);
      expect(remote.code, d.name).toBe(255);
      expect(remote.stdout, d.name).toBe('');
      const stdio = await sshCli(d, ['-W', `127.0.0.1:${d.port}`, '127.0.0.1']);
      expect(stdio.code, d.name).toBe(255);
      expect(stdio.stdout, d.name).toBe('');
      const env = await sshCli(d, ['-o', 'SetEnv=KILN_GLUE_BACKEND=jenkins KILN_DATA_DIR=/', '127.0.0.1', 'ping']);
      expect(env.code, d.name).toBe(0);
      expect(JSON.parse(env.stdout), d.name).toMatchObject({ protocol: 1, backend: 'local' });
      const inj = await sshCli(d, ['127.0.0.1', 'job.put 1; id']);
      expect(inj.code, d.name).toBe(2);
      expect(inj.stdout, d.name).toBe('');
    }
  });

  it("case 29: the web client refuses either door when the pinned host key is the other door's", async () => {
    const swapped = [
      builtin.newClient({ hostFingerprint: openssh.hostFingerprint }),
      openssh.newClient({ hostFingerprint: builtin.hostFingerprint }),
    ];
    for (const c of swapped) await expect(c.call('ping', [])).rejects.toMatchObject({ code: 'backend_unavailable' });
  });
});

describe('SHA-1 RSA signatures', () => {
  it('case 30: the built-in server refuses an authorized RSA key signing with ssh-rsa, accepts rsa-sha2-256', async () => {
    const t = tempDir('kiln-glue-rsa-');
    try {
      const { execFileSync } = await import('node:child_process');
      const rsa = path.join(t.dir, 'rsa');
      execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', rsa]);
      const authorized = path.join(t.dir, 'authorized_keys');
      writeFileSync(authorized, readFileSync(`${rsa}.pub`));
      const g = await startTestGlue({
        config: { ssh: { host: '127.0.0.1', port: 0, authorizedKeysFile: authorized } },
      });
      try {
        const known = path.join(t.dir, 'known_hosts');
        writeFileSync(
          known,
          `[127.0.0.1]:${g.port} ${readFileSync(`${defaultKeyPaths(g.dataDir).host}.pub`, 'utf8')
            .split(' ')
            .slice(0, 2)
            .join(' ')}\n`,
        );
        const ssh = (alg: string) =>
          new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
            execFile(
              'ssh',
              [
                '-F',
                '/dev/null',
                '-p',
                String(g.port),
                '-i',
                rsa,
                '-o',
                'IdentitiesOnly=yes',
                '-o',
                'BatchMode=yes',
                '-o',
                `PubkeyAcceptedAlgorithms=${alg}`,
                '-o',
                'StrictHostKeyChecking=yes',
                '-o',
                `UserKnownHostsFile=${known}`,
                '-l',
                'kiln',
                '127.0.0.1',
                'ping',
              ],
              { env: { PATH: process.env.PATH, HOME: t.dir } },
              (err, stdout, stderr) => {
                resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
              },
            );
          });
        const sha2 = await ssh('rsa-sha2-256');
        expect(sha2.code).toBe(0);
        expect(JSON.parse(sha2.stdout)).toMatchObject({ protocol: 1, backend: 'local' });
        const sha1 = await ssh('ssh-rsa');
        expect(sha1.code).toBe(255);
        expect(sha1.stderr).toMatch(/Permission denied \(publickey\)/);
        expect(g.logs.some((l) => l.msg === 'ssh: authentication refused' && l.keyAlgo === 'ssh-rsa')).toBe(true);
      } finally {
        await g.cleanup();
      }
    } finally {
      t.cleanup();
    }
  });
});
