import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ssh2, { type ClientChannel, type ParsedKey } from 'ssh2';
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { fakeSpec, openGate, startTestGlue, type TestGlue } from '../helpers/glue.js';
import { until } from '../helpers/wait.js';
import { isKilnError } from '../../src/shared/errors.js';
import { generateEd25519 } from '../../src/shared/ssh-keys.js';
import { MAX_HELD_WAITS, MAX_WAIT_SECONDS } from '../../src/protocol/index.js';

const { Client, utils, BaseAgent } = ssh2;

/** An ssh2 agent offering `identities` and signing with `signer` (which may be another key than offered). */
function agentOf(identities: ParsedKey[], signer?: (data: Buffer) => Buffer, onSign?: () => void) {
  return new (class extends BaseAgent<ParsedKey> {
    getIdentities(cb: (e: Error | undefined, keys?: ParsedKey[]) => void) {
      cb(undefined, identities);
    }
    sign(_pub: ParsedKey, data: Buffer, opts: unknown, cb?: (e: Error | undefined, sig?: Buffer) => void) {
      const done = (typeof opts === 'function' ? opts : cb) as (e: Error | undefined, sig?: Buffer) => void;
      onSign?.();
      if (!signer) return done(new Error('this agent cannot sign'));
      done(undefined, signer(data));
    }
  })();
}

let g: TestGlue;
beforeAll(async () => {
  g = await startTestGlue({ recordCalls: true });
});
afterAll(async () => {
  await g?.cleanup();
});

/** A raw ssh2 connection with the web's key (or other options), for requests the GluePort never makes. */
function rawConnect(extra: Record<string, unknown> = {}): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.on('ready', () => resolve(c))
      .on('error', reject)
      .on('close', () => reject(new Error('connection closed')));
    c.connect({
      host: '127.0.0.1',
      port: g.port,
      username: 'kiln',
      privateKey: g.clientKey.privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) =>
        createHash('sha256').update(key).digest('base64').replace(/=+$/, '') === g.hostFingerprint,
      ...extra,
    });
  });
}

function execRaw(
  c: ssh2.Client,
  cmd: string,
  opts: Record<string, unknown> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, opts, (err: Error | undefined, ch: ClientChannel) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      let code: number | null = null;
      ch.on('data', (d: Buffer) => {
        stdout += d;
      });
      ch.stderr.on('data', (d: Buffer) => {
        stderr += d;
      });
      ch.on('exit', (x: number | null) => {
        code = x;
      });
      ch.on('close', () => resolve({ code, stdout, stderr }));
      ch.end();
    });
  });
}

const authAttempts = () => g.logs.filter((l) => l.msg === 'ssh: authentication attempt').length;

describe('built-in SSH glue server', () => {
  it('round trip over SSH: put, build, status, log, artifact, errors', async () => {
    const c = g.client;
    expect(await c.call('ping', [])).toMatchObject({ protocol: 1, backend: 'local' });
    expect(await c.call('job.put', [11], JSON.stringify(fakeSpec()))).toEqual({ job: 11, created: true });
    expect(await c.call('job.build', [11, 'ssh-key-0001'])).toEqual({ job: 11, build: 1, created: true });
    expect(await c.call('job.build', [11, 'ssh-key-0001'])).toEqual({ job: 11, build: 1, created: false });
    const st = await until(
      async () => {
        const x = await c.call('build.status', [11, 1]);
        return (x.state === 'succeeded' || x.state === 'failed') && x;
      },
      60_000,
      50,
    );
    expect(st).toMatchObject({
      job: 11,
      build: 1,
      state: 'succeeded',
      artifacts: [{ name: 'image.raw', size: 15 }, { name: 'result.json' }, { name: 'SHA256SUMS' }],
    });
    const log = await c.call('build.log', [11, 1, 0]);
    expect(log.text).toContain('##kiln {"stage":"done","percent":100,');
    expect(log.more).toBe(false);
    const chunks: Buffer[] = [];
    for await (const ch of await c.artifact(11, 1, 'image.raw')) chunks.push(ch as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('RAW-IMAGE-BYTES');
    const tail: Buffer[] = [];
    for await (const ch of await c.artifact(11, 1, 'image.raw', 4)) tail.push(ch as Buffer);
    expect(Buffer.concat(tail).toString()).toBe('IMAGE-BYTES');

    await expect(c.artifact(11, 1, 'image.qcow2')).rejects.toMatchObject({
      code: 'not_found',
      message: 'No such artifact',
    });
    await expect(c.call('build.status', [11, 99])).rejects.toMatchObject({
      code: 'not_found',
      message: 'No such build',
    });
    await expect(c.call('job.put', [12], '{"owner":')).rejects.toMatchObject({ code: 'invalid_input' });
    await c.call('job.disable', [11]);
    await expect(c.call('job.build', [11, 'ssh-key-0002'])).rejects.toMatchObject({ code: 'conflict' });
    expect((await c.call('jobs.list', [])).jobs).toEqual([
      { job: 11, backendName: 'kiln-job-11', managed: true, enabled: false, schedule: 'off', lastBuild: 1 },
    ]);
  });

  it('serves concurrent calls over the one reused connection', async () => {
    const before = g.logs.filter((l) => l.msg === 'ssh: client authenticated').length;
    const res = await Promise.all(Array.from({ length: 20 }, () => g.client.call('ping', [])));
    expect(res.every((r) => r.protocol === 1)).toBe(true);
    expect(g.logs.filter((l) => l.msg === 'ssh: client authenticated').length).toBe(before);
  });

  it('finding 12d: ten downloads whose readers never read take no call slot: status and log still answer, extra streams wait for a stream slot', async () => {
    const c = g.client;
    await c.call('job.put', [31], JSON.stringify(fakeSpec('big 32')));
    const { build } = await c.call('job.build', [31, 'ssh-big-0001']);
    const st = await until(
      async () => {
        const x = await c.call('build.status', [31, build]);
        return (x.state === 'succeeded' || x.state === 'failed') && x;
      },
      60_000,
      100,
    );
    expect(st.artifacts.find((a) => a.name === 'image.raw')?.size).toBe(32 << 20);
    // Stalled streams are never timed out during this test: only the slot accounting can let the calls through.
    const slow = g.newClient({ timeoutMs: 10 * 60_000 });
    const opened: Readable[] = [];
    const pending = Array.from({ length: 10 }, () =>
      slow.artifact(31, build, 'image.raw').then((s) => {
        opened.push(s);
        return s;
      }),
    );
    await until(() => opened.length >= 8, 60_000, 50);
    // Every stream is stalled: its reader reads nothing, so the glue stops at the SSH window.
    expect(opened.every((s) => !s.readableFlowing)).toBe(true);
    const answers = await Promise.all([
      slow.call('build.status', [31, build]),
      slow.call('build.log', [31, build, 0]),
      ...Array.from({ length: 10 }, () => slow.call('ping', [])),
    ]);
    expect(answers[0]).toMatchObject({ state: 'succeeded' });
    expect((answers[1] as { text: string }).text).toContain('##kiln');
    // The two streams over the cap wait for a slot; ending one stream lets one of them start.
    expect(opened.length).toBe(8);
    opened[0]!.destroy();
    await until(() => opened.length >= 9, 60_000, 50);
    for (const s of opened.slice(1, 8)) s.destroy();
    const streams = await Promise.all(pending);
    let bytes = 0;
    for await (const chunk of streams[9]!) bytes += (chunk as Buffer).length;
    expect(bytes).toBe(32 << 20);
    for (const s of streams) s.destroy();
    expect(await slow.call('ping', [])).toMatchObject({ protocol: 1, backend: 'local' });
  }, 120_000);

  it('held waits (build.wait) take no call slot: ten at once, and calls still answer; abandoned, they end on the glue too', async () => {
    const c = g.client;
    await c.call('job.put', [32], JSON.stringify(fakeSpec('gate ssh-hold')));
    const { build } = await c.call('job.build', [32, 'ssh-hold-0001']);
    await until(async () => (await c.call('build.status', [32, build])).state === 'running', 60_000, 50);
    const gone = new AbortController();
    const held = Array.from({ length: MAX_HELD_WAITS }, () =>
      c.wait(32, build, 'running', MAX_WAIT_SECONDS, gone.signal).then(
        (st) => ({ st }),
        (e: unknown) => ({ e }),
      ),
    );
    const holding = () => g.calls.filter((x) => x === 'wait').length;
    await until(() => holding() >= MAX_HELD_WAITS, 60_000, 50);
    const ended = () => g.logs.filter((l) => l.verb === 'build.wait').length;
    const before = ended();
    // Eight call slots: twelve calls answer only if no held wait took one.
    const answers = await Promise.all(Array.from({ length: 12 }, () => c.call('build.status', [32, build])));
    expect(answers.every((a) => a.state === 'running')).toBe(true);
    expect(ended()).toBe(before);
    gone.abort(new Error('not waiting any more'));
    for (const h of await Promise.all(held)) expect(h).toEqual({ e: new Error('not waiting any more') });
    // The glue heard each channel close: every wait ends there with the build still held at its gate.
    await until(() => ended() >= before + MAX_HELD_WAITS, 60_000, 50);
    expect((await c.call('build.status', [32, build])).state).toBe('running');
    openGate(g.dataDir, 'ssh-hold');
    expect(await c.wait(32, build, 'running', MAX_WAIT_SECONDS)).toMatchObject({ state: 'succeeded' });
  });

  it('a held wait whose connection is cut ends at once (backend_unavailable, not at its deadline), the glue hears it go, and a wait connects again', async () => {
    // A TCP relay in front of the glue: cutting its sockets is a network that dropped the connection.
    const socks = new Set<net.Socket>();
    const relay = net.createServer((a) => {
      const b = net.connect(g.port, '127.0.0.1');
      for (const s of [a, b]) {
        socks.add(s);
        s.on('error', () => undefined).on('close', () => socks.delete(s));
      }
      a.pipe(b).pipe(a);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    try {
      const c = g.newClient({ port: (relay.address() as net.AddressInfo).port });
      await c.call('job.put', [33], JSON.stringify(fakeSpec('gate ssh-cut')));
      const { build } = await c.call('job.build', [33, 'ssh-cut-0001']);
      await until(async () => (await c.call('build.status', [33, build])).state === 'running', 60_000, 50);
      const waitsAt = () => g.calls.filter((x) => x === 'wait').length;
      const before = waitsAt();
      let settled = false;
      const held = c.wait(33, build, 'running', MAX_WAIT_SECONDS).then(
        (st) => ({ st }),
        (e: unknown) => ({ e }),
      );
      void held.finally(() => (settled = true));
      await until(() => waitsAt() > before, 60_000, 20);
      for (const s of socks) s.destroy();
      const gone = () => g.logs.filter((l) => l.verb === 'build.wait' && (l.args as number[])[0] === 33);
      await until(() => gone().some((l) => l.callerGone), 60_000, 20);
      // Cut after the glue's confirmation of the exec reached the client: the wait ends at once. Cut before it (the
      // glue had begun the wait, the client had not heard so yet): its exec is sent again on a new connection.
      await until(() => settled || waitsAt() > before + 1, 60_000, 20);
      let told = held;
      if (settled) {
        expect(await held).toMatchObject({ e: { code: 'backend_unavailable' } });
        // The next wait opens a new connection, is held, and tells the build's end.
        told = c.wait(33, build, 'running', MAX_WAIT_SECONDS).then((st) => ({ st }));
        await until(() => waitsAt() > before + 1, 60_000, 20);
      }
      openGate(g.dataDir, 'ssh-cut');
      expect(await told).toMatchObject({ st: { state: 'succeeded' } });
    } finally {
      for (const s of socks) s.destroy();
      await new Promise((r) => relay.close(r));
    }
  });

  it('reconnects after the connection drops', async () => {
    const own = await startTestGlue();
    try {
      const c = own.client;
      await c.call('ping', []);
      await own.server.close(); // drops every connection...
      await expect(c.call('ping', [])).rejects.toMatchObject({ code: 'backend_unavailable' });
      // ...and a new server on the same port and data dir (same host key) is reached by the same client.
      const { startGlueServer } = await import('../../src/glue/index.js');
      const { loadConfig } = await import('../../src/config/index.js');
      const { silentLogger } = await import('../../src/shared/logger.js');
      const cfg = loadConfig(
        {},
        {
          dataDir: own.dataDir,
          ssh: { host: '127.0.0.1', port: own.port },
          glue: { sdkCommand: own.cfg.glue.sdkCommand },
        },
      );
      own.server = await startGlueServer(cfg, silentLogger);
      expect(await c.call('ping', [])).toMatchObject({ protocol: 1, backend: 'local' });
    } finally {
      await own.cleanup();
    }
  });

  it.each([
    'job.put 7; rm -rf /',
    'job.build 5 $(id)',
    'job.build 5\nid',
    'job.put -x',
    'job.build 99999999999999 abcdefgh',
    'build.artifact 1 1 ../../etc/passwd',
    'sh -c id',
    '',
    'job.put 7 && id',
    'scp -t /tmp',
    'git-upload-pack x',
  ])('case 26: rejects %j with exit 2, an audit line, and no backend call', async (cmd) => {
    const before = g.calls.length;
    const c = await rawConnect();
    try {
      const r = await execRaw(c, cmd);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(JSON.parse(r.stderr)).toMatchObject({ error: { code: 'invalid_input' } });
    } finally {
      c.end();
    }
    expect(g.calls.length).toBe(before);
    expect(g.logs.at(-1)).toMatchObject({ audit: true, door: 'ssh2', outcome: 'invalid_input' });
  });

  it('case 27: refuses pty (-t), shell, x11 (-X), agent forwarding (-A), sftp (-s), subsystems, port forwarding (-L, -R, -D) and env (SendEnv)', async () => {
    const c = await rawConnect({ agent: agentOf([]) });
    try {
      await expect(execRaw(c, 'ping', { pty: true })).rejects.toThrow(/pseudo-terminal/i);
      await expect(execRaw(c, 'ping', { x11: true })).rejects.toThrow(/X11/i);
      await expect(execRaw(c, 'ping', { agentForward: true })).rejects.toThrow(/agent/i);
      await expect(new Promise((res, rej) => c.shell(false, (e, s) => (e ? rej(e) : res(s))))).rejects.toThrow(
        /shell/i,
      );
      await expect(new Promise((res, rej) => c.sftp((e, s) => (e ? rej(e) : res(s))))).rejects.toThrow(
        /subsystem|sftp/i,
      );
      await expect(new Promise((res, rej) => c.subsys('netconf', (e, s) => (e ? rej(e) : res(s))))).rejects.toThrow(
        /subsystem/i,
      );
      await expect(
        new Promise((res, rej) => c.forwardIn('127.0.0.1', 0, (e, p) => (e ? rej(e) : res(p)))),
      ).rejects.toThrow(/unable to bind/i);
      await expect(
        new Promise((res, rej) => c.forwardOut('127.0.0.1', 1, '127.0.0.1', g.port, (e, s) => (e ? rej(e) : res(s)))),
      ).rejects.toThrow(/open|prohibited|fail/i);
      // env requests are refused silently (no reply is asked for) and change nothing; exec still works.
      const pinged = await execRaw(c, 'ping', { env: { LD_PRELOAD: '/tmp/x.so', KILN_GLUE_BACKEND: 'jenkins' } });
      expect(pinged.code).toBe(0);
      expect(JSON.parse(pinged.stdout)).toMatchObject({ protocol: 1, backend: 'local' });
    } finally {
      c.end();
    }
  });

  it('case 29: a web client pinned to another host key (a glue impostor) aborts before authentication and raises an alert', async () => {
    const before = authAttempts();
    const other = generateEd25519();
    const otherFp = createHash('sha256')
      .update((utils.parseKey(other.public) as ParsedKey).getPublicSSH())
      .digest('base64')
      .replace(/=+$/, '');
    const alerts: string[] = [];
    const { pino } = await import('pino');
    const { Writable } = await import('node:stream');
    const logger = pino(
      { level: 'warn' },
      new Writable({
        write(c, _e, cb) {
          alerts.push(String((JSON.parse(String(c)) as { msg: string }).msg));
          cb();
        },
      }),
    );
    const c = g.newClient({ hostFingerprint: otherFp, logger });
    const err = await c.call('ping', []).catch((e: unknown) => e);
    expect(isKilnError(err, 'backend_unavailable')).toBe(true);
    expect(authAttempts()).toBe(before);
    expect(alerts.some((m) => m.startsWith('ALERT: the glue presented a host key that does not match'))).toBe(true);
  });

  it('a client with another key is refused', async () => {
    const other = generateEd25519();
    const c = g.newClient({ privateKey: other.private });
    await expect(c.call('ping', [])).rejects.toMatchObject({ code: 'backend_unavailable' });
    expect(g.logs.some((l) => l.msg === 'ssh: authentication refused')).toBe(true);
  });

  it('a client with the right user but a wrong name is refused', async () => {
    await expect(rawConnect({ username: 'root' })).rejects.toThrow(/authentication methods failed/i);
  });

  it('case 28: a client offering the authorized public key but signing with another private key is refused', async () => {
    const web = utils.parseKey(g.clientKey.privateKey) as ParsedKey;
    const impostor = utils.parseKey(generateEd25519().private) as ParsedKey;
    let signed = 0;
    const agent = agentOf(
      [utils.parseKey(web.getPublicSSH()) as ParsedKey],
      (data) => impostor.sign(data) as Buffer,
      () => {
        signed++;
      },
    );
    await expect(rawConnect({ privateKey: undefined, agent })).rejects.toThrow(/authentication methods failed/i);
    expect(signed).toBeGreaterThan(0);
  });
});

describe('built-in SSH server caps', () => {
  it('drops a connection that does not authenticate in time, and connections over the cap', async () => {
    const net = await import('node:net');
    const { startSshServer } = await import('../../src/glue/ssh-server.js');
    const { createGlue } = await import('../../src/glue/dispatch.js');
    const { silentLogger } = await import('../../src/shared/logger.js');
    const host = generateEd25519();
    const srv = await startSshServer({
      glue: createGlue({ backend: g.server.backend, logger: silentLogger }),
      logger: silentLogger,
      host: '127.0.0.1',
      port: 0,
      hostKey: Buffer.from(host.private),
      authorizedKeys: [utils.parseKey(g.clientKey.publicKey) as ParsedKey],
      username: 'kiln',
      handshakeTimeoutMs: 300,
      maxConnections: 2,
    });
    const open = () =>
      new Promise<{ sock: import('node:net').Socket; closed: Promise<number>; banner: Promise<string> }>((resolve) => {
        const t0 = Date.now();
        const sock = net.connect(srv.port, '127.0.0.1', () => {
          const closed = new Promise<number>((r) => sock.once('close', () => r(Date.now() - t0)));
          const banner = new Promise<string>((r) => {
            sock.once('data', (d: Buffer) => r(d.toString()));
            sock.once('close', () => r(''));
          });
          resolve({ sock, closed, banner });
        });
      });
    try {
      const a = await open();
      const b = await open();
      expect(await a.banner).toMatch(/^SSH-2\.0-kiln-glue/);
      const c = await open(); // third: over the cap, closed without a banner
      expect(await c.banner).toBe('');
      // Over the cap: closed at once, before the idle ones reach their handshake limit.
      const tc = await c.closed;
      // The two idle ones are dropped after the handshake limit, not before.
      const ta = await a.closed;
      expect(ta).toBeGreaterThanOrEqual(250);
      expect(tc).toBeLessThan(ta);
      await b.closed;
    } finally {
      await srv.close();
    }
  });

  it('drops a connection after too many failed authentication attempts', async () => {
    const keys = Array.from({ length: 8 }, () => generateEd25519().private);
    const identities = keys.map((k) => utils.parseKey(k) as ParsedKey);
    let signed = 0;
    const agent = agentOf(
      identities.map((k) => utils.parseKey(k.getPublicSSH()) as ParsedKey),
      (d) => identities[0]!.sign(d) as Buffer,
      () => {
        signed++;
      },
    );
    const before = g.logs.filter((l) => l.msg === 'ssh: authentication refused').length;
    await expect(rawConnect({ privateKey: undefined, agent })).rejects.toThrow();
    const refused = g.logs.filter((l) => l.msg === 'ssh: authentication refused').length - before;
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThanOrEqual(6);
    expect(signed).toBe(0); // public keys were refused before any signature was asked for
  });
});
