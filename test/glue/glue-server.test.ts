import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { ensureKeyPair, defaultKeyPaths } from '../../src/shared/ssh-keys.js';
import { sshGlueClientFromConfig } from '../../src/glue-client/ssh.js';
import { loadConfig } from '../../src/config/index.js';
import { fakeSpec, freePort, kilnSnapshot, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { readFileSync, statSync } from 'node:fs';
import { until } from '../helpers/wait.js';

describe('kiln glue-server (composition root)', () => {
  it('creates its keys on first start, serves the web key over SSH, runs builds, stops on SIGTERM', async () => {
    const t = tempDir('kiln-glue-server-');
    const port = await freePort();
    const sdk = writeFakeSdk(t.dir);
    const child = spawn(await kilnSnapshot(t.dir), ['glue-server'], {
      env: {
        PATH: process.env.PATH,
        KILN_DATA_DIR: t.dir,
        KILN_SSH_PORT: String(port),
        KILN_GLUE_SDK_COMMAND: sdk.join(','),
        KILN_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (c: Buffer) => {
          out += c;
          if (out.includes('\n')) resolve(out);
        });
        child.once('exit', (c) => reject(new Error(`glue-server exited ${c}`)));
      });
      const fp = /host key SHA256:([A-Za-z0-9+/]+)/.exec(line)?.[1];
      expect(line).toContain(`listening on 127.0.0.1:${port}`);
      expect(fp).toBeTruthy();
      const paths = defaultKeyPaths(t.dir);
      expect(statSync(paths.host).mode & 0o777).toBe(0o600);
      expect(statSync(paths.client).mode & 0o777).toBe(0o600);
      const made = readFileSync(`${paths.client}.pub`, 'utf8');
      const web = await ensureKeyPair(paths.client); // what `kiln web` does: the same key, not a new one
      const host = await ensureKeyPair(paths.host);
      expect(host.fingerprint).toBe(fp);
      // The same key material (the comment is whatever the caller names it).
      expect(web.publicKey.split(' ').slice(0, 2)).toEqual(made.split(' ').slice(0, 2));
      const cfg = loadConfig({
        KILN_DATA_DIR: t.dir,
        KILN_SSH_PORT: String(port),
        KILN_SSH_HOST_FINGERPRINT: `SHA256:${fp}`,
      });
      const client = await sshGlueClientFromConfig(cfg);
      await expect(sshGlueClientFromConfig(loadConfig({ KILN_DATA_DIR: t.dir }))).rejects.toMatchObject({
        code: 'invalid_input',
      });
      try {
        expect(await client.call('ping', [])).toMatchObject({ protocol: 1, backend: 'local', backendReachable: true });
        await client.call('job.put', [1], JSON.stringify(fakeSpec()));
        await client.call('job.build', [1, 'server-key-1']);
        const state = await until(
          async () => {
            const st = (await client.call('build.status', [1, 1])).state;
            return !['queued', 'running'].includes(st) && st;
          },
          60_000,
          50,
        );
        expect(state).toBe('succeeded');
      } finally {
        await client.close();
      }
      child.kill('SIGTERM');
      const code = await new Promise((r) => child.once('exit', r));
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      t.cleanup();
    }
  });
});
