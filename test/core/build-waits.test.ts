/**
 * A build's start and end reach the web through the worker's held glue waits (src/core/builds/waits.ts), not at its
 * next refresh: the real worker and the real glue (over SSH, with the local backend and the fake SDK, or the Jenkins
 * backend against the double), with `worker.refreshMs` at an hour, so that a refresh can carry nothing. And the
 * refresh is still the net: a wait the glue never answers, or a glue that does not know build.wait, costs the old
 * interval, never a stuck build.
 */
import { afterEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { GluePort } from '../../src/core/ports.js';
import { BuildWaits } from '../../src/core/builds/waits.js';
import { loadConfig } from '../../src/config/index.js';
import { KilnError } from '../../src/shared/errors.js';
import { silentLogger } from '../../src/shared/logger.js';
import { jobSpecSchema, type BuildStatus } from '../../src/protocol/index.js';
import { noGlue } from '../helpers/core.js';
import { fakeSpec, openGate, startTestGlue } from '../helpers/glue.js';
import { startInProcessGlue } from '../helpers/in-process-glue.js';
import { startJenkinsChain } from '../helpers/jenkins-chain.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

const HOUR = 3_600_000;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** Signs alice up, saves a Dockerfile with `text`, presses Build: the build's id. */
async function aliceBuilds(w: TestWeb, text: string): Promise<number> {
  const alice = w.client();
  await alice.signUp('alice');
  return (await alice.build(await alice.createDockerfile('waited', text))).id;
}

describe('held waits carry a build to the web', () => {
  it('with worker.refreshMs at an hour, a build still starts, ends and is verified and signed: real glue over SSH, local backend', async () => {
    const w = await startTestWeb({ realGlue: true, config: { worker: { refreshMs: HOUR } } });
    cleanups.push(() => w.close());
    const id = await aliceBuilds(w, 'FROM debian:bookworm\n# fake: gate waited-start\nRUN true\n');
    // Dispatch's first refresh is due in an hour: the wait on the queued build told its start.
    expect((await w.waitForBuild(id, (b) => b.state === 'running')).started_at).not.toBeNull();
    openGate(w.realGlue!.dataDir, 'waited-start');
    const b = await w.waitForBuild(id);
    expect(b.state).toBe('succeeded');
    expect(b.artifacts.find((a) => a.name === 'image.raw')?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(b.artifacts.map((a) => a.name)).toContain('SHA256SUMS.sig');
  });

  it('Jenkins: with worker.refreshMs at an hour, the end comes through the jenkins backend holding the wait (Jenkins double)', async () => {
    const tmp = tempDir('kiln-waits-jenkins-');
    cleanups.push(tmp.cleanup);
    const chain = await startJenkinsChain(tmp.dir, undefined, { refreshMs: HOUR });
    cleanups.push(chain.stop);
    const id = await aliceBuilds(chain.web, 'FROM debian:bookworm\n# fake: sleep 2\nRUN true\n');
    const b = await chain.web.waitForBuild(id);
    expect(b.state).toBe('succeeded');
    expect(b.artifacts.find((a) => a.name === 'image.raw')?.sha256).toMatch(/^[0-9a-f]{64}$/);
  }, 120_000);

  it('stopping the site (web closed, worker stopped) ends its held wait there and then: the glue hears it go while the build still runs', async () => {
    const g = await startTestGlue({ recordCalls: true });
    cleanups.push(() => g.cleanup());
    const w = await startTestWeb({ glue: g.client, config: { worker: { refreshMs: HOUR } } });
    const id = await aliceBuilds(w, 'FROM debian:bookworm\n# fake: gate waited-stop\nRUN true\n');
    await w.waitForBuild(id, (b) => b.state === 'running');
    const waits = () => g.logs.filter((l) => l.verb === 'build.wait');
    // One wait held on the running build: asked of the backend, not yet answered.
    await until(() => g.calls.filter((c) => c === 'wait').length > waits().length, 60_000, 20);
    const answered = waits().length;
    await w.close();
    const ended = await until(() => waits()[answered], 60_000, 20);
    expect(ended).toMatchObject({ outcome: 'ok', callerGone: true, args: [expect.any(Number), 1, 'running', 30] });
    const [job, build] = ended.args as [number, number];
    expect((await g.client.call('build.status', [job, build])).state).toBe('running');
  });

  it('a wait the glue never answers costs the old interval: the build ends through its refresh', async () => {
    const tmp = tempDir('kiln-waits-lost-');
    cleanups.push(tmp.cleanup);
    const local = await startInProcessGlue({ dataDir: path.join(tmp.dir, 'glue') });
    cleanups.push(() => local.close());
    let asked = 0;
    // Every wait is lost on the way (a glue that holds it and never answers): it ends only when abandoned.
    const lost: GluePort = {
      ...local.client,
      wait: (_job, _build, _known, _seconds, signal) => {
        asked++;
        return new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
      },
    };
    const w = await startTestWeb({ glue: lost, config: { worker: { refreshMs: 300 } } });
    cleanups.push(() => w.close());
    const id = await aliceBuilds(w, 'FROM debian:bookworm\nRUN true\n');
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
    expect(asked).toBeGreaterThan(0);
  });

  it('a glue that does not know build.wait (older than the web) is followed by its refresh alone', async () => {
    const tmp = tempDir('kiln-waits-old-');
    cleanups.push(tmp.cleanup);
    const local = await startInProcessGlue({ dataDir: path.join(tmp.dir, 'glue') });
    cleanups.push(() => local.close());
    local.refuse('build.wait', new KilnError('invalid_input', 'unknown verb "build.wait"'));
    const w = await startTestWeb({ glue: local.client, config: { worker: { refreshMs: 300 } } });
    cleanups.push(() => w.close());
    const from = local.commands.length;
    const id = await aliceBuilds(w, 'FROM debian:bookworm\n# fake: sleep 1\nRUN true\n');
    expect((await w.waitForBuild(id)).state).toBe('succeeded');
    // Refused once, it is not asked again for a while: the refresh carried the build.
    expect(local.verbsSince(from).filter((v) => v === 'build.wait')).toEqual(['build.wait']);
    expect(local.verbsSince(from).filter((v) => v === 'build.status').length).toBeGreaterThan(1);
  });
});

describe('BuildWaits', () => {
  it('a wait answered early with nothing moved (a glue closing) is not kept: the next refresh of that build holds one again', async () => {
    let asked = 0;
    const glue: GluePort = {
      ...noGlue('BuildWaits'),
      wait: (_job, _build, known) => {
        asked++;
        return Promise.resolve({ state: known } as BuildStatus);
      },
    };
    const waits = new BuildWaits(
      { glue, config: loadConfig({}, { worker: { buildWaits: 2 } }), logger: silentLogger },
      () => undefined,
    );
    cleanups.push(() => waits.close());
    waits.watch({ id: 1, dockerfile_id: 1, backend_build: 1 }, 'running');
    await until(() => waits.holding === 0, 60_000, 5);
    // Asked once, not again at once (a glue that answers at once would be asked in a loop), and not kept: a build
    // refreshed by another worker from now on would stay in this one's memory.
    expect(asked).toBe(1);
    expect(waits.watching).toBe(0);
    waits.watch({ id: 1, dockerfile_id: 1, backend_build: 1 }, 'running');
    await until(() => waits.holding === 0 && asked === 2, 60_000, 5);
    expect(waits.watching).toBe(0);
  });

  it('an answer that crosses the close of the waits (the worker stopping) hurries no refresh: nothing touches the queue after stop', async () => {
    let answer!: (st: BuildStatus) => void;
    const glue: GluePort = { ...noGlue('BuildWaits'), wait: () => new Promise((resolve) => (answer = resolve)) };
    const moved: string[] = [];
    const waits = new BuildWaits(
      { glue, config: loadConfig({}, { worker: { buildWaits: 1 } }), logger: silentLogger },
      (subject) => moved.push(subject),
    );
    waits.watch({ id: 1, dockerfile_id: 1, backend_build: 1 }, 'queued');
    expect(waits.holding).toBe(1);
    // The build started and the glue said so; the worker stops before that answer is taken in.
    answer({ state: 'running' } as BuildStatus);
    waits.close();
    await new Promise((r) => setImmediate(r));
    expect(moved).toEqual([]);
    expect(waits.holding).toBe(0);
  });

  it('holds at most worker.buildWaits; a running build takes the place of a queued one, and each move is told', async () => {
    const tmp = tempDir('kiln-waits-cap-');
    cleanups.push(tmp.cleanup);
    const local = await startInProcessGlue({ dataDir: tmp.dir, concurrency: 1 });
    cleanups.push(() => local.close());
    const b = local.backend;
    await b.putJob(1, jobSpecSchema.parse(fakeSpec('gate cap-first')));
    await b.putJob(2, jobSpecSchema.parse(fakeSpec('gate cap-second')));
    await b.build(1, 'cap-key-0001');
    await until(async () => (await b.status(1, 1)).state === 'running', 60_000, 50);
    await b.build(2, 'cap-key-0001');
    const moved: string[] = [];
    const waits = new BuildWaits(
      { glue: local.client, config: loadConfig({}, { worker: { buildWaits: 1 } }), logger: silentLogger },
      (subject) => moved.push(subject),
    );
    cleanups.push(() => waits.close());
    const held = () => local.commands.filter((c) => c.startsWith('build.wait'));
    // Build 20 (job 2) waits in the backend's queue: its wait is the one held.
    waits.watch({ id: 20, dockerfile_id: 2, backend_build: 1 }, 'queued');
    await until(() => held().length === 1, 60_000, 20);
    expect(held()).toEqual(['build.wait 2 1 queued 30']);
    // Build 10 (job 1) runs: its wait takes the only place, the queued one's is abandoned.
    waits.watch({ id: 10, dockerfile_id: 1, backend_build: 1 }, 'running');
    await until(() => held().length === 2, 60_000, 20);
    expect(held()[1]).toBe('build.wait 1 1 running 30');
    expect(waits.holding).toBe(1);
    // Build 10 ends: told; then build 20's wait is held again, and tells its start.
    local.openGate('cap-first');
    await until(() => moved.includes('build:20'), 60_000, 20);
    expect(moved.slice(0, 2)).toEqual(['build:10', 'build:20']);
    expect(held().slice(2)).toContain('build.wait 2 1 queued 30');
    // Build 20 runs now: the wait held on it is on `running`, and tells its end.
    await until(() => held().includes('build.wait 2 1 running 30'), 60_000, 20);
    local.openGate('cap-second');
    await until(() => moved.filter((m) => m === 'build:20').length === 2, 60_000, 20);
    expect(waits.holding).toBe(0);
  });
});
