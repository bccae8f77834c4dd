/**
 * No build is left waiting forever: a task that keeps failing ends failed, and the build it concerns fails with a
 * reason a user can read (before the task queue, a build stayed `requested`, `queued` or `verifying` for as long as
 * the glue was away). Real glue and local backend in-process (fake SDK); the worker is drained by the test on a
 * clock it moves, so every backoff is stepped through without waiting.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestTask } from '../../src/core/builds/attest.js';
import { ensureBuildTasks } from '../../src/core/tasks/reconcile.js';
import { findBuild, listTasksOf, type BuildRow, type TaskRow } from '../../src/db/index.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

describe('tasks that keep failing end their builds visibly', () => {
  let w: TestWeb & { local: InProcessGlue };
  let a: HttpClient;
  let t = Date.parse('2030-06-01T00:00:00Z');
  const clock = () => t;
  let seq = 0;

  beforeAll(async () => {
    w = await startTestWeb({
      worker: false,
      clock,
      config: { worker: { maxAttempts: 3, backoffMs: 1000, backoffMaxSeconds: 10, refreshMs: 1000 } },
    });
    a = w.client();
    await a.signUp('alice');
  });
  afterAll(async () => {
    await w?.close();
  });

  const row = async (id: number) => (await findBuild(w.db, id, null))!;
  const task = async (id: number, kind: string) =>
    (await listTasksOf(w.db, `build:${id}`)).find((x) => x.kind === kind);
  /** Runs what is due, moves the clock past any backoff, until `done` holds (the backend's own work takes real time). */
  async function step<T>(done: () => Promise<T | undefined | false>, worker = w.newWorker()): Promise<T> {
    return until(
      async () => {
        await worker.drain();
        t += 11_000;
        return done();
      },
      60_000,
      20,
    );
  }
  async function build(lines: string[] = []): Promise<number> {
    const df = await a.createDockerfile(
      `visible${++seq}`,
      ['FROM debian:bookworm', ...lines, 'RUN true', ''].join('\n'),
    );
    return (await a.build(df)).id;
  }

  it('the glue away during dispatch: the dispatch task fails after its attempts, the build fails saying why; its key is withdrawn once the glue is back', async () => {
    w.local.down = true;
    let id: number;
    let failed: TaskRow;
    try {
      id = await build();
      failed = await step(async () => {
        const x = await task(id, 'build.dispatch');
        return x?.state === 'failed' && x;
      });
    } finally {
      w.local.down = false;
    }
    expect(failed).toMatchObject({
      attempts: 3,
      last_error: 'backend_unavailable: The build service is unreachable; try again later',
    });
    const b = await row(id);
    expect(b).toMatchObject({ state: 'failed', backend_build: null });
    expect(b.reason).toBe(
      'Kiln could not hand this build to the build service (backend_unavailable: The build service is unreachable; try again later); press Build to try again.',
    );
    expect(b.finished_at).not.toBeNull();
    // What a try may have started is taken back by key once the glue answers.
    await step(async () => (await task(id, 'build.withdraw'))?.state === 'done');
    expect((await row(id)).dispatch_attempts).toBe(0);
  });

  it('the glue away while a build runs: the refresh task fails after its attempts, the build fails saying why, and its backend build is stopped once the glue is back', async () => {
    const id = await build(['# fake: gate never']);
    const running = await step(async () => {
      const b = await row(id);
      return b.state === 'running' && b;
    });
    w.local.down = true;
    try {
      await step(async () => (await task(id, 'build.refresh'))?.state === 'failed');
    } finally {
      w.local.down = false;
    }
    expect(await row(id)).toMatchObject({
      state: 'failed',
      reason:
        'Kiln lost contact with the build service while this build was in it (backend_unavailable: The build service is unreachable; try again later); press Build to try again.',
    });
    await step(async () => (await task(id, 'build.withdraw'))?.state === 'done');
    expect((await w.glue.call('build.status', [running.dockerfile_id, running.backend_build!])).state).toBe(
      'cancelled',
    );
  });

  it('the glue away during verification: the attest task fails after its attempts and the build fails instead of staying verifying', async () => {
    const id = await build();
    // A worker that never verifies carries it to `verifying`; then the glue goes away.
    await step(
      async () => (await row(id)).state === 'verifying',
      w.newWorker({ 'build.attest': { ...attestTask, concurrency: 0 } }),
    );
    w.local.down = true;
    try {
      await step(async () => (await task(id, 'build.attest'))?.state === 'failed');
    } finally {
      w.local.down = false;
    }
    const b: BuildRow = await row(id);
    expect(b.state).toBe('failed');
    expect(b.reason).toBe(
      "The build's artifacts could not be verified: backend_unavailable: The build service is unreachable; try again later.",
    );
  });

  it('a build whose task went missing gets it back from a reconciliation pass, and goes on', async () => {
    const id = await build();
    await w
      .db('tasks')
      .where({ subject: `build:${id}` })
      .delete();
    expect(await ensureBuildTasks({ db: w.db, config: w.config, now: clock })).toBe(1);
    expect(await ensureBuildTasks({ db: w.db, config: w.config, now: clock })).toBe(0);
    expect(
      (
        await step(async () => {
          const b = await row(id);
          return ['succeeded', 'failed'].includes(b.state) && b;
        })
      ).state,
    ).toBe('succeeded');
  });
});
