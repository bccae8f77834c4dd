import path from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { startGlueServer } from '../../src/glue/index.js';
import { sshGlueClientFromConfig } from '../../src/glue-client/ssh.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startJenkinsDouble } from '../jenkins-double/index.js';
import { writeFakeSdk } from './glue.js';
import { startTestWeb } from './web.js';

export const DOUBLE_USER = { name: 'kiln-glue', token: 'aa11bb22cc33dd44ee55ff66aa77bb88' };
export const DOUBLE_AUTH = {
  authorization: `Basic ${Buffer.from(`${DOUBLE_USER.name}:${DOUBLE_USER.token}`).toString('base64')}`,
};

/**
 * Jenkins double -> built-in glue (jenkins backend, fake SDK) -> SSH client -> web. `labels`: the only node's labels;
 * `worker`: the web's worker settings over the chain's.
 */
export async function startJenkinsChain(dir: string, labels?: string[], worker: Record<string, unknown> = {}) {
  const double = await startJenkinsDouble({
    users: [DOUBLE_USER],
    quietPeriodSeconds: 1,
    dataDir: path.join(dir, 'jenkins'),
    ...(labels ? { labels } : {}),
  });
  const cfg = loadConfig(
    {},
    {
      dataDir: path.join(dir, 'glue'),
      ssh: { host: '127.0.0.1', port: 0, timeoutMs: 30_000 },
      glue: {
        backend: 'jenkins',
        jenkins: {
          url: double.url,
          user: DOUBLE_USER.name,
          token: DOUBLE_USER.token,
          sdkCommand: writeFakeSdk(dir),
          requestTimeoutMs: 3000,
        },
      },
    },
  );
  const glue = await startGlueServer(cfg, silentLogger);
  const client = await sshGlueClientFromConfig(cfg, { port: glue.port, hostFingerprint: glue.hostFingerprint });
  // Outages here last seconds: a dispatch retries for as long as it takes instead of failing its build.
  const web = await startTestWeb({
    glue: client,
    config: { sdk: { formats: ['raw'] }, worker: { maxAttempts: 1000, ...worker } },
  });
  const stop = async () => {
    await web.close();
    await client.close();
    await glue.close();
    await double.stop();
  };
  return { double, glue, client, web, stop };
}
