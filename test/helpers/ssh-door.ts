import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import ssh2 from 'ssh2';
import type { HttpClient } from './web.js';

/** A debug logger whose lines a test reads back (`logs`, parsed). */
export function capturedLogger(): { logger: Logger; logs: Array<Record<string, unknown>> } {
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(c, _e, cb) {
      logs.push(JSON.parse(String(c)) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), logs };
}

/** A key pair made by the real `ssh-keygen` in `dir`: its private key file, .pub line and `ssh-keygen -lf` output. */
export interface KeygenKey {
  file: string;
  pub: string;
  /** `SHA256:...` as `ssh-keygen -lf` prints it. */
  fingerprint: string;
  bits: number;
}

export function sshKeygen(dir: string, name: string, type: string, bits?: number, comment = `${name}@test`): KeygenKey {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', [
    '-q',
    '-t',
    type,
    ...(bits ? ['-b', String(bits)] : []),
    '-N',
    '',
    '-C',
    comment,
    '-f',
    file,
  ]);
  const pub = readFileSync(`${file}.pub`, 'utf8').trim();
  const [b, fp] = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(
    ' ',
  );
  return { file, pub, fingerprint: fp!, bits: Number(b) };
}

/** Adds a key through the account page's form; returns the answer (303 to /account when added). */
export async function addKeyOnPage(c: HttpClient, key: string, name = ''): Promise<Response> {
  const token = await c.token('/account');
  return c.postForm('/account/ssh-keys', { _csrf: token, key, name });
}

export interface SshResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface DoorClient {
  port: number;
  /** HOME of the client: its known_hosts is learnt there. */
  home: string;
  /** The private key file. */
  key: string;
  user?: string;
}

/**
 * The OpenSSH client's options for the door: the test's key only, no agent or config of the user's, the host key
 * learnt on first use into the test's known_hosts. `portFlag`: `-p` (ssh) or `-P` (sftp).
 */
export function opensshOptions(o: DoorClient, portFlag: '-p' | '-P' = '-p'): string[] {
  return [
    '-F',
    '/dev/null',
    portFlag,
    String(o.port),
    '-i',
    o.key,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=accept-new',
    '-o',
    `UserKnownHostsFile=${path.join(o.home, 'known_hosts')}`,
    '-o',
    'ConnectTimeout=20',
  ];
}

/** The environment of a client process: PATH and its own HOME, nothing of the test's. */
export const clientEnv = (o: DoorClient, extra: Record<string, string> = {}) => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: o.home,
  ...extra,
});

/** The real OpenSSH client against the door. `stdin` is sent and closed (none: closed at once). */
export function doorSsh(
  o: DoorClient,
  args: string[],
  opts: { stdin?: string | Buffer; options?: string[]; env?: Record<string, string> } = {},
): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      'ssh',
      [...opensshOptions(o), '-o', 'LogLevel=ERROR', ...(opts.options ?? []), `${o.user ?? 'kiln'}@127.0.0.1`, ...args],
      {
        env: clientEnv(o, opts.env),
      },
    );
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d));
    p.stderr.on('data', (d: Buffer) => (stderr += d));
    // The door may close before it has read everything (an oversized Dockerfile): not the test's error.
    p.stdin.on('error', () => undefined);
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    p.stdin.end(opts.stdin ?? '');
  });
}

/** An ssh2 client logged in to the door as `kiln`, pinning its host key (`extra`: a privateKey or an agent). */
export function doorConnect(
  door: { port: number; hostFingerprint: string },
  extra: Record<string, unknown>,
): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on('ready', () => resolve(c))
      .on('error', reject)
      .on('close', () => reject(new Error('connection closed')));
    c.connect({
      host: '127.0.0.1',
      port: door.port,
      username: 'kiln',
      readyTimeout: 20_000,
      hostVerifier: (k: Buffer) =>
        createHash('sha256').update(k).digest('base64').replace(/=+$/, '') === door.hostFingerprint,
      ...extra,
    });
  });
}
