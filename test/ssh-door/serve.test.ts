import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultKeyPaths } from '../../src/shared/ssh-keys.js';
import { doorSsh, sshKeygen } from '../helpers/ssh-door.js';
import { startKilnServe, type KilnServe } from '../helpers/serve.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/** `kiln serve` starts the SSH door only when switched on, with a host key of its own (and no other). */

let t: ReturnType<typeof tempDir>;
beforeAll(() => {
  t = tempDir('kiln-door-serve-');
});
afterAll(() => t?.cleanup());

const sha256 = (b64: string) =>
  createHash('sha256').update(Buffer.from(b64, 'base64')).digest('base64').replace(/=+$/, '');

describe('kiln serve and the SSH door', () => {
  let serve: KilnServe | undefined;
  afterAll(async () => {
    await serve?.stop();
  });

  it('stays off by default; switched on, it generates its own 0600 host key and answers OpenSSH', async () => {
    const off = await startKilnServe(t.dir, { KILN_DATA_DIR: path.join(t.dir, 'off') });
    await off.stop();
    expect(off.output()).not.toMatch(/SSH door/);

    const data = path.join(t.dir, 'on');
    serve = await startKilnServe(t.dir, {
      KILN_DATA_DIR: data,
      KILN_SSH_DOOR_ENABLED: '1',
      KILN_SSH_DOOR_PORT: '0',
    });
    const m = await until(() => /SSH door: port (\d+), host key SHA256:(\S+)/.exec(serve!.output()));
    const [port, fp] = [Number(m[1]), m[2]!];
    const keys = defaultKeyPaths(data);
    expect(statSync(keys.door).mode & 0o777).toBe(0o600);
    const doorPub = readFileSync(`${keys.door}.pub`, 'utf8').split(' ')[1]!;
    const gluePub = readFileSync(`${keys.host}.pub`, 'utf8').split(' ')[1]!;
    expect(sha256(doorPub)).toBe(fp);
    expect(sha256(gluePub)).not.toBe(fp);
    // A key no account has is refused; the host key OpenSSH learnt is the one printed.
    const home = path.join(t.dir, 'home');
    const k = sshKeygen(t.dir, 'nobody', 'ed25519');
    mkdirSync(home);
    const r = await doorSsh({ port, home, key: k.file }, ['list']);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/Permission denied \(publickey\)/);
    expect(sha256(readFileSync(path.join(home, 'known_hosts'), 'utf8').trim().split(' ')[2]!)).toBe(fp);
  });

  it("refuses to start with the glue's host key, or with a host key others may read", async () => {
    const data = path.join(t.dir, 'on');
    const glueKey = defaultKeyPaths(data).host;
    await expect(
      startKilnServe(t.dir, {
        KILN_DATA_DIR: path.join(t.dir, 'reuse'),
        KILN_SSH_DOOR_ENABLED: '1',
        KILN_SSH_DOOR_PORT: '0',
        KILN_SSH_HOST_KEY_FILE: glueKey,
        KILN_SSH_DOOR_HOST_KEY_FILE: glueKey,
      }),
    ).rejects.toThrow(/one of the glue's SSH keys; the SSH door needs a host key of its own/);
    const loose = path.join(t.dir, 'loose_ed25519');
    copyFileSync(glueKey, loose);
    chmodSync(loose, 0o644);
    await expect(
      startKilnServe(t.dir, {
        KILN_DATA_DIR: path.join(t.dir, 'loose'),
        KILN_SSH_DOOR_ENABLED: '1',
        KILN_SSH_DOOR_PORT: '0',
        KILN_SSH_DOOR_HOST_KEY_FILE: loose,
      }),
    ).rejects.toThrow(/may be read by others; make it mode 600/);
  });
});
