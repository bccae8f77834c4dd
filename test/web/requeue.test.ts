/**
 * The web's side of interrupted builds and of exact build inputs, against the real built-in glue and local
 * backend (fake SDK): a build the glue lost is requeued once under a derived key and its page says so, a second
 * interruption fails it; a build runs the Dockerfile version it recorded even when another version's dispatch
 * interleaves with its own (finding 11).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { findBuild } from '../../src/db/index.js';
import { startGlueServer } from '../../src/glue/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import type { GluePort } from '../../src/core/ports.js';
import { glueKey } from '../../src/core/builds/requeue.js';
import { parsePosition, RESTART_LINE } from '../../src/core/builds/log-position.js';
import { fakeSpec, startTestGlue, type TestGlue } from '../helpers/glue.js';
import { until } from '../helpers/wait.js';
import { startTestWeb } from '../helpers/web.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function chain(glue?: (real: GluePort) => GluePort) {
  const g = await startTestGlue();
  cleanups.push(() => g.cleanup());
  const web = await startTestWeb({ glue: glue ? glue(g.client) : g.client });
  cleanups.push(() => web.close());
  const alice = web.client();
  await alice.signUp('alice');
  return { g, web, alice };
}

/** Stops the glue server (its running builds end lost: "the build service stopped") and starts it again. */
async function restartGlue(g: TestGlue): Promise<void> {
  await g.server.close();
  const cfg = loadConfig(
    {},
    { dataDir: g.dataDir, ssh: { host: '127.0.0.1', port: g.port }, glue: { sdkCommand: g.cfg.glue.sdkCommand } },
  );
  g.server = await startGlueServer(cfg, silentLogger);
}

describe('interrupted builds are requeued once', () => {
  it('lost -> requeued under a derived key (page says so), concurrent passes make one backend build; a second interruption fails it', async () => {
    const { g, web, alice } = await chain();
    const dfId = await alice.createDockerfile('slow', 'FROM debian:bookworm\n# fake: sleep 4\n');
    const { id } = await alice.build(dfId);
    const row = async () => (await findBuild(web.db, id, null))!;
    const api = async () =>
      ((await (await alice.get(`/api/builds/${id}`)).json()) as { build: Record<string, unknown> }).build;
    await until(async () => (await api()).state === 'running');

    // Three workers at once, as several web instances run them: one requeue, one new backend build.
    const others = [web.newWorker().start(), web.newWorker().start()];
    cleanups.push(() => Promise.all(others.map((o) => o.stop())).then(() => undefined));
    await restartGlue(g);
    const requeued = await until(async () => {
      const r = await row();
      return r.backend_build === 2 && r;
    });
    expect(requeued).toMatchObject({
      requeues: 1,
      requeue_reason: expect.stringMatching(/^interrupted: the build service stopped/),
      backend_build: 2,
    });
    expect(glueKey(requeued)).not.toBe(requeued.idempotency_key);
    expect((await g.client.call('jobs.list', [])).jobs).toEqual([expect.objectContaining({ job: dfId, lastBuild: 2 })]);
    // Retrying the requeue's dispatch (same derived key) finds the same backend build.
    expect(await g.client.call('job.build', [dfId, glueKey(requeued)])).toMatchObject({ build: 2, created: false });
    const page = await (await alice.get(`/builds/${id}`)).text();
    expect(page).toContain('Requeued after an interruption');
    expect(page).toContain('interrupted: the build service stopped while the build ran');
    expect(await api()).toMatchObject({ requeues: 1, requeueReason: expect.stringMatching(/^interrupted/) });

    // The second attempt is interrupted too: the build fails, saying why in words a user can act on.
    await until(async () => (await api()).state === 'running');
    await restartGlue(g);
    const failed = await until(async () => {
      const b = await api();
      return b.final && b;
    });
    expect(failed).toMatchObject({
      state: 'failed',
      requeues: 1,
      reason: expect.stringMatching(
        /interrupted twice by a fault of the build service, not by your Dockerfile.*press Build/,
      ),
    });
    expect((await g.client.call('jobs.list', [])).jobs).toEqual([expect.objectContaining({ job: dfId, lastBuild: 2 })]);
  }, 120_000);

  it("a reader of the lost attempt's log is told it starts over, and reads the new attempt from its first line", async () => {
    const { g, web, alice } = await chain();
    const dfId = await alice.createDockerfile('relog', 'FROM debian:bookworm\n# fake-lines: 3\n# fake: sleep 4\n');
    const { id } = await alice.build(dfId);
    type Chunk = { text: string; offset: number; nextOffset: number; more: boolean };
    const log = async (offset: number) =>
      (await (await alice.get(`/api/builds/${id}/log?offset=${offset}`)).json()) as Chunk;
    // The first attempt's lines, read up to its sleep.
    const first = await until(async () => {
      const c = await log(0);
      return c.text.includes('sleeping') && c;
    });
    expect(first.text).toContain('line 3\n');
    expect(first.nextOffset).toBeGreaterThan(0);

    await restartGlue(g);
    await until(async () => (await findBuild(web.db, id, null))!.backend_build === 2);
    // The old position: a line saying the log starts over, then the new attempt from its start (not from byte N).
    const again = await until(async () => {
      const c = await log(first.nextOffset);
      return c.text.includes('sleeping') && c;
    });
    const lines = again.text.split('\n');
    expect(lines[0]).toBe(RESTART_LINE);
    // The glue's first line of an attempt, then the SDK's.
    expect(lines[1]).toMatch(/^\[kiln\] queued/);
    expect(lines.filter((l) => /^line \d$/.test(l))).toEqual(['line 1', 'line 2', 'line 3']);
    expect(parsePosition(String(again.nextOffset))).toEqual({ attempt: 1, offset: expect.any(Number) });
    // Read on from the new position: no second notice, nothing repeated.
    const next = await log(again.nextOffset);
    expect(next.text).not.toContain(RESTART_LINE);
    expect(next.text).not.toContain('line 1\n');

    // The page's live stream resumed with the old position (Last-Event-ID) says the same, then the new log from its start.
    const res = await alice.get(`/api/builds/${id}/events`, {
      accept: 'text/event-stream',
      'last-event-id': String(first.nextOffset),
    });
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('line 3')) {
      const r = await reader.read();
      if (r.done) break;
      text += new TextDecoder().decode(r.value);
    }
    await reader.cancel();
    const logEvents = [...text.matchAll(/^id: (\d+)\nevent: log\ndata: (.*)$/gm)].map((m) => ({
      id: m[1]!,
      lines: (JSON.parse(m[2]!) as { html: string[] }).html.join('\n'),
    }));
    expect(logEvents[0]!.lines).toContain('the build service lost this build');
    expect(logEvents.map((e) => e.lines).join('\n')).toMatch(/line 1[\s\S]*line 2[\s\S]*line 3/);
    expect(logEvents.every((e) => parsePosition(e.id).attempt === 1)).toBe(true);
    await web.waitForBuild(id);
  }, 120_000);

  it('a build whose backend build vanished is requeued once (the glue no longer knows it)', async () => {
    const { g, web, alice } = await chain();
    const dfId = await alice.createDockerfile('gone', 'FROM debian:bookworm\n# fake: sleep 3\n');
    const { id } = await alice.build(dfId);
    await until(
      async () =>
        (await findBuild(web.db, id, null))!.state === 'queued' ||
        (await findBuild(web.db, id, null))!.state === 'running',
    );
    // The glue lost its job (its data directory was wiped): the job is put again and the build runs anew.
    await g.server.close();
    const { rmSync } = await import('node:fs');
    rmSync(path.join(g.dataDir, 'glue/jobs'), { recursive: true, force: true });
    const cfg = loadConfig(
      {},
      { dataDir: g.dataDir, ssh: { host: '127.0.0.1', port: g.port }, glue: { sdkCommand: g.cfg.glue.sdkCommand } },
    );
    g.server = await startGlueServer(cfg, silentLogger);
    const done = await web.waitForBuild(id);
    expect(done).toMatchObject({
      state: 'succeeded',
      requeues: 1,
      requeue_reason: 'the build vanished from the build service',
      backend_build: 1,
    });
  }, 120_000);
});

describe('finding 11: a build runs exactly the Dockerfile version it recorded', () => {
  it('put A, put B (another dispatch), build for A: the glue refuses, the web puts A again, and A is what runs', async () => {
    const B = 'FROM debian:bookworm\nRUN echo version-B\n';
    let interleaved = false;
    const { g, web, alice } = await chain((real) => ({
      close: () => real.close(),
      artifact: (...a) => real.artifact(...a),
      wait: (...a) => real.wait(...a),
      async call(verb, args, stdin) {
        if (verb === 'job.build' && !interleaved) {
          // Another dispatch, of version B, lands between this dispatch's job.put and its job.build.
          interleaved = true;
          await real.call('job.put', [args[0]!], JSON.stringify(fakeSpec(undefined, { dockerfile: B })));
        }
        return real.call(verb, args, stdin);
      },
    }));
    const A = 'FROM debian:bookworm\nRUN echo version-A\n';
    const dfId = await alice.createDockerfile('raced', A);
    const { id } = await alice.build(dfId);
    const b = await web.waitForBuild(id);
    expect(b.state).toBe('succeeded');
    expect(interleaved).toBe(true);
    const used = readFileSync(
      path.join(g.dataDir, `glue/jobs/kiln-job-${dfId}/builds/${b.backend_build}/archive/Dockerfile.used`),
      'utf8',
    );
    expect(used).toBe(A);
  }, 120_000);
});
