/**
 * The durable task queue (src/db/tasks.ts) and its worker (src/core/tasks/worker.ts) on both engines: a claim is
 * exclusive however many workers race for it (two pools on one database stand for two processes), a failing task
 * backs off exponentially and ends `failed` with its error kept, a task whose worker died is taken over when its
 * lease expires. Time is a clock the test moves, never a wait.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { Worker, type CoreDeps } from '../../src/core/index.js';
import { isoAt } from '../../src/core/tasks/queue.js';
import { backoffMs, type TaskKind } from '../../src/core/tasks/worker.js';
import { claimTask, enqueueTask, finishTask, findTask, listTasks, type Db } from '../../src/db/index.js';
import { KilnError } from '../../src/shared/errors.js';
import { freshDb, secondPool, type TestDb } from '../db/engines.js';
import { dbOnlyDeps } from '../helpers/core.js';

/** A clock a test moves by hand. */
function manualClock(start = Date.parse('2030-01-01T00:00:00Z')) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

function deps(db: Db, now: () => number, worker: Record<string, number> = {}): CoreDeps {
  const config = loadConfig(
    {},
    { worker: { maxAttempts: 4, backoffMs: 1000, backoffMaxSeconds: 10, leaseSeconds: 60, ...worker } },
  );
  return dbOnlyDeps(db, { who: 'a task', config, now });
}

const add = (db: Db, kind: string, subject: string, now: number, maxAttempts = 4) =>
  enqueueTask(db, { kind, subject, runAt: isoAt(now), maxAttempts, now: isoAt(now) });

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`task queue on ${engine}`, () => {
    let t: TestDb;
    let other: Db;
    beforeAll(async () => {
      t = await freshDb(engine);
      // A second pool on the same database: what a second process (another web, `kiln worker`) has.
      other = secondPool(t);
    });
    afterAll(async () => {
      await other?.destroy();
      await t?.drop();
    });
    // Each test starts from an empty queue (a moved clock would otherwise find the earlier tests' leases expired).
    beforeEach(async () => {
      await t.db('tasks').delete();
    });

    it('enqueueing is idempotent while a task of that kind and subject is pending or running', async () => {
      const now = Date.now();
      expect(await add(t.db, 'test.once', 'x:1', now)).toBe(true);
      expect(await add(other, 'test.once', 'x:1', now)).toBe(false);
      const claimed = (await claimTask(t.db, {
        owner: 'w1',
        now: isoAt(now),
        leaseUntil: isoAt(now + 60_000),
        skipKinds: [],
      }))!;
      expect(claimed).toMatchObject({
        kind: 'test.once',
        subject: 'x:1',
        state: 'running',
        attempts: 1,
        lease_owner: 'w1',
      });
      expect(await add(t.db, 'test.once', 'x:1', now)).toBe(false);
      expect(await finishTask(t.db, claimed.id, 'w1', { state: 'done' }, isoAt(now))).toBe(true);
      // Done: the same work may be asked for again.
      expect(await add(t.db, 'test.once', 'x:1', now)).toBe(true);
      const again = (await claimTask(other, {
        owner: 'w2',
        now: isoAt(now),
        leaseUntil: isoAt(now + 60_000),
        skipKinds: [],
      }))!;
      expect(again).toMatchObject({ subject: 'x:1', attempts: 1, lease_owner: 'w2' });
      // Only its holder ends it.
      expect(await finishTask(t.db, again.id, 'w1', { state: 'done' }, isoAt(now))).toBe(false);
      expect(await finishTask(t.db, again.id, 'w2', { state: 'done' }, isoAt(now))).toBe(true);
    });

    it('two workers on two pools racing over 120 tasks run each exactly once', async () => {
      const now = Date.now();
      for (let i = 0; i < 120; i++) await add(t.db, 'test.race', `race:${i}`, now);
      const ran = new Map<string, string[]>();
      const kind = (name: string): TaskKind => ({
        async run(_d, { task }) {
          ran.set(task.subject, [...(ran.get(task.subject) ?? []), name]);
          // Yield, so both workers' claims interleave with the runs.
          await new Promise((r) => setImmediate(r));
        },
      });
      const w1 = new Worker(deps(t.db, Date.now), { 'test.race': kind('w1') }, { id: 'w1', concurrency: 4 });
      const w2 = new Worker(deps(other, Date.now), { 'test.race': kind('w2') }, { id: 'w2', concurrency: 4 });
      const [n1, n2] = await Promise.all([w1.drain(), w2.drain()]);
      expect(n1 + n2).toBe(120);
      expect(n1).toBeGreaterThan(0);
      expect(n2).toBeGreaterThan(0);
      expect(ran.size).toBe(120);
      expect([...ran.values()].filter((by) => by.length !== 1)).toEqual([]);
      const rows = await listTasks(t.db, { kind: 'test.race', limit: 1000 });
      expect(rows.every((r) => r.state === 'done' && r.attempts === 1 && r.lease_owner === null)).toBe(true);
    });

    it('60 concurrent claims from two pools over 20 due tasks: 20 claims, no task twice', async () => {
      const now = Date.now();
      for (let i = 0; i < 20; i++) await add(t.db, 'test.claim', `claim:${i}`, now);
      const claims = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          claimTask(i % 2 ? other : t.db, {
            owner: `c${i}`,
            now: isoAt(now),
            leaseUntil: isoAt(now + 60_000),
            skipKinds: ['test.race', 'test.once'],
          }),
        ),
      );
      const got = claims.filter((c) => c !== undefined);
      expect(got).toHaveLength(20);
      expect(new Set(got.map((c) => c!.id)).size).toBe(20);
    });

    it('a failing task is retried with exponential backoff and ends failed with its error; gaveUp runs once', async () => {
      const clock = manualClock();
      const d = deps(t.db, clock.now);
      const gaveUp: string[] = [];
      const kinds = {
        'test.fail': {
          run: async () => {
            throw new KilnError('backend_unavailable', 'the build service is down');
          },
          gaveUp: async (_d: CoreDeps, task: { subject: string }, error: string) => {
            gaveUp.push(`${task.subject}: ${error}`);
          },
        } satisfies TaskKind,
      };
      await add(t.db, 'test.fail', 'doomed:1', clock.now());
      const w = new Worker(d, kinds, { id: 'wf' });
      const row = async () => (await listTasks(t.db, { kind: 'test.fail' }))[0]!;
      for (let attempt = 1; attempt <= 3; attempt++) {
        expect(await w.drain()).toBe(1);
        const r = await row();
        expect(r).toMatchObject({
          state: 'pending',
          attempts: attempt,
          last_error: 'backend_unavailable: the build service is down',
          lease_owner: null,
        });
        const delay = Date.parse(r.next_run_at) - clock.now();
        const base = 1000 * 2 ** (attempt - 1);
        expect(delay).toBeGreaterThanOrEqual(0.8 * base);
        expect(delay).toBeLessThanOrEqual(1.2 * base);
        // Not due yet: nothing runs until the clock gets there.
        clock.advance(delay - 1);
        expect(await w.drain()).toBe(0);
        clock.advance(1);
      }
      expect(await w.drain()).toBe(1);
      expect(await row()).toMatchObject({
        state: 'failed',
        attempts: 4,
        last_error: 'backend_unavailable: the build service is down',
      });
      expect(gaveUp).toEqual(['doomed:1: backend_unavailable: the build service is down']);
      clock.advance(3600_000);
      expect(await w.drain()).toBe(0);
    });

    it("a task whose worker died is taken over when its lease expires; the dead worker's late answer changes nothing", async () => {
      const clock = manualClock();
      await add(t.db, 'test.lease', 'lease:1', clock.now());
      const dead = (await claimTask(t.db, {
        owner: 'dead',
        now: isoAt(clock.now()),
        leaseUntil: isoAt(clock.now() + 60_000),
        skipKinds: [],
      }))!;
      expect(dead.kind).toBe('test.lease');
      const ran: number[] = [];
      const w = new Worker(
        deps(other, clock.now),
        {
          'test.lease': {
            run: async (_d, { task }) => {
              ran.push(task.attempts);
            },
          },
        },
        { id: 'heir' },
      );
      expect(await w.drain()).toBe(0);
      clock.advance(60_001);
      expect(await w.drain()).toBe(1);
      expect(ran).toEqual([2]);
      expect(await findTask(t.db, dead.id)).toMatchObject({ state: 'done', attempts: 2 });
      expect(await finishTask(t.db, dead.id, 'dead', { state: 'failed', error: 'late' }, isoAt(clock.now()))).toBe(
        false,
      );
      expect((await findTask(t.db, dead.id))!.state).toBe('done');
    });

    it('hurry: a pending task is made due now; one running in this worker runs again as soon as it ends (what it looked at moved after its look)', async () => {
      const clock = manualClock();
      await add(t.db, 'test.hurry', 'h:1', clock.now());
      let runs = 0;
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let started!: () => void;
      const first = new Promise<void>((r) => (started = r));
      const w = new Worker(
        deps(t.db, clock.now),
        {
          'test.hurry': {
            run: async () => {
              if (++runs === 1) {
                started();
                await released;
              }
              return { again: 3_600_000 };
            },
          },
        },
        { id: 'hurried' },
      );
      const drained = w.drain();
      await first;
      await w.hurry('test.hurry', 'h:1');
      release();
      // The first run asked to look again in an hour; hurried while it ran, it ran again at once.
      expect(await drained).toBe(2);
      expect(runs).toBe(2);
      // Pending and due in an hour: hurried, it is due now (the clock never moved).
      expect(await w.drain()).toBe(0);
      await w.hurry('test.hurry', 'h:1');
      expect(await w.drain()).toBe(1);
      expect(runs).toBe(3);
      // Nothing of that kind and subject: nothing happens.
      await w.hurry('test.hurry', 'h:2');
      expect(await w.drain()).toBe(0);
    });

    it('a task that takes its worker down every time ends failed once its attempts are spent', async () => {
      const clock = manualClock();
      await add(t.db, 'test.crash', 'crash:1', clock.now(), 3);
      for (let i = 0; i < 3; i++) {
        expect(
          await claimTask(t.db, {
            owner: `crashed-${i}`,
            now: isoAt(clock.now()),
            leaseUntil: isoAt(clock.now() + 1000),
            skipKinds: [],
          }),
        ).toBeDefined();
        clock.advance(1001);
      }
      const ran: number[] = [];
      const w = new Worker(
        deps(t.db, clock.now),
        {
          'test.crash': {
            run: async () => {
              ran.push(1);
            },
          },
        },
        { id: 'survivor' },
      );
      expect(await w.drain()).toBe(1);
      expect(ran).toEqual([]);
      expect((await listTasks(t.db, { kind: 'test.crash' }))[0]).toMatchObject({
        state: 'failed',
        last_error: 'its worker stopped while running it, 3 times',
      });
    });
  });
}

describe('backoff', () => {
  it('doubles from the base, is capped, and jitters by at most 20%', () => {
    expect([1, 2, 3, 4, 5].map((a) => backoffMs(a, 1000, 10_000, () => 0.5))).toEqual([1000, 2000, 4000, 8000, 10_000]);
    expect(backoffMs(1, 1000, 10_000, () => 0)).toBe(800);
    expect(backoffMs(1, 1000, 10_000, () => 1)).toBe(1200);
    expect(backoffMs(60, 1000, 10_000, () => 0.5)).toBe(10_000);
  });
});
