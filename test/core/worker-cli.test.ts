/**
 * `kiln worker`: the task worker as a process of its own, beside webs that run none (KILN_WORKER_ENABLED=0). A web
 * records a build and enqueues its dispatch; `kiln worker --once` (the compiled CLI, over SSH to a real glue server)
 * runs what is due and exits; the build is then in the backend under its key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultKeyPaths } from '../../src/shared/ssh-keys.js';
import { findBuild, listTasksOf } from '../../src/db/index.js';
import { kilnRun } from '../helpers/kiln.js';
import { startTestGlue, type TestGlue } from '../helpers/glue.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

describe('kiln worker', () => {
  let g: TestGlue;
  let w: TestWeb;
  beforeAll(async () => {
    g = await startTestGlue();
    // The web runs no worker: what it enqueues waits for a `kiln worker` on the same database.
    w = await startTestWeb({ glue: g.client, worker: false, config: { worker: { enabled: false } } });
  });
  afterAll(async () => {
    await w?.close();
    await g?.cleanup();
  });

  it('--once dispatches what a web enqueued, over SSH, and exits; the build then goes on under its key', async () => {
    const a = w.client();
    await a.signUp('alice');
    const df = await a.createDockerfile('by-worker', 'FROM debian:bookworm\nRUN true\n');
    const { id, key } = await a.build(df);
    expect(await findBuild(w.db, id, null)).toMatchObject({ state: 'requested', backend_build: null });

    const env = {
      KILN_DATA_DIR: w.dir,
      KILN_LOG_LEVEL: 'warn',
      KILN_SSH_HOST: '127.0.0.1',
      KILN_SSH_PORT: String(g.port),
      KILN_SSH_HOST_FINGERPRINT: g.hostFingerprint,
      KILN_SSH_CLIENT_KEY_FILE: defaultKeyPaths(g.dataDir).client,
    };
    const r = await kilnRun(['worker', '--once'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kiln worker: ran \d+ tasks$/m);
    expect(await findBuild(w.db, id, null)).toMatchObject({ state: 'queued', backend_build: 1 });
    expect((await listTasksOf(w.db, `build:${id}`)).find((t) => t.kind === 'build.dispatch')).toMatchObject({
      state: 'done',
      attempts: 1,
    });
    expect(await g.client.call('job.build', [df, key])).toEqual({ job: df, build: 1, created: false });
  });

  it('without a pinned glue host key it refuses to start', async () => {
    const r = await kilnRun(['worker', '--once'], { KILN_DATA_DIR: w.dir, KILN_SSH_HOST_FINGERPRINT: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/KILN_SSH_HOST_FINGERPRINT/);
  });
});
