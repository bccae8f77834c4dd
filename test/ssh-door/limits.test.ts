import { readFileSync } from 'node:fs';
import net from 'node:net';
import ssh2, { type ClientChannel, type ParsedKey } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../src/shared/ssh-keys.js';
import { EXIT } from '../../src/shared/exit-status.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { addKeyOnPage, capturedLogger, doorConnect, doorSsh, sshKeygen, type KeygenKey } from '../helpers/ssh-door.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

/**
 * What keeps a slow or hostile client from holding the SSH door: the login deadline, unauthenticated connections
 * per address, login attempts per connection, commands at once per user and in all, the idle timeout, a client that
 * stops reading, stdin that never ends. The door runs with small limits here; the defaults are in src/config.
 */

const DF = 'FROM debian:bookworm\nRUN true\n';
const { logger, logs } = capturedLogger();

let w: TestWeb & { local: InProcessGlue };
let home: ReturnType<typeof tempDir>;
const keys: Record<string, KeygenKey> = {};
const ssh = (who: string, args: string[], opts: Parameters<typeof doorSsh>[2] = {}) =>
  doorSsh({ port: w.sshDoor!.port, home: home.dir, key: keys[who]!.file }, args, opts);

beforeAll(async () => {
  w = await startTestWeb({
    logger,
    sshDoor: {
      authMs: 800,
      idleMs: 1500,
      stdinMs: 800,
      maxAuthAttempts: 3,
      maxUnauthenticatedPerAddress: 2,
      maxSessions: 2,
      maxSessionsPerUser: 1,
      recheckMs: 200,
    },
  });
  home = tempDir('kiln-door-limits-');
  for (const name of ['ann', 'ben', 'cat']) {
    const c = w.client();
    await c.signUp(name);
    keys[name] = sshKeygen(home.dir, name, 'ed25519');
    expect((await addKeyOnPage(c, keys[name]!.pub)).status).toBe(303);
  }
}, 120_000);

afterAll(async () => {
  await w?.close();
  home?.cleanup();
});

const connect = (who: string | undefined, extra: Record<string, unknown> = {}) =>
  doorConnect(w.sshDoor!, { ...(who ? { privateKey: readFileSync(keys[who]!.file) } : {}), ...extra });

const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));

describe('SSH door limits', () => {
  it('drops a connection that does not log in in time, and refuses a third silent one from the same address at once', async () => {
    const open = () =>
      new Promise<net.Socket>((resolve) => {
        const s = net.connect(w.sshDoor!.port, '127.0.0.1', () => resolve(s));
        s.on('error', () => undefined);
        s.resume(); // the banner is read and dropped: this client says nothing
      });
    const a = await open();
    const b = await open();
    const c = await open();
    await closed(c);
    expect(a.destroyed || b.destroyed).toBe(false);
    await Promise.all([closed(a), closed(b)]);
    expect(logs.filter((l) => l.msg === 'ssh door: no authentication in time, dropping the connection')).toHaveLength(
      2,
    );
    // The address may connect again once those are gone.
    expect((await ssh('ann', ['list'])).code).toBe(0);
  });

  it('ends a connection after maxAuthAttempts refused keys', async () => {
    const strangers = Array.from({ length: 8 }, () => ssh2.utils.parseKey(generateEd25519().private) as ParsedKey);
    let offered = 0;
    const agent = new (class extends ssh2.BaseAgent<ParsedKey> {
      getIdentities(cb: (e: Error | undefined, k?: ParsedKey[]) => void) {
        cb(
          undefined,
          strangers.map((k) => {
            offered++;
            return k;
          }),
        );
      }
      sign(_p: ParsedKey, _d: Buffer, o: unknown, cb?: (e: Error | undefined) => void) {
        ((typeof o === 'function' ? o : cb) as (e: Error | undefined) => void)(new Error('no'));
      }
    })();
    const before = logs.filter((l) => l.msg === 'ssh door: login refused').length;
    await expect(connect(undefined, { agent })).rejects.toThrow();
    expect(offered).toBe(8);
    expect(logs.filter((l) => l.msg === 'ssh door: login refused').length - before).toBe(3);
  });

  it('runs one command at a time per user and two in all: more get exit 5, and the slots come back', async () => {
    const annFollow = ssh('ann', ['build', 'gated'], { stdin: `${DF}# fake: gate ann\n` });
    await until(() => logs.some((l) => l.msg === 'ssh door: command' && l.command === 'build gated'));
    const again = await ssh('ann', ['list']);
    expect(again.code).toBe(EXIT.refused);
    expect(again.stderr).toMatch(/too many commands at once \(1 of yours, 1 in all\)/);
    const benFollow = ssh('ben', ['build', 'gated2'], { stdin: `${DF}# fake: gate ben\n` });
    await until(() => logs.some((l) => l.msg === 'ssh door: command' && l.command === 'build gated2'));
    const third = await ssh('cat', ['list']);
    expect(third.code).toBe(EXIT.refused);
    expect(third.stderr).toMatch(/0 of yours, 2 in all/);
    w.local.openGate('ann');
    w.local.openGate('ben');
    expect((await annFollow).code).toBe(EXIT.succeeded);
    expect((await benFollow).code).toBe(EXIT.succeeded);
    expect((await ssh('cat', ['list'])).code).toBe(0);
  });

  it('closes a connection that runs nothing for idleSeconds', async () => {
    const c = await connect('ann');
    await new Promise<void>((r) => c.once('close', () => r()));
    expect(logs.some((l) => l.msg === 'ssh door: idle connection closed')).toBe(true);
  });

  it('gives up on a client that stops reading, and on stdin that never ends; the user can run commands after', async () => {
    // About 6 MiB of short log lines, written fast (a shell loop of echo).
    const r = await ssh('ann', ['build', 'noisy', '--no-follow'], { stdin: `${DF}# fake-lines: 300000\n` });
    const id = Number(r.stdout);
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
    const c = await connect('ann');
    try {
      // `log` writes megabytes to a client that reads none of them: the door gives the command up.
      const from = logs.length;
      await new Promise<void>((resolve, reject) => {
        c.exec(`log ${id}`, (err: Error | undefined, ch: ClientChannel) => {
          if (err) return reject(err);
          ch.pause();
          resolve();
        });
      });
      await until(() =>
        logs.slice(from).some((l) => l.msg === 'ssh door: command ended' && l.code === EXIT.unavailable),
      );
      // `build` whose stdin is never closed.
      const waited = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        c.exec('build forever', (err: Error | undefined, ch: ClientChannel) => {
          if (err) return reject(err);
          let code: number | null = null;
          let stderr = '';
          ch.stderr.on('data', (d: Buffer) => (stderr += d));
          ch.on('data', () => undefined);
          ch.on('exit', (x: number | null) => (code = x));
          ch.on('close', () => resolve({ code, stderr }));
          ch.write('FROM debian:bookworm\n');
        });
      });
      expect(waited.stderr).toMatch(/no Dockerfile arrived on stdin in time/);
      expect(waited.code).toBe(EXIT.usage);
    } finally {
      c.end();
    }
    expect((await ssh('ann', ['list'])).code).toBe(0);
  });

  it('a follow in progress when the door stops is told so (exit 8); the build goes on', async () => {
    const following = ssh('ben', ['build', 'stopping'], { stdin: `${DF}# fake: gate stop\n` });
    // Once its build is requested, so that what the door stops is a follow with a build to name.
    await until(
      async () =>
        (await w
          .db('builds')
          .join('dockerfiles', 'dockerfiles.id', 'builds.dockerfile_id')
          .where('dockerfiles.name', 'stopping')
          .whereIn('builds.state', ['queued', 'running'])
          .first()) !== undefined,
    );
    await w.sshDoor!.close();
    const r = await following;
    expect(r.code).toBe(EXIT.unavailable);
    expect(r.stderr).toMatch(/stopped following build (\d+); it goes on/);
    w.local.openGate('stop');
    const id = Number(/stopped following build (\d+)/.exec(r.stderr)![1]);
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
  });
});
