import { timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import ssh2, { type AuthContext, type ParsedKey, type ServerChannel } from 'ssh2';
import type { FrozenConfig } from '../config/index.js';
import { toKilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { listenForSsh } from '../shared/ssh-listener.js';
import { defaultKeyPaths, ensureKeyPair, fingerprint, parseAuthorizedKeys } from '../shared/ssh-keys.js';
import { BODY_TIMEOUT_MS, errorDocument, exitCodeFor, readCapped, type Glue } from './dispatch.js';
import { HELD_VERBS, STDIN_VERBS } from '../protocol/index.js';

const { Server } = ssh2;

export interface SshServerOptions {
  glue: Glue;
  logger: Logger;
  host: string;
  port: number;
  /** Host private key (OpenSSH format). */
  hostKey: Buffer;
  /** The only keys that may log in (the web's). */
  authorizedKeys: ParsedKey[];
  /** The only user name accepted. */
  username: string;
  maxConnections?: number;
  /** A connection that has not authenticated within this time is dropped. */
  handshakeTimeoutMs?: number;
  /** Concurrent sessions (one exec each) per connection. */
  maxSessionsPerConnection?: number;
  /** Failed authentication attempts before the connection is dropped. */
  maxAuthAttempts?: number;
  /** Longest wait for a request body (job.put) to end. */
  bodyTimeoutMs?: number;
}

export interface GlueSshServer {
  port: number;
  hostFingerprint: string;
  close(): Promise<void>;
}

/**
 * The built-in SSH front door (the one-machine setup). It accepts public-key authentication with the authorized
 * keys only, and on an authenticated connection only `session` channels with a single `exec` each; the exec's
 * command line goes to the same dispatcher `kiln glue` uses, the channel's stdin is the request body, and the exit
 * status is the CLI's.
 *
 * Everything else is refused by not listening for it: ssh2 rejects channel types and channel/global requests that
 * have no listener (pty, shell, env, x11, auth-agent, sftp, subsystem, signal, direct-tcpip, tcpip-forward, ...).
 */
export async function startSshServer(o: SshServerOptions): Promise<GlueSshServer> {
  const { glue, logger } = o;
  const hostParsed = ssh2.utils.parseKey(o.hostKey);
  if (hostParsed instanceof Error) throw hostParsed;
  const hostFingerprint = fingerprint(hostParsed.getPublicSSH());
  const allowed = o.authorizedKeys.map((k) => ({ key: k, blob: k.getPublicSSH() }));
  const wantUser = Buffer.from(o.username);

  const server = new Server(
    {
      hostKeys: [o.hostKey],
      ident: 'kiln-glue',
      keepaliveInterval: 30_000,
    },
    (client, info) => {
      const peer = { ip: info.ip, port: info.port };
      let sessions = 0;
      let authFailures = 0;

      client.on('authentication', (ctx: AuthContext) => {
        logger.debug({ peer, method: ctx.method }, 'ssh: authentication attempt');
        if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
        let ok = constantTimeEqual(Buffer.from(ctx.username), wantUser);
        // Compare against every authorized key so timing does not tell which (or whether one) matched.
        let match: ParsedKey | undefined;
        for (const a of allowed) {
          if (constantTimeEqual(ctx.key.data, a.blob) && ctx.key.algo === a.key.type) match = a.key;
        }
        if (!match) ok = false;
        // SHA-1 RSA signatures ("ssh-rsa" without rsa-sha2-*) are refused, as OpenSSH >= 8.8 does.
        if (ctx.key.algo === 'ssh-rsa' && !ctx.hashAlgo) ok = false;
        if (ok && ctx.signature) {
          // The client proves it holds the private key: without this check any holder of the public key gets in.
          ok = ctx.blob !== undefined && match!.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true;
        }
        if (!ok) {
          authFailures++;
          logger.warn(
            { peer, user: ctx.username.slice(0, 64), keyAlgo: ctx.key.algo, signed: Boolean(ctx.signature) },
            'ssh: authentication refused',
          );
          if (authFailures >= (o.maxAuthAttempts ?? 6)) {
            client.end();
            return;
          }
          return ctx.reject(['publickey']);
        }
        ctx.accept();
      });

      client.on('ready', () => {
        logger.debug({ peer }, 'ssh: client authenticated');
        client.on('session', (accept, reject) => {
          if (sessions >= (o.maxSessionsPerConnection ?? 16)) return reject();
          sessions++;
          const session = accept();
          session.once('close', () => {
            sessions--;
          });
          session.once('exec', (acceptExec, _rejectExec, req) => {
            const channel = acceptExec();
            runExec(channel, req.command, peer).catch((e) => logger.error({ err: e, peer }, 'ssh: exec failed'));
          });
        });
      });

      client.on('error', (e) => logger.debug({ peer, err: e.message }, 'ssh: connection error'));
    },
  );
  async function runExec(channel: ServerChannel, command: string, peer: object): Promise<void> {
    let closed = false;
    // A held request (build.wait) whose caller went away ends at once rather than at its deadline.
    const gone = new AbortController();
    channel.once('close', () => {
      closed = true;
      gone.abort();
    });
    const finish = (code: number) => {
      if (closed) return;
      channel.exit(code);
      channel.end();
    };
    // A request without a body is drained at once: ssh2 tells a channel's close only once its input has ended, and a
    // held request (build.wait) must hear its caller go away. As under OpenSSH, where it is all a `kiln glue` hears
    // of it, the end of a held request's input is its caller going away too (protocol.HELD_VERBS).
    const verb = command.split(' ', 1)[0]!;
    if (!(STDIN_VERBS as ReadonlySet<string>).has(verb)) channel.resume();
    if ((HELD_VERBS as ReadonlySet<string>).has(verb)) channel.once('end', () => gone.abort());
    try {
      const res = await glue.handle(command, (max) => readCapped(channel, max, o.bodyTimeoutMs ?? BODY_TIMEOUT_MS), {
        door: 'ssh2',
        signal: gone.signal,
      });
      channel.resume(); // the body of a verb that takes none is drained and ignored
      if (res.kind === 'json') {
        channel.write(JSON.stringify(res.reply) + '\n');
        finish(0);
        return;
      }
      const src = res.stream;
      channel.once('close', () => src.destroy());
      src.on('error', (e) => {
        logger.error({ err: e, peer }, 'ssh: artifact stream failed');
        if (!closed) channel.stderr.write(errorDocument(toKilnError(e)));
        finish(1);
      });
      src.on('end', () => finish(0));
      src.pipe(channel, { end: false });
    } catch (e) {
      const err = toKilnError(e);
      channel.resume();
      if (!closed) channel.stderr.write(errorDocument(err));
      finish(exitCodeFor(err));
    }
  }

  const listener = await listenForSsh(server, {
    host: o.host,
    port: o.port,
    maxConnections: o.maxConnections ?? 32,
    handshakeMs: o.handshakeTimeoutMs ?? 10_000,
    logger,
    label: 'ssh',
  });
  logger.info(
    { host: o.host, port: listener.port, hostFingerprint: `SHA256:${hostFingerprint}` },
    'glue ssh server listening',
  );
  return { port: listener.port, hostFingerprint, close: listener.close };
}

function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  // Compare equal-length buffers even on a length mismatch, so the time spent does not depend on the input.
  const same = a.length === b.length;
  return timingSafeEqual(same ? a : b, b) && same;
}

/**
 * Resolves the built-in server's settings from config: host key (created on first start), authorized keys (the
 * config's file, or else the web's own client key, created on first start too), address and user.
 */
export async function sshServerOptionsFromConfig(
  cfg: FrozenConfig,
): Promise<Omit<SshServerOptions, 'glue' | 'logger'>> {
  const paths = defaultKeyPaths(cfg.dataDir);
  const hostKey = await ensureKeyPair(cfg.ssh.hostKeyFile ?? paths.host, 'kiln-glue-host');
  let authorizedKeys: ParsedKey[];
  if (cfg.ssh.authorizedKeysFile) {
    authorizedKeys = parseAuthorizedKeys(await fsp.readFile(cfg.ssh.authorizedKeysFile, 'utf8'));
  } else {
    const web = await ensureKeyPair(cfg.ssh.clientKeyFile ?? paths.client, 'kiln-web');
    authorizedKeys = parseAuthorizedKeys(web.publicKey);
  }
  return {
    host: cfg.ssh.host,
    port: cfg.ssh.port,
    hostKey: hostKey.privateKey,
    authorizedKeys,
    username: cfg.ssh.user,
  };
}
