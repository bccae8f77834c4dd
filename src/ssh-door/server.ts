/**
 * The SSH door's server (ssh2): public-key logins with the keys users added on their account page, then one
 * command per session channel, run by run.ts as that user. Forced-command semantics: what the client asks to run
 * is a command line for Kiln's parser, never a shell's; a shell request is an empty command (the usage). No pty,
 * forwarding of any kind, agent, X11, subsystem (sftp) or environment: each such request is refused and logged.
 */
import type { EventEmitter } from 'node:events';
import ssh2, { type AuthContext, type Connection, type ServerChannel } from 'ssh2';
import type { FrozenConfig } from '../config/index.js';
import { SSH_KEY_ALGORITHMS, sshFingerprint, type Core, type KeyLogin } from '../core/index.js';
import { KilnError } from '../shared/errors.js';
import { EXIT } from '../shared/exit-status.js';
import type { Logger } from '../shared/logger.js';
import { readCapped } from '../shared/read-capped.js';
import { listenForSsh } from '../shared/ssh-listener.js';
import { fingerprint } from '../shared/ssh-keys.js';
import { runDoorCommand, type CommandIo } from './run.js';

const { Server } = ssh2;

export interface SshDoorOptions {
  core: Core;
  config: FrozenConfig;
  logger: Logger;
  host: string;
  port: number;
  /** The door's own host key (OpenSSH format, ed25519). */
  hostKey: Buffer;
  /** The one user name accepted (`kiln`). */
  user: string;
  maxConnections: number;
  /** Commands running at once, in all and per user. */
  maxSessions: number;
  maxSessionsPerUser: number;
  /** A connection running nothing is closed after this long; so is a command whose client stops reading. */
  idleMs: number;
  /** Time from TCP connect to a successful login. */
  authMs?: number;
  /** Failed login attempts (keys offered and refused) per connection. */
  maxAuthAttempts?: number;
  /** Unauthenticated connections at once from one address. */
  maxUnauthenticatedPerAddress?: number;
  /** Session channels open at once on one connection. */
  maxChannelsPerConnection?: number;
  /** Time for a `build`'s Dockerfile to arrive on stdin. */
  stdinMs?: number;
  /** How often a following command checks that its key still opens Kiln. */
  recheckMs?: number;
}

export interface SshDoor {
  port: number;
  /** SHA-256 of the host key, base64 without padding (`ssh-keygen -l` prints it after `SHA256:`). */
  hostFingerprint: string;
  close(): Promise<void>;
}

/**
 * At a stop, how long commands get, once told, to end and have their channels closed (a follow says the build goes
 * on). One in the middle of requesting its build finishes that first: on a loaded machine that can take seconds, and
 * cutting it short loses the message (the client sees only the connection drop).
 */
const STOP_GRACE_MS = 15_000;

/** Session requests refused (ssh2 event names), each logged: no pty, environment, X11, agent, signals, sftp. */
const REFUSED_REQUESTS = ['pty', 'env', 'x11', 'auth-agent', 'signal', 'subsystem', 'sftp', 'window-change'] as const;

export async function startSshDoor(o: SshDoorOptions): Promise<SshDoor> {
  const { core, logger } = o;
  const hostParsed = ssh2.utils.parseKey(o.hostKey);
  if (hostParsed instanceof Error) throw hostParsed;
  const hostFingerprint = fingerprint(hostParsed.getPublicSSH());
  const maxAuthAttempts = o.maxAuthAttempts ?? 6;
  const maxChannels = o.maxChannelsPerConnection ?? 4;
  /** Aborted when the door stops: running commands end (telling their client why). */
  const stop = new AbortController();
  /**
   * Commands, each until its channel has closed: the client has read its exit status and last lines by then. OpenSSH
   * exits 255 on a disconnect, dropping output it has not printed yet, so the door ends connections only after.
   */
  const commands = new Set<Promise<void>>();
  let running = 0;
  const runningByUser = new Map<number, number>();
  let sshCommand = '';

  const server = new Server(
    {
      hostKeys: [o.hostKey],
      ident: 'kiln',
      keepaliveInterval: 30_000,
      keepaliveCountMax: 3,
      // No SHA-1 MACs (ssh2's defaults keep them for old clients; OpenSSH has offered SHA-2 ones since 5.9).
      algorithms: {
        hmac: ['hmac-sha2-256-etm@openssh.com', 'hmac-sha2-512-etm@openssh.com', 'hmac-sha2-256', 'hmac-sha2-512'],
      },
    },
    (client: Connection, info: { ip: string; port: number }) => {
      const peer = `${info.ip}:${info.port}`;
      let failures = 0;
      let login: (KeyLogin & { fingerprint: string }) | undefined;
      let channels = 0;
      let busy = 0;
      let idle: NodeJS.Timeout | undefined;
      const armIdle = () => {
        clearTimeout(idle);
        if (busy === 0)
          idle = setTimeout(() => {
            logger.info({ peer }, 'ssh door: idle connection closed');
            client.end();
          }, o.idleMs);
      };

      const refuse = (ctx: AuthContext, why: string, detail: Record<string, unknown> = {}) => {
        // OpenSSH clients start with "none" to learn the methods: that is no attempt.
        if (ctx.method !== 'none') {
          failures++;
          logger.warn(
            { peer, why, user: ctx.username.slice(0, 64), method: ctx.method, ...detail },
            'ssh door: login refused',
          );
        }
        if (failures >= maxAuthAttempts) {
          client.end();
          return;
        }
        ctx.reject(['publickey']);
      };

      const authenticate = async (ctx: AuthContext): Promise<void> => {
        if (ctx.method !== 'publickey') return refuse(ctx, 'only public keys');
        if (ctx.username !== o.user) return refuse(ctx, `the user name must be ${o.user}`);
        const algo = ctx.key.algo;
        if (!(SSH_KEY_ALGORITHMS as readonly string[]).includes(algo)) return refuse(ctx, 'key type', { algo });
        // SHA-1 RSA signatures ("ssh-rsa" without rsa-sha2-*) are refused, as OpenSSH >= 8.8 does.
        if (algo === 'ssh-rsa' && !ctx.hashAlgo) return refuse(ctx, 'ssh-rsa SHA-1 signature', { algo });
        const fp = sshFingerprint(ctx.key.data);
        const found = await core.sshKeys.login(fp, info.ip);
        if (!found || found.algorithm !== algo) return refuse(ctx, 'unknown key', { fingerprint: fp });
        // Without a signature the client only asks whether this key would do (it has not used the private key yet).
        if (!ctx.signature) return ctx.accept();
        const key = ssh2.utils.parseKey(ctx.key.data);
        if (key instanceof Error || !ctx.blob || key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true)
          return refuse(ctx, 'bad signature', { fingerprint: fp });
        login = { ...found, fingerprint: fp };
        logger.info({ peer, user: found.actor.id, key: found.keyId }, 'ssh door: logged in');
        core.sshKeys
          .used(found.keyId)
          .catch((e: unknown) => logger.warn({ err: e }, 'ssh door: last use not recorded'));
        ctx.accept();
      };
      client.on('authentication', (ctx: AuthContext) => {
        authenticate(ctx).catch((e: unknown) => {
          logger.error({ err: e, peer }, 'ssh door: login check failed');
          refuse(ctx, 'internal');
        });
      });

      client.on('ready', () => {
        const me = login!;
        armIdle();
        // Global requests (tcpip-forward, streamlocal-forward): refused. `no-more-sessions` ssh2 answers itself.
        client.on('request', (_accept, reject, name) => {
          logger.info({ peer, user: me.actor.id, request: name }, 'ssh door: refused');
          reject?.();
        });
        // Channel types other than `session` (direct-tcpip, streamlocal) have no listener: ssh2 refuses them as
        // administratively prohibited.
        client.on('session', (accept, reject) => {
          if (channels >= maxChannels) return reject();
          channels++;
          const session = accept();
          session.once('close', () => channels--);
          for (const what of REFUSED_REQUESTS) {
            (session as unknown as EventEmitter).on(what, (_accept: unknown, reject?: () => void) => {
              if (what !== 'window-change')
                logger.info({ peer, user: me.actor.id, request: what }, 'ssh door: refused');
              reject?.();
            });
          }
          const start = (ch: ServerChannel | undefined, command: string) => {
            session.removeAllListeners('exec').removeAllListeners('shell');
            if (ch) void execute(me, ch, command);
          };
          session.once('exec', (acc, _rej, req) => start(acc(), req.command));
          session.once('shell', (acc) => start(acc(), ''));
        });
      });

      const execute = async (
        login: KeyLogin & { fingerprint: string },
        channel: ServerChannel,
        command: string,
      ): Promise<void> => {
        const user = login.actor.id;
        busy++;
        clearTimeout(idle);
        const gone = new AbortController();
        const closed = new Promise<void>((r) =>
          channel.once('close', () => {
            gone.abort();
            r();
          }),
        );
        commands.add(closed);
        void closed.then(() => commands.delete(closed));
        const io = channelIo(channel, gone.signal, AbortSignal.any([gone.signal, stop.signal]), o);
        const mine = runningByUser.get(user) ?? 0;
        let code: number;
        if (stop.signal.aborted) {
          await io.err('kiln: the server is stopping; try again in a moment.\n').catch(() => undefined);
          code = EXIT.unavailable;
        } else if (running >= o.maxSessions || mine >= o.maxSessionsPerUser) {
          await io
            .err(
              `kiln: too many commands at once (${mine} of yours, ${running} in all); try again when one has ended.\n`,
            )
            .catch(() => undefined);
          code = EXIT.refused;
        } else {
          running++;
          runningByUser.set(user, mine + 1);
          logger.info({ peer, user, key: login.keyId, command: command.slice(0, 200) }, 'ssh door: command');
          try {
            code = await runDoorCommand(
              {
                core,
                config: o.config,
                logger,
                keyName: login.keyName,
                sshCommand,
                recheckMs: o.recheckMs ?? 2000,
                who: async () => {
                  const now = await core.sshKeys.login(login.fingerprint, info.ip);
                  return now?.actor.id === user ? now.actor : undefined;
                },
              },
              command,
              io,
            );
          } finally {
            running--;
            const n = (runningByUser.get(user) ?? 1) - 1;
            if (n > 0) runningByUser.set(user, n);
            else runningByUser.delete(user);
          }
          logger.info({ peer, user, code }, 'ssh door: command ended');
        }
        busy--;
        armIdle();
        // A client that left gets nothing more.
        if (!gone.signal.aborted) {
          try {
            channel.exit(code);
            channel.end();
          } catch (e) {
            logger.debug({ peer, err: e }, 'ssh door: channel already closed');
          }
        }
      };

      client.on('error', (e) => logger.debug({ peer, err: e.message }, 'ssh door: connection error'));
      client.on('close', () => clearTimeout(idle));
    },
  );

  const listener = await listenForSsh(server, {
    host: o.host,
    port: o.port,
    maxConnections: o.maxConnections,
    handshakeMs: o.authMs ?? 30_000,
    maxUnauthenticatedPerAddress: o.maxUnauthenticatedPerAddress ?? 8,
    logger,
    label: 'ssh door',
  }).catch((e: NodeJS.ErrnoException) => {
    throw new KilnError('invalid_input', `The SSH door cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}`, {
      cause: e,
    });
  });
  sshCommand = `ssh${listener.port === 22 ? '' : ` -p ${listener.port}`} ${o.user}@${publicHost(o.config, o.host)}`;
  logger.info(
    { host: o.host, port: listener.port, hostFingerprint: `SHA256:${hostFingerprint}` },
    'ssh door listening',
  );
  return {
    port: listener.port,
    hostFingerprint,
    close: async () => {
      // Commands are told first (a follow says the build goes on); every connection ends once their channels have
      // closed, or at the grace's end.
      stop.abort();
      await Promise.race([Promise.allSettled(commands), new Promise((r) => setTimeout(r, STOP_GRACE_MS).unref())]);
      await listener.close();
    },
  };
}

/** The host name users type: the public URL's, else the listen address. */
function publicHost(config: FrozenConfig, host: string): string {
  if (config.web.publicUrl) return new URL(config.web.publicUrl).hostname;
  return host === '0.0.0.0' || host === '::' ? 'HOST' : host;
}

/**
 * Text out with backpressure (a client that stops reading for `idleMs` is given up on), stdin in with caps. `gone`:
 * the client left (nothing more is written); `signal`: the command should end (gone, or the door stopping).
 */
function channelIo(
  channel: ServerChannel,
  gone: AbortSignal,
  signal: AbortSignal,
  o: Pick<SshDoorOptions, 'idleMs' | 'stdinMs'>,
): CommandIo {
  const write = (stream: NodeJS.WritableStream, text: string) =>
    new Promise<void>((resolve, reject) => {
      if (gone.aborted) return reject(new KilnError('timeout', 'the client has gone'));
      if (stream.write(text)) return resolve();
      const done = (fn: () => void) => () => {
        clearTimeout(timer);
        stream.off('drain', onDrain);
        gone.removeEventListener('abort', onGone);
        fn();
      };
      const onDrain = done(resolve);
      const onGone = done(() => reject(new KilnError('timeout', 'the client has gone')));
      const timer = setTimeout(
        done(() => {
          channel.close();
          reject(new KilnError('timeout', 'the client stopped reading'));
        }),
        o.idleMs,
      );
      stream.once('drain', onDrain);
      gone.addEventListener('abort', onGone, { once: true });
    });
  return {
    out: (text) => write(channel, text),
    err: (text) => write(channel.stderr, text),
    readStdin: (max) => readCapped(channel, max, o.stdinMs ?? 60_000),
    signal,
  };
}
