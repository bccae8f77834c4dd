/**
 * The users' SSH door: `ssh -p PORT kiln@HOST build NAME < Dockerfile` (and `status`, `log`, `list`), with the keys
 * users add on their account page. A front door over the core, as the web is; it never talks to the glue itself.
 * See README.md.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';
import type { FrozenConfig } from '../config/index.js';
import type { Core } from '../core/index.js';
import { KilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { defaultKeyPaths, ensureKeyPair, fingerprint } from '../shared/ssh-keys.js';
import { startSshDoor, type SshDoor, type SshDoorOptions } from './server.js';

export { startSshDoor, type SshDoor, type SshDoorOptions } from './server.js';

const VAR = 'KILN_SSH_DOOR_HOST_KEY_FILE';

/** The fingerprint of the private key in `file`, or undefined when there is none (or it is not a key). */
async function fingerprintOfKeyFile(file: string): Promise<string | undefined> {
  const pem = await fsp.readFile(file).catch(() => undefined);
  const k = pem && ssh2.utils.parseKey(pem);
  return k && !(k instanceof Error) ? fingerprint(k.getPublicSSH()) : undefined;
}

/**
 * The door's host key: the configured file (the operator's: read, never generated or re-moded; like sshd, refused
 * when others may read it), or an ed25519 key generated on first start in the data directory (0600, directory 0700).
 * Refused when it is the glue's host key or the web's client key: the door shares no key with the glue's SSH.
 */
export async function doorHostKey(config: FrozenConfig): Promise<Buffer> {
  const paths = defaultKeyPaths(config.dataDir);
  let pem: Buffer;
  if (config.sshDoor.hostKeyFile) {
    const file = path.resolve(config.sshDoor.hostKeyFile);
    const st = await fsp.stat(file).catch(() => {
      throw new KilnError('invalid_input', `${VAR}: cannot read ${file}`);
    });
    if ((st.mode & 0o077) !== 0)
      throw new KilnError('invalid_input', `${VAR}: ${file} may be read by others; make it mode 600 (chmod 600).`);
    pem = await fsp.readFile(file);
  } else {
    pem = (await ensureKeyPair(paths.door, 'kiln-door-host')).privateKey;
  }
  const key = ssh2.utils.parseKey(pem);
  if (key instanceof Error || !key.isPrivateKey() || key.type !== 'ssh-ed25519')
    throw new KilnError('invalid_input', `${VAR}: not an unencrypted ed25519 private key in OpenSSH format`);
  const mine = fingerprint(key.getPublicSSH());
  const glueKeys = [
    config.ssh.hostFingerprint?.replace(/^SHA256:/, ''),
    await fingerprintOfKeyFile(config.ssh.hostKeyFile ?? paths.host),
    await fingerprintOfKeyFile(config.ssh.clientKeyFile ?? paths.client),
  ];
  if (glueKeys.includes(mine))
    throw new KilnError(
      'invalid_input',
      `${VAR}: this is one of the glue's SSH keys; the SSH door needs a host key of its own.`,
    );
  return pem;
}

/** Starts the door as configured (`sshDoor.*`), over this process's core. The caller checks `sshDoor.enabled`. */
export async function startSshDoorFromConfig(
  config: FrozenConfig,
  deps: { core: Core; logger: Logger },
  overrides: Partial<SshDoorOptions> = {},
): Promise<SshDoor> {
  const c = config.sshDoor;
  return startSshDoor({
    ...deps,
    config,
    host: c.host,
    port: c.port,
    user: c.user,
    maxConnections: c.maxConnections,
    maxSessions: c.maxSessions,
    maxSessionsPerUser: c.maxSessionsPerUser,
    idleMs: c.idleSeconds * 1000,
    ...overrides,
    hostKey: overrides.hostKey ?? (await doorHostKey(config)),
  });
}
