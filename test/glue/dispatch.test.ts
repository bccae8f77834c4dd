import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import { createGlue, errorDocument, exitCodeFor, parseJobSpec, type Glue } from '../../src/glue/dispatch.js';
import { MAX_STDIN_BYTES, REPLIES } from '../../src/protocol/index.js';
import { KilnError, isKilnError } from '../../src/shared/errors.js';
import { fakeSpec, recording, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';

const body = (o: unknown) => async () => Buffer.from(JSON.stringify(o));
const noBody = async (): Promise<Buffer> => {
  throw new Error('stdin must not be read for this verb');
};

describe('glue dispatcher', () => {
  let tmp: ReturnType<typeof tempDir>;
  let backend: LocalBackend;
  let calls: string[];
  let glue: Glue;
  let logLines: Array<Record<string, unknown>>;

  beforeEach(async () => {
    tmp = tempDir('kiln-glue-dispatch-');
    backend = new LocalBackend({ dataDir: tmp.dir, sdkCommand: writeFakeSdk(tmp.dir), runner: false });
    await backend.start();
    const rec = recording(backend);
    calls = rec.calls;
    logLines = [];
    const sink = new Writable({
      write(chunk, _e, cb) {
        logLines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
        cb();
      },
    });
    glue = createGlue({ backend: rec.backend, logger: pino({ level: 'info' }, sink) });
  });
  afterEach(async () => {
    await backend.close();
    tmp.cleanup();
  });

  it('answers ping and job.put with replies that match the protocol schemas', async () => {
    const ping = await glue.handle('ping', noBody);
    expect(ping).toMatchObject({
      kind: 'json',
      reply: {
        protocol: 1,
        backend: 'local',
        backendReachable: true,
        version: expect.any(String),
        docker: { reachable: expect.any(Boolean) },
      },
    });
    const put = await glue.handle('job.put 7', body(fakeSpec()));
    expect(put.kind === 'json' && REPLIES['job.put'].parse(put.reply)).toEqual({ job: 7, created: true });
    const again = await glue.handle('job.put 7', body(fakeSpec()));
    expect(again.kind === 'json' && again.reply).toEqual({ job: 7, created: false });
    expect(calls).toEqual(['putJob', 'putJob']);
  });

  it.each([
    'job.put 7; rm -rf /',
    'job.build 5 $(id)',
    'job.build 5\nid',
    'job.put -x',
    'job.build 99999999999999 abcdefgh',
    'build.artifact 1 1 ../../etc/passwd',
    'build.log 1 1 -5',
    'job.put ../x',
    'jobs.list --all',
    'shell',
    'job.put 7 `id`',
    'job.delete 1 2',
    'build.status 1',
    'ping\0',
    'job.build 1 abc',
    "job.put '7'",
    'job.put "7"',
    'job.put 7\r',
    'job.put ~root',
    'job.put 7*',
    'job.put 7?',
    'job.put <7>',
    'job.put 7|cat',
    'job.put 7&',
  ])('rejects %j without reading stdin or touching the backend', async (line) => {
    let err: unknown;
    try {
      await glue.handle(line, noBody);
    } catch (e) {
      err = e;
    }
    expect(isKilnError(err, 'invalid_input')).toBe(true);
    expect(exitCodeFor(err as KilnError)).toBe(2);
    expect(calls).toEqual([]);
    expect(logLines).toHaveLength(1);
    expect(logLines[0]).toMatchObject({ audit: true, outcome: 'invalid_input' });
  });

  it('rejects a non-UTF-8 command line', async () => {
    await expect(glue.handle(Buffer.from([0x70, 0x69, 0x6e, 0x67, 0xc3]), noBody)).rejects.toMatchObject({
      code: 'invalid_input',
    });
    expect(calls).toEqual([]);
  });

  it.each([
    ['empty body', Buffer.alloc(0), /needs a job spec/],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), /UTF-8/],
    ['not JSON', Buffer.from('{owner:'), /JSON/],
    ['unknown field', Buffer.from(JSON.stringify({ ...fakeSpec(), shell: 'id' })), /invalid job spec/],
    ['bad name', Buffer.from(JSON.stringify(fakeSpec(undefined, { name: '../etc' }))), /name/],
    [
      'control char in build arg',
      Buffer.from(JSON.stringify(fakeSpec(undefined, { buildArgs: { A: 'x\ny' } }))),
      /buildArgs/,
    ],
    ['bad format', Buffer.from(JSON.stringify(fakeSpec(undefined, { formats: ['exe'] }))), /formats/],
    [
      'base name with a shell word',
      Buffer.from(JSON.stringify(fakeSpec(undefined, { baseNames: [{ name: '$(id)', base: 'debian:bookworm' }] }))),
      /baseNames/,
    ],
    [
      'base name with a digest',
      Buffer.from(
        JSON.stringify(
          fakeSpec(undefined, { baseNames: [{ name: `debian:12@sha256:${'a'.repeat(64)}`, base: 'debian:bookworm' }] }),
        ),
      ),
      /baseNames/,
    ],
    [
      'base name that reads as an option',
      Buffer.from(JSON.stringify(fakeSpec(undefined, { baseNames: [{ name: 'x', base: '--privileged' }] }))),
      /baseNames/,
    ],
  ])('job.put refuses a body that is %s (and stores nothing)', async (_what, buf, msg) => {
    await expect(glue.handle('job.put 3', async () => buf)).rejects.toThrow(msg);
    expect(calls).toEqual([]);
    expect(await backend.listJobs()).toEqual([]);
  });

  it('never puts the body into an error or the audit log', async () => {
    const secret = 'S3CRET-DOCKERFILE-CONTENT';
    const err = await glue
      .handle('job.put 3', body({ ...fakeSpec(), dockerfile: secret, bogus: secret }))
      .catch((e: unknown) => e);
    expect(isKilnError(err, 'invalid_input')).toBe(true);
    expect(errorDocument(err as KilnError)).not.toContain(secret);
    await glue.handle('job.put 3', body({ ...fakeSpec(), dockerfile: secret }));
    expect(JSON.stringify(logLines)).not.toContain(secret);
    expect(logLines.at(-1)).toMatchObject({ verb: 'job.put', args: [3], outcome: 'ok' });
    expect(typeof logLines.at(-1)!.durationMs).toBe('number');
  });

  it('gives up on a body that never ends', async () => {
    const { PassThrough } = await import('node:stream');
    const { readCapped } = await import('../../src/glue/dispatch.js');
    const s = new PassThrough();
    s.write('{"owner":');
    await expect(readCapped(s, 1000, 100)).rejects.toMatchObject({ code: 'timeout' });
    const big = new PassThrough();
    const p = readCapped(big, 10);
    big.write(Buffer.alloc(11));
    await expect(p).rejects.toMatchObject({ code: 'too_large' });
  });

  it.each(['* * * * *', 'H/1 * * * *', 'H H * * *\n* * * * *', 'daily\n* * * * *', '@hourly'])(
    'case 33: job.put refuses the schedule %j (only off, daily, weekly) and stores nothing',
    async (schedule) => {
      await expect(glue.handle('job.put 3', body(fakeSpec(undefined, { schedule })))).rejects.toMatchObject({
        code: 'invalid_input',
        message: expect.stringMatching(/schedule/),
      });
      expect(calls).toEqual([]);
      expect(await backend.listJobs()).toEqual([]);
    },
  );

  it('finding 10: job.build with the key "constructor" or "toString" makes a build like any other key', async () => {
    await glue.handle('job.put 4', body(fakeSpec()));
    for (const [n, key] of [
      [1, 'constructor'],
      [2, 'toString'],
      [3, 'hasOwnProperty'],
    ] as const) {
      expect(await glue.handle(`job.build 4 ${key}`, noBody)).toEqual({
        kind: 'json',
        reply: { job: 4, build: n, created: true },
      });
    }
  });

  it('caps the body at MAX_STDIN_BYTES', () => {
    expect(() => parseJobSpec(Buffer.alloc(MAX_STDIN_BYTES + 1, 0x20))).toThrow(/larger/);
  });

  it('maps backend errors to codes and exit statuses', async () => {
    const err = (await glue.handle('build.status 9 1', noBody).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('not_found');
    expect(exitCodeFor(err)).toBe(3);
    expect(JSON.parse(errorDocument(err))).toEqual({ error: { code: 'not_found', message: 'No such job' } });
    expect(logLines.at(-1)).toMatchObject({ verb: 'build.status', outcome: 'not_found' });
  });

  it('dispatches every verb to the backend', async () => {
    await glue.handle('job.put 4', body(fakeSpec()));
    const b = await glue.handle('job.build 4 key-00000001', noBody);
    expect(b.kind === 'json' && b.reply).toEqual({ job: 4, build: 1, created: true });
    const st = await glue.handle('build.status 4 1', noBody);
    expect(st.kind === 'json' && st.reply).toMatchObject({ job: 4, build: 1, state: 'queued' });
    const q = await glue.handle('queue.list', noBody);
    expect(q.kind === 'json' && q.reply).toMatchObject({ items: [{ job: 4, backendName: 'kiln-job-4' }] });
    const log = await glue.handle('build.log 4 1 0', noBody);
    expect(log.kind === 'json' && log.reply).toMatchObject({ offset: 0, more: true });
    await expect(glue.handle('build.artifact 4 1 image.raw', noBody)).rejects.toMatchObject({ code: 'not_found' });
    const c = await glue.handle('build.cancel 4 1', noBody);
    expect(c.kind === 'json' && c.reply).toEqual({ job: 4, build: 1, state: 'cancelled' });
    expect((await glue.handle('job.disable 4', noBody)).kind).toBe('json');
    await expect(glue.handle('job.build 4 key-00000002', noBody)).rejects.toMatchObject({ code: 'conflict' });
    expect((await glue.handle('job.enable 4', noBody)).kind).toBe('json');
    const jobs = await glue.handle('jobs.list', noBody);
    expect(jobs.kind === 'json' && jobs.reply).toEqual({
      jobs: [{ job: 4, backendName: 'kiln-job-4', managed: true, enabled: true, schedule: 'off', lastBuild: 1 }],
    });
    const del = await glue.handle('job.delete 4', noBody);
    expect(del.kind === 'json' && del.reply).toEqual({ job: 4, deleted: true });
    const del2 = await glue.handle('job.delete 4', noBody);
    expect(del2.kind === 'json' && del2.reply).toEqual({ job: 4, deleted: false });
    expect(calls).toEqual([
      'putJob',
      'build',
      'status',
      'listQueue',
      'log',
      'artifact',
      'cancel',
      'setEnabled',
      'build',
      'setEnabled',
      'listJobs',
      'deleteJob',
      'deleteJob',
    ]);
  });
});
