import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { HttpClient } from './web.js';

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

/**
 * The real OpenSSH client against the door: the test's key only, no agent or config of the user's, the host key
 * learnt on first use into a known_hosts file of the test's. `stdin` is sent and closed (none: closed at once).
 */
export function doorSsh(
  o: { port: number; home: string; key: string; user?: string },
  args: string[],
  opts: { stdin?: string | Buffer; options?: string[]; env?: Record<string, string> } = {},
): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      'ssh',
      [
        '-F',
        '/dev/null',
        '-p',
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
        '-o',
        'LogLevel=ERROR',
        ...(opts.options ?? []),
        `${o.user ?? 'kiln'}@127.0.0.1`,
        ...args,
      ],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: o.home, ...opts.env } },
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
