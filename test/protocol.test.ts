import { describe, expect, it } from 'vitest';
import { formatCommand, lastProgress, parseCommand } from '../src/protocol/index.js';
import { isKilnError } from '../src/shared/errors.js';

describe('parseCommand', () => {
  it.each([
    ['ping', { verb: 'ping', args: [] }],
    ['job.put 7', { verb: 'job.put', args: [7] }],
    ['job.build 7 abcdef12', { verb: 'job.build', args: [7, 'abcdef12'] }],
    [`job.build 7 abcdef12 ${'a0'.repeat(32)}`, { verb: 'job.build', args: [7, 'abcdef12', 'a0'.repeat(32)] }],
    ['build.log 7 3 0', { verb: 'build.log', args: [7, 3, 0] }],
    ['build.artifact 7 3 image.raw', { verb: 'build.artifact', args: [7, 3, 'image.raw'] }],
    ['build.artifact 7 3 image.raw 1024', { verb: 'build.artifact', args: [7, 3, 'image.raw', 1024] }],
    ['build.wait 7 3 running 30', { verb: 'build.wait', args: [7, 3, 'running', 30] }],
    ['build.wait 7 3 queued 1', { verb: 'build.wait', args: [7, 3, 'queued', 1] }],
    ['build.wait 7 3 succeeded 60', { verb: 'build.wait', args: [7, 3, 'succeeded', 60] }],
  ])('accepts %j', (line, expected) => {
    expect(parseCommand(line)).toEqual(expected);
  });

  it.each([
    '',
    ' ',
    'ping ',
    ' ping',
    'ping  ',
    'nope',
    'shell',
    'job.put',
    'job.put 0',
    'job.put 01',
    'job.put -1',
    'job.put 7 8',
    'job.put 7; rm -rf /',
    'job.put $(id)',
    'job.put `id`',
    'job.put 7\nid',
    'job.put 7\rid',
    'job.put 7\0',
    'job.put ../x',
    'job.put /etc/passwd',
    'job.put 7|id',
    'job.put 7&&id',
    'job.put 99999999999999',
    'build.artifact 7 3 ../../etc/shadow',
    'build.artifact 7 3 image.raw -1',
    'job.build 7 short',
    'job.build 7 --exec=x',
    'job.build 7 _abcdefgh',
    `job.build 7 abcdef12 ${'A0'.repeat(32)}`,
    `job.build 7 abcdef12 ${'a'.repeat(63)}`,
    `job.build 7 abcdef12 ${'a'.repeat(64)} x`,
    'job.put\t7',
    'toString',
    '__proto__',
    'constructor 1',
    'job.put 7 ' + 'a'.repeat(300),
    'build.wait 7 3 running',
    'build.wait 7 3 running 0',
    'build.wait 7 3 running 61',
    'build.wait 7 3 running 600',
    'build.wait 7 3 running 05',
    'build.wait 7 3 verifying 30',
    'build.wait 7 3 RUNNING 30',
    'build.wait 7 3 running 30 x',
  ])('rejects %j', (line) => {
    let err: unknown;
    try {
      parseCommand(line);
    } catch (e) {
      err = e;
    }
    expect(isKilnError(err, 'invalid_input')).toBe(true);
  });

  it('rejects bytes that are not UTF-8', () => {
    expect(() => parseCommand(Buffer.from([0x70, 0x69, 0x6e, 0x67, 0xff]))).toThrow(/UTF-8/);
  });

  it('formatCommand round-trips and refuses what the glue would refuse', () => {
    expect(parseCommand(formatCommand('build.status', 12, 4))).toEqual({ verb: 'build.status', args: [12, 4] });
    expect(() => formatCommand('job.put', '1; id')).toThrow();
  });
});

describe('lastProgress', () => {
  it('finds the last well-formed event at a line start', () => {
    const log =
      'x\n##kiln {"stage":"build","percent":10}\nnoise ##kiln {"stage":"fake","percent":99}\n##kiln {broken\n';
    expect(lastProgress(log)).toEqual({ stage: 'build', percent: 10 });
    expect(lastProgress('nothing')).toBeUndefined();
  });
});

describe('specSha256', () => {
  it("is the Dockerfile's sha256 without a context (what the web stores per version), and binds the context when there is one", async () => {
    const { createHash } = await import('node:crypto');
    const { specSha256 } = await import('../src/protocol/index.js');
    const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
    expect(specSha256('FROM x\n')).toBe(sha('FROM x\n'));
    expect(specSha256('FROM x\n', Buffer.alloc(0))).toBe(sha('FROM x\n'));
    const ctx = Buffer.from('tar');
    expect(specSha256('FROM x\n', ctx)).toBe(sha(`${sha('FROM x\n')}\n${sha(ctx)}\n`));
    expect(specSha256(Buffer.from('FROM x\n'), ctx)).toBe(specSha256('FROM x\n', ctx));
    expect(specSha256('FROM x\n', Buffer.from('other'))).not.toBe(specSha256('FROM x\n', ctx));
  });
});

describe("the SDK's output formats (one zod definition for sdk, glue and web)", () => {
  const result = {
    ok: false,
    sdkVersion: '1',
    startedAt: 't0',
    finishedAt: 't1',
    artifacts: [],
    bootTests: [{ artifact: 'image.raw', firmware: 'uefi', passed: false, seconds: 3, reason: 'no login prompt' }],
    stages: [{ name: 'build', seconds: 1.5 }],
    error: { code: 'build_failed', message: 'RUN step 2 failed' },
  };

  it('result.json: what the SDK writes parses; anything else (not JSON, wrong types, an unknown error code) does not', async () => {
    const { parseBuildResult } = await import('../src/protocol/index.js');
    expect(parseBuildResult(JSON.stringify(result))).toEqual(result);
    expect(parseBuildResult(JSON.stringify({ ...result, extra: 'dropped' }))).toEqual(result);
    for (const bad of [
      '',
      'null',
      '{"ok":true,"artifacts":["image.raw"]}',
      JSON.stringify({ ...result, error: { code: 'nope', message: 'x' } }),
      JSON.stringify({ ...result, bootTests: [{ ...result.bootTests[0], firmware: 'efi' }] }),
    ]) {
      expect(parseBuildResult(bad), bad).toBeUndefined();
    }
  });

  it('the SDK refuses to write a result.json outside the format', async () => {
    const { writeResult } = await import('../src/sdk/result.js');
    const { tempDir } = await import('./helpers/tmp.js');
    const t = tempDir('kiln-result-');
    try {
      await expect(writeResult(t.dir, { ...result, stages: [{ name: 'x' }] } as never)).rejects.toThrow();
      await writeResult(t.dir, result as never);
      const { readFileSync } = await import('node:fs');
      expect(JSON.parse(readFileSync(`${t.dir}/result.json`, 'utf8'))).toEqual(result);
    } finally {
      t.cleanup();
    }
  });

  it('progress lines: only a whole line with the prefix and a valid event counts', async () => {
    const { parseProgressLine, PROGRESS_PREFIX } = await import('../src/protocol/index.js');
    const { PROGRESS_PREFIX: sdkPrefix } = await import('../src/sdk/reporter.js');
    expect(sdkPrefix).toBe(PROGRESS_PREFIX);
    expect(parseProgressLine('##kiln {"stage":"boot","percent":80,"message":"booting"}')).toEqual({
      stage: 'boot',
      percent: 80,
      message: 'booting',
    });
    for (const bad of [
      ' ##kiln {"stage":"boot","percent":80}',
      '##kiln {"stage":"boot","percent":180}',
      '##kiln {"stage":"boot"',
      'echo ##kiln {}',
    ]) {
      expect(parseProgressLine(bad), bad).toBeUndefined();
    }
  });
});
