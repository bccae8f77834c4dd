import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import ssh2, { type ClientChannel, type ParsedKey } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, PasswordHasher, createUsers } from '../../src/core/index.js';
import { findBuild, findUserByName } from '../../src/db/index.js';
import { EXIT, EXIT_HELP } from '../../src/shared/exit-status.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import {
  addKeyOnPage,
  capturedLogger,
  clientEnv,
  doorConnect,
  doorSsh,
  opensshOptions,
  sshKeygen,
  type DoorClient,
  type KeygenKey,
} from '../helpers/ssh-door.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { ciEnv, runKiln, startKiln } from '../helpers/client.js';
import { ApiClient, addToken, addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

/**
 * The users' SSH door end to end: the real OpenSSH client (keys made by ssh-keygen, host key learnt into a temp
 * known_hosts) against the door of the in-process web stack (real glue, local backend, fake SDK), keys added through
 * the account page. Exit statuses are the shared table's (src/shared/exit-status.ts), 255 the ssh client's own failure.
 */

const DF = 'FROM debian:bookworm\nRUN true\n';
const { logger, logs } = capturedLogger();

let w: TestWeb & { local: InProcessGlue };
let home: ReturnType<typeof tempDir>;
let alice: HttpClient;
let bob: HttpClient;
let keys: Record<'alice' | 'aliceRsa' | 'bob' | 'stranger', KeygenKey>;
const refused = (request: string) => logs.some((l) => l.msg === 'ssh door: refused' && l.request === request);

const client = (key: KeygenKey, user?: string): DoorClient => ({
  port: w.sshDoor!.port,
  home: home.dir,
  key: key.file,
  ...(user ? { user } : {}),
});
const ssh = (key: KeygenKey, args: string[], opts: Parameters<typeof doorSsh>[2] = {}, user?: string) =>
  doorSsh(client(key, user), args, opts);

beforeAll(async () => {
  w = await startTestWeb({ logger, sshDoor: { recheckMs: 100, stdinMs: 5000 } });
  home = tempDir('kiln-door-client-');
  // Keys first: a slow keygen between two requests of a session would outlast the server's keep-alive.
  keys = {
    alice: sshKeygen(home.dir, 'alice', 'ed25519'),
    aliceRsa: sshKeygen(home.dir, 'alice-rsa', 'rsa', 3072),
    bob: sshKeygen(home.dir, 'bob', 'ed25519'),
    stranger: sshKeygen(home.dir, 'stranger', 'ed25519'),
  };
  alice = w.client();
  await alice.signUp('alice');
  bob = w.client();
  await bob.signUp('bob');
  for (const [c, k] of [
    [alice, keys.alice],
    [alice, keys.aliceRsa],
    [bob, keys.bob],
  ] as const) {
    const r = await addKeyOnPage(c, k.pub);
    expect(r.status).toBe(303);
  }
}, 120_000);

afterAll(async () => {
  await w?.close();
  home?.cleanup();
});

describe('the SSH door with the OpenSSH client', () => {
  it('learns the door host key (not the glue one) and builds from stdin, following the log to exit 0', async () => {
    const r = await ssh(keys.alice, ['build', 'web'], { stdin: DF });
    expect(r.stderr).toMatch(/^kiln: build (\d+) of web requested \(new Dockerfile, sha256:[0-9a-f]{12}\)$/m);
    expect(r.stderr).toMatch(/^kiln: build \d+ succeeded$/m);
    expect(r.stdout).toMatch(/\[kiln\] build succeeded/);
    expect(r.stdout).not.toMatch(/##kiln/);
    expect(r.code).toBe(EXIT.succeeded);
    const id = Number(/build (\d+) of web/.exec(r.stderr)![1]);
    expect(await findBuild(w.db, id, null)).toMatchObject({ state: 'succeeded', trigger: 'ssh' });
    // The known_hosts entry accept-new wrote is the door's key.
    const known = readFileSync(path.join(home.dir, 'known_hosts'), 'utf8').trim().split(' ');
    const fp = createHash('sha256').update(Buffer.from(known[2]!, 'base64')).digest('base64').replace(/=+$/, '');
    expect(fp).toBe(w.sshDoor!.hostFingerprint);
    // The key's last use is on the account page now.
    const page = await (await alice.get('/account')).text();
    const row = page.split('<tr id="ssh-key-').find((r) => r.includes(keys.alice.fingerprint))!;
    expect(row).toMatch(/<td><time>\d{4}-\d\d-\d\d \d\d:\d\d<\/time><\/td>\s*<td class="actions">/);
  });

  it('an RSA key works with SHA-2 signatures; saving again makes a new version, or keeps it when unchanged', async () => {
    const changed = await ssh(keys.aliceRsa, ['build', 'web'], { stdin: `${DF}RUN echo two\n` });
    expect(changed.stderr).toMatch(/\(Dockerfile saved, sha256:[0-9a-f]{12}\)/);
    expect(changed.code).toBe(EXIT.succeeded);
    const versions = async () =>
      Number(
        (
          await w
            .db('dockerfile_versions as v')
            .join('dockerfiles as d', 'd.id', 'v.dockerfile_id')
            .where('d.name', 'web')
            .count({ n: '*' })
        )[0]!.n,
      );
    expect(await versions()).toBe(2);
    const same = await ssh(keys.aliceRsa, ['build', 'web', '--no-follow'], { stdin: `${DF}RUN echo two\n` });
    expect(same.code).toBe(EXIT.succeeded);
    expect(same.stdout).toMatch(/^\d+\n$/);
    expect(await versions()).toBe(2);
    await w.waitForBuild(Number(same.stdout));
  });

  it('a failing build exits 1 with the reason; a policy refusal exits 4 with its findings and stores nothing', async () => {
    const failed = await ssh(keys.alice, ['build', 'broken'], { stdin: `${DF}# fake: fail\n` });
    expect(failed.code).toBe(EXIT.failed);
    expect(failed.stdout).toMatch(/Step 2\/2 : RUN true/);
    expect(failed.stderr).toMatch(/^kiln: build \d+ failed: RUN step 2 failed: exit 100$/m);
    const before = await w.db('dockerfiles').count({ n: '*' });
    const refusedDf = await ssh(keys.alice, ['build', 'other'], { stdin: 'FROM alpine:3.19\nRUN true\n' });
    expect(refusedDf.code).toBe(EXIT.dockerfileRefused);
    expect(refusedDf.stderr).toMatch(/^ {2}line 1: /m);
    expect(await w.db('dockerfiles').count({ n: '*' })).toEqual(before);
  });

  it('status, log and list; another user sees none of it (not found, exit 5)', async () => {
    const r = await ssh(keys.alice, ['build', 'listed', '--no-follow'], { stdin: DF });
    const id = r.stdout.trim();
    await w.waitForBuild(Number(id));
    const status = await ssh(keys.alice, ['status', id]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^build {6}${id}$`, 'm'));
    expect(status.stdout).toMatch(/^state {6}succeeded$/m);
    expect(status.stdout).toMatch(/^artifact {3}image\.raw \d+ bytes sha256:[0-9a-f]{64}$/m);
    const log = await ssh(keys.alice, ['log', id]);
    expect(log.code).toBe(EXIT.succeeded);
    expect(log.stdout).toMatch(/\[kiln\] build succeeded/);
    const noFollow = await ssh(keys.alice, ['log', id, '--no-follow']);
    expect(noFollow.stdout).toBe(log.stdout);
    const list = await ssh(keys.alice, ['list']);
    expect(list.stdout).toMatch(new RegExp(`^${id} +succeeded +listed `, 'm'));
    for (const cmd of [
      ['status', id],
      ['log', id],
    ]) {
      const other = await ssh(keys.bob, cmd);
      expect(other.code).toBe(EXIT.refused);
      expect(other.stdout).toBe('');
      expect(other.stderr).toMatch(/No such build/);
    }
    expect((await ssh(keys.bob, ['list'])).stdout).not.toMatch(/listed/);
  });

  it('help, an empty command (a shell request) and unknown commands print the usage and exit 2', async () => {
    const help = await ssh(keys.alice, ['help']);
    expect(help.code).toBe(EXIT.usage);
    expect(help.stdout).toMatch(/^usage: ssh -p \d+ kiln@127\.0\.0\.1 COMMAND$/m);
    expect(help.stdout).toContain(EXIT_HELP);
    const shell = await ssh(keys.alice, []);
    expect(shell.code).toBe(EXIT.usage);
    expect(shell.stderr).toMatch(/Hi alice! .*no shell/);
    const unknown = await ssh(keys.alice, ['rm', '-rf', '/']);
    expect(unknown.code).toBe(EXIT.usage);
    expect(unknown.stderr).toMatch(/Kiln has no command "rm"/);
    expect(unknown.stderr).toMatch(/usage:/);
  });

  it.each([
    ["build 'x;touch PWNED'", /lowercase letters/],
    ['build x;touch PWNED', /takes 1 argument/],
    ['build $(id)', /lowercase letters/],
    ["build '$(touch PWNED)'", /lowercase letters/],
    ['build `id`', /lowercase letters/],
    ['build "x y" && touch PWNED', /takes 1 argument/],
    ['status 1|id', /not a build number/],
    ['status 1 | touch PWNED', /takes 1 argument/],
    ["build 'unclosed", /quote is not closed/],
    ['build x\ttouch PWNED', /control character/],
    ['build ../../etc/passwd', /lowercase letters/],
    ['log -1', /Unknown option/],
  ])('case 26: %j is plain text to the door: refused with exit 2, nothing runs or is stored', async (line, why) => {
    const pwned = path.join(home.dir, 'pwned');
    const before = await w.db('dockerfiles').count({ n: '*' });
    const r = await ssh(keys.alice, [line.replaceAll('PWNED', pwned)], { stdin: DF });
    expect(r.code).toBe(EXIT.usage);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(why);
    expect(existsSync(pwned)).toBe(false);
    expect(await w.db('dockerfiles').count({ n: '*' })).toEqual(before);
  });

  it('an oversized Dockerfile on stdin is refused cleanly (exit 4), nothing stored', async () => {
    const before = await w.db('dockerfiles').count({ n: '*' });
    const big = `${DF}${'# padding padding padding\n'.repeat(40_000)}`;
    const r = await ssh(keys.alice, ['build', 'huge'], { stdin: big });
    expect(r.code).toBe(EXIT.dockerfileRefused);
    expect(r.stderr).toMatch(/The Dockerfile is larger than 64 KiB/);
    expect(await w.db('dockerfiles').count({ n: '*' })).toEqual(before);
    // The connection's refusal left the door serving.
    expect((await ssh(keys.alice, ['list'])).code).toBe(0);
  });

  it('an unknown key, a wrong user name and a SHA-1 RSA signature are refused (255, permission denied)', async () => {
    const stranger = await ssh(keys.stranger, ['list']);
    expect(stranger.code).toBe(255);
    expect(stranger.stderr).toMatch(/Permission denied \(publickey\)/);
    const root = await ssh(keys.alice, ['list'], {}, 'alice');
    expect(root.code).toBe(255);
    expect(logs.some((l) => l.msg === 'ssh door: login refused' && l.why === 'the user name must be kiln')).toBe(true);
  });

  it('case 30: an RSA key signing with SHA-1 (ssh-rsa) is refused; the same key with rsa-sha2-256 gets in', async () => {
    const sha1 = await ssh(keys.aliceRsa, ['list'], { options: ['-o', 'PubkeyAcceptedAlgorithms=ssh-rsa'] });
    expect(sha1.code).toBe(255);
    expect(logs.some((l) => l.msg === 'ssh door: login refused' && l.why === 'ssh-rsa SHA-1 signature')).toBe(true);
    const sha2 = await ssh(keys.aliceRsa, ['list'], { options: ['-o', 'PubkeyAcceptedAlgorithms=rsa-sha2-256'] });
    expect(sha2.code).toBe(0);
  });

  it('a revoked key and a disabled user are refused at once; a follow in progress is cut (exit 7), the build goes on', async () => {
    const carolKey = sshKeygen(home.dir, 'carol', 'ed25519');
    const spare = sshKeygen(home.dir, 'carol-spare', 'ed25519');
    const carolUser = await addUser(w.db, 'carol', 'user');
    const carol = w.client();
    await carol.login(carolUser.username, carolUser.password);
    await addKeyOnPage(carol, carolKey.pub, 'laptop');
    await addKeyOnPage(carol, spare.pub, 'spare');
    expect((await ssh(spare, ['list'])).code).toBe(0);
    // Revoked on the page: the next login fails.
    const page = await (await carol.get('/account')).text();
    const spareId = /id="ssh-key-(\d+)">\s*<td>spare</.exec(page)![1]!;
    const del = await carol.postForm(`/account/ssh-keys/${spareId}/delete`, { _csrf: await carol.token('/account') });
    expect(del.status).toBe(303);
    expect((await ssh(spare, ['list'])).code).toBe(255);

    // A build that waits at a gate, followed; the admin disables carol meanwhile.
    const following = ssh(carolKey, ['build', 'slow'], { stdin: `${DF}# fake: gate carol\n` });
    const carolId = (await findUserByName(w.db, 'carol'))!.id;
    const row = await until(
      async () => (await w.db('builds').where({ owner_id: carolId }).first()) as { id: number } | undefined,
    );
    await until(() => logs.some((l) => l.msg === 'ssh door: command' && String(l.command).startsWith('build slow')));
    await createUsers({ db: w.db, hasher: new PasswordHasher(1), logger }).setDisabled(CLI, {
      username: 'carol',
      disabled: true,
    });
    const cut = await following;
    expect(cut.code).toBe(EXIT.auth);
    expect(cut.stderr).toMatch(/no longer opens Kiln/);
    expect(cut.stderr).toMatch(/goes on/);
    expect((await ssh(carolKey, ['list'])).code).toBe(255);
    w.local.openGate('carol');
    expect((await w.waitForBuild(row.id)).state).toBe('succeeded');
  });

  it('case 27: pty (-tt), sftp (-s and the sftp client), stdio and remote forwarding, SetEnv, agent (-A) and X11 (-X) are refused; plain commands still run', async () => {
    const tty = await ssh(keys.alice, ['list'], { options: ['-tt'] });
    expect(tty.code).toBe(255);
    expect(tty.stdout).toBe('');
    expect(tty.stderr).toMatch(/PTY allocation request failed/);
    expect(refused('pty')).toBe(true);

    const subsystem = await ssh(keys.alice, ['sftp'], { options: ['-s'] });
    expect(subsystem.code).not.toBe(0);
    expect(subsystem.stdout).toBe('');
    expect(refused('subsystem') || refused('sftp')).toBe(true);
    const sftp = await new Promise<number>((resolve) => {
      const p = spawn('sftp', [...opensshOptions(client(keys.alice), '-P'), '-b', '-', 'kiln@127.0.0.1'], {
        env: clientEnv(client(keys.alice)),
      });
      p.stdin.end('ls /\n');
      p.on('close', (c) => resolve(c ?? -1));
    });
    expect(sftp).not.toBe(0);

    const webPort = new URL(w.url).port;
    const stdio = await ssh(keys.alice, [], { options: ['-W', `127.0.0.1:${webPort}`] });
    expect(stdio.code).toBe(255);
    expect(stdio.stderr).toMatch(/stdio forwarding failed/);
    const remote = await ssh(keys.alice, ['list'], {
      options: ['-o', 'ExitOnForwardFailure=yes', '-R', '0:127.0.0.1:9'],
    });
    expect(remote.code).toBe(255);
    expect(remote.stdout).toBe('');
    expect(refused('tcpip-forward')).toBe(true);

    const env = await ssh(keys.alice, ['list'], { options: ['-o', 'SetEnv=KILN_WEB_PORT=1 LD_PRELOAD=/tmp/x.so'] });
    expect(env.code).toBe(0);
    expect(refused('env')).toBe(true);

    // -A with a real agent and -X with a display: asked for, refused, and the command runs without them.
    const sock = path.join(home.dir, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      await until(() => existsSync(sock));
      const fwd = await ssh(keys.alice, ['list'], {
        options: ['-A', '-X'],
        env: { SSH_AUTH_SOCK: sock, DISPLAY: ':99' },
      });
      expect(fwd.code).toBe(0);
      expect(refused('auth-agent')).toBe(true);
      expect(refused('x11')).toBe(true);
    } finally {
      agent.kill();
    }
  });

  it('case 27: -L forwarding gets no connection through (direct-tcpip is refused)', async () => {
    const lport = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const webPort = new URL(w.url).port;
    const fwd = spawn(
      'ssh',
      [
        ...opensshOptions(client(keys.alice)),
        '-N',
        '-o',
        'ExitOnForwardFailure=yes',
        '-L',
        `${lport}:127.0.0.1:${webPort}`,
        'kiln@127.0.0.1',
      ],
      { env: clientEnv(client(keys.alice)) },
    );
    let stderr = '';
    fwd.stderr.on('data', (d: Buffer) => (stderr += d));
    try {
      const answer = await until(
        () =>
          new Promise<string | false>((resolve) => {
            const s = net.connect(lport, '127.0.0.1');
            let got = '';
            s.on('error', () => resolve(false));
            s.on('connect', () => s.write('GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n'));
            s.on('data', (d: Buffer) => (got += d));
            // Connected to ssh's local listener, which closes it when the door refuses the channel.
            s.on('close', () => resolve(stderr.includes('prohibited') ? `closed:${got}` : false));
          }),
      );
      expect(answer).toBe('closed:');
    } finally {
      fwd.kill();
    }
  });

  it('case 27: agent and X11 forwarding requests are refused (ssh2 client), and the command runs without them', async () => {
    const key = ssh2.utils.parseKey(readFileSync(keys.alice.file)) as ParsedKey;
    const agent = new (class extends ssh2.BaseAgent<ParsedKey> {
      getIdentities(cb: (e: Error | undefined, k?: ParsedKey[]) => void) {
        cb(undefined, [key]);
      }
      sign(_p: ParsedKey, data: Buffer, o: unknown, cb?: (e: Error | undefined, s?: Buffer) => void) {
        ((typeof o === 'function' ? o : cb) as (e: Error | undefined, s?: Buffer) => void)(
          undefined,
          key.sign(data) as Buffer,
        );
      }
    })();
    const c = await connect({ agent });
    try {
      for (const opt of [{ agentForward: true }, { x11: true }]) {
        await expect(exec(c, 'list', opt)).rejects.toThrow(/agent|X11/i);
      }
      expect(refused('auth-agent')).toBe(true);
      expect(refused('x11')).toBe(true);
      expect(await exec(c, 'list')).toMatchObject({ code: 0 });
    } finally {
      c.end();
    }
  });

  it('case 28: a client offering a registered public key but signing with another private key is refused', async () => {
    const pub = ssh2.utils.parseKey(keys.alice.pub) as ParsedKey;
    const impostor = ssh2.utils.parseKey(readFileSync(keys.stranger.file)) as ParsedKey;
    let signed = 0;
    const agent = new (class extends ssh2.BaseAgent<ParsedKey> {
      getIdentities(cb: (e: Error | undefined, k?: ParsedKey[]) => void) {
        cb(undefined, [pub]);
      }
      sign(_p: ParsedKey, data: Buffer, o: unknown, cb?: (e: Error | undefined, s?: Buffer) => void) {
        signed++;
        ((typeof o === 'function' ? o : cb) as (e: Error | undefined, s?: Buffer) => void)(
          undefined,
          impostor.sign(data) as Buffer,
        );
      }
    })();
    await expect(connect({ agent })).rejects.toThrow(/authentication methods failed/i);
    expect(signed).toBeGreaterThan(0);
    expect(logs.some((l) => l.msg === 'ssh door: login refused' && l.why === 'bad signature')).toBe(true);
  });
});

/**
 * A CI script may use both doors (`kiln client build` in one job, `ssh kiln@HOST build NAME < Dockerfile` in
 * another) and test one set of numbers: the README's table (src/shared/exit-status.ts). Literal numbers here, as
 * pipelines write them.
 */
describe('one table of exit statuses: kiln client and the SSH door', () => {
  let env: Record<string, string>;
  let api: ApiClient;
  beforeAll(async () => {
    const token = await addToken(w, 'alice', ['build']);
    env = ciEnv({ KILN_URL: w.url, KILN_TOKEN: token });
    api = new ApiClient(w.url, token);
  });
  /** The same Dockerfile built through each door (as `NAME-api` and `NAME-ssh`, unless `name` is shared). */
  const both = async (name: string, dockerfile: string | Buffer, o: { sameName?: boolean } = {}) => {
    const file = path.join(home.dir, `${name}.Dockerfile`);
    writeFileSync(file, dockerfile);
    const [client, door] = await Promise.all([
      runKiln(['client', 'build', '--name', o.sameName ? name : `${name}-api`, '--dockerfile', file, '--wait'], env),
      ssh(keys.alice, ['build', o.sameName ? name : `${name}-ssh`], { stdin: dockerfile }),
    ]);
    return { client: client.code, door: door.code, stderr: `${client.stderr}\n${door.stderr}` };
  };
  const codes = (r: { client: number | null; door: number }) => ({ client: r.client, door: r.door });

  it('a build that succeeds, fails or is refused gives the same status from both: 0, 1, 4; nothing refused is stored', async () => {
    expect(codes(await both('same-ok', DF))).toEqual({ client: 0, door: 0 });
    expect(codes(await both('same-fails', `${DF}# fake: fail\n`))).toEqual({ client: 1, door: 1 });
    const before = await w.db('dockerfiles').count({ n: '*' });
    // 4: the Dockerfile refused, by its policy or by the input rules (not UTF-8, empty, too large).
    const policy = await both('same-policy', 'FROM alpine:3.19\nRUN true\n');
    expect(codes(policy)).toEqual({ client: 4, door: 4 });
    expect(policy.stderr).toMatch(/line 1: /);
    const latin1 = await both('same-latin1', Buffer.from('FROM debian:bookworm\n# caf\xe9\n', 'latin1'));
    expect(codes(latin1), latin1.stderr).toEqual({ client: 4, door: 4 });
    expect(latin1.stderr).toMatch(/not valid UTF-8/);
    expect(codes(await both('same-empty', '\n'))).toEqual({ client: 4, door: 4 });
    const huge = await both('same-huge', `${DF}${'# padding padding padding\n'.repeat(40_000)}`);
    expect(codes(huge)).toEqual({ client: 4, door: 4 });
    expect(huge.stderr).toMatch(/The Dockerfile is larger than 64 KiB/);
    expect(await w.db('dockerfiles').count({ n: '*' })).toEqual(before);
  });

  it('refused otherwise (a switched-off job, a build of another user) is 5 from both; a cancelled build is 3', async () => {
    expect((await api.putDockerfile('same-off', DF, { settings: { enabled: false } })).status).toBe(201);
    const off = await both('same-off', DF, { sameName: true });
    expect(codes(off)).toEqual({ client: 5, door: 5 });
    expect(off.stderr).toMatch(/switched off/);

    const mine = await ssh(keys.alice, ['build', 'same-mine', '--no-follow'], { stdin: DF });
    const id = mine.stdout.trim();
    await w.waitForBuild(Number(id));
    const bobEnv = ciEnv({ KILN_URL: w.url, KILN_TOKEN: await addToken(w, 'bob', ['read']) });
    const [client, door] = await Promise.all([
      runKiln(['client', 'status', id], bobEnv),
      ssh(keys.bob, ['status', id]),
    ]);
    expect({ client: client.code, door: door.code }).toEqual({ client: 5, door: 5 });

    // Both follow one build; it is cancelled while it runs.
    const following = ssh(keys.alice, ['build', 'same-cancel'], { stdin: `${DF}# fake: gate same-cancel\n` });
    const started = await until(
      async () =>
        (await w
          .db('dockerfiles as d')
          .join('builds as b', 'b.dockerfile_id', 'd.id')
          .where('d.name', 'same-cancel')
          .first('b.id')) as { id: number } | undefined,
    );
    await w.waitForBuild(started.id, (b) => b.state === 'running');
    const clientFollow = startKiln(['client', 'log', String(started.id), '--follow'], env);
    expect((await api.post(`/builds/${started.id}/cancel`)).status).toBe(200);
    w.local.openGate('same-cancel');
    expect({ client: (await clientFollow.done).code, door: (await following).code }).toEqual({ client: 3, door: 3 });
  });
});

const connect = (extra: Record<string, unknown>) => doorConnect(w.sshDoor!, extra);

function exec(
  c: ssh2.Client,
  cmd: string,
  opts: Record<string, unknown> = {},
): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, opts, (err: Error | undefined, ch: ClientChannel) => {
      if (err) return reject(err);
      let stdout = '';
      let code: number | null = null;
      ch.on('data', (d: Buffer) => (stdout += d));
      ch.stderr.resume();
      ch.on('exit', (x: number | null) => (code = x));
      ch.on('close', () => resolve({ code, stdout }));
      ch.end();
    });
  });
}
