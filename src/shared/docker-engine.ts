import http from 'node:http';

export interface DockerEngineHealth {
  reachable: boolean;
  /** The engine's version (`/version`: Version), and its API version. */
  version?: string;
  apiVersion?: string;
  /** Why it is not reachable, safe to show an admin (no paths beyond the socket's). */
  error?: string;
}

/** The socket the SDK talks to (src/cmd/sdk.ts): DOCKER_SOCKET or the default. */
export const dockerSocketPath = (env: NodeJS.ProcessEnv = process.env): string =>
  env.DOCKER_SOCKET ?? '/var/run/docker.sock';

/**
 * Asks the Docker engine behind `socketPath` for its version (GET /version over the Unix socket): reachable and
 * which version, or why not. Never throws; gives up after `timeoutMs`.
 */
export function probeDockerEngine(socketPath = dockerSocketPath(), timeoutMs = 3000): Promise<DockerEngineHealth> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (h: DockerEngineHealth) => {
      if (!settled) {
        settled = true;
        resolve(h);
      }
    };
    const req = http.get({ socketPath, path: '/version', timeout: timeoutMs, headers: { host: 'docker' } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 64 * 1024) chunks.push(c);
      });
      res.on('end', () => {
        if (res.statusCode !== 200)
          return done({ reachable: false, error: `the engine answered HTTP ${res.statusCode ?? '?'}` });
        try {
          const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { Version?: unknown; ApiVersion?: unknown };
          done({
            reachable: true,
            ...(typeof v.Version === 'string' ? { version: v.Version } : {}),
            ...(typeof v.ApiVersion === 'string' ? { apiVersion: v.ApiVersion } : {}),
          });
        } catch {
          done({ reachable: false, error: "the engine's /version answer is not JSON" });
        }
      });
      res.on('error', (e) => done({ reachable: false, error: e.message }));
    });
    req.on('timeout', () => {
      req.destroy();
      done({ reachable: false, error: `no answer from ${socketPath} within ${timeoutMs} ms` });
    });
    req.on('error', (e: NodeJS.ErrnoException) =>
      done({ reachable: false, error: `${socketPath}: ${e.code ?? e.message}` }),
    );
  });
}
