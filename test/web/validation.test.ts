import { describe, expect, it } from 'vitest';
import {
  checkDockerfileText,
  decodeDockerfile,
  isCommonPassword,
  parseDockerfileName,
  parsePassword,
  parseUsername,
} from '../../src/core/validation.js';
import { safeNext } from '../../src/web/routes/util.js';

describe('web input validation (unit)', () => {
  it('usernames', () => {
    for (const ok of ['abc', 'alice', 'a-b_c9', 'a'.repeat(32)]) expect(parseUsername(ok)).toBe(ok);
    for (const bad of ['ab', 'Alice', '1abc', '-abc', 'a b', 'a'.repeat(33), 'ali\u0441e', '', 7, null])
      expect(() => parseUsername(bad)).toThrow(/Username must be/);
  });

  it('passwords: 12-128 code points, no truncation, common ones refused', () => {
    expect(parsePassword('🔥'.repeat(12))).toHaveLength(24);
    expect(parsePassword('xyz'.repeat(42) + 'ab')).toHaveLength(128);
    expect(() => parsePassword('🔥'.repeat(11))).toThrow(/12 to 128/);
    expect(() => parsePassword('xy'.repeat(64) + 'z')).toThrow(/12 to 128/);
    expect(() => parsePassword('abc\ud800defghijkl')).toThrow(/Unicode/);
    for (const p of ['password1234', 'PASSWORD1234', 'aaaaaaaaaaaa', 'abababababab', '234567890123', 'defghijklmnop'])
      expect(isCommonPassword(p), p).toBe(true);
    expect(isCommonPassword('correct horse battery staple')).toBe(false);
    expect(() => parsePassword('password1234')).toThrow(/too common/);
  });

  it('Dockerfile names', () => {
    for (const ok of ['a', 'debian-minimal', 'web.v2_x', '0', 'a'.repeat(63)]) expect(parseDockerfileName(ok)).toBe(ok);
    for (const bad of ['', 'A', '.a', '-a', '_a', 'a/b', '../x', 'a b', 'a'.repeat(64), 'ä', 'a\n'])
      expect(() => parseDockerfileName(bad)).toThrow();
  });

  it('Dockerfile text', () => {
    expect(checkDockerfileText('FROM x\r\nRUN y\r\n', 100)).toBe('FROM x\nRUN y\n');
    expect(checkDockerfileText('FROM x\n\tRUN y # ünïcødé 🔥\n', 100)).toContain('🔥');
    expect(() => checkDockerfileText('', 100)).toThrow(/empty/);
    expect(() => checkDockerfileText(' \n ', 100)).toThrow(/empty/);
    expect(() => checkDockerfileText('FROM x\0', 100)).toThrow(/NUL/);
    expect(() => checkDockerfileText('FROM x\ry', 100)).toThrow(/carriage return/);
    expect(() => checkDockerfileText('FROM x\x7f', 100)).toThrow(/control character/);
    expect(() => checkDockerfileText('FROM x\n\x1b[31m', 100)).toThrow(/line 2/);
    expect(() => checkDockerfileText('é'.repeat(51), 100)).toThrow(/larger/);
    expect(checkDockerfileText('é'.repeat(50), 100)).toHaveLength(50);
    expect(() => decodeDockerfile(Uint8Array.from([0xff, 0xfe]), 100)).toThrow(/UTF-8/);
    expect(() => decodeDockerfile(Uint8Array.from([0xed, 0xa0, 0x80]), 100)).toThrow(/UTF-8/); // encoded surrogate
    expect(() => decodeDockerfile(new Uint8Array(101).fill(0x41), 100)).toThrow(/larger/);
    expect(decodeDockerfile(Buffer.from('FROM x\n'), 100)).toBe('FROM x\n');
  });

  it('next= redirects', () => {
    for (const bad of [
      '//evil.com',
      '/\\evil.com',
      'https://evil.com',
      '%2F%2Fevil.com',
      'javascript:alert(1)',
      '/\t/evil.com',
      '/\n/evil',
      'http:/evil.com',
      '',
      undefined,
      ['/x'],
      '/' + 'a'.repeat(3000),
    ]) {
      expect(safeNext(bad), String(bad)).toBe('/');
    }
    expect(safeNext('/builds/3?x=1#y')).toBe('/builds/3?x=1#y');
    expect(safeNext('/a/../b')).toBe('/b');
  });
});

describe('idempotency keys', () => {
  it('form keys always pass the protocol; keys the glue would refuse are refused up front', async () => {
    const { newFormKey } = await import('../../src/web/routes/util.js');
    const { parseIdempotencyKey } = await import('../../src/core/validation.js');
    const { formatCommand } = await import('../../src/protocol/index.js');
    for (let i = 0; i < 2000; i++) {
      const k = newFormKey();
      expect(parseIdempotencyKey(k)).toBe(k);
      expect(() => formatCommand('job.build', 1, k)).not.toThrow();
    }
    for (const bad of ['-abcdefgh', '_abcdefgh', 'short', 'a'.repeat(65), 'abc def gh', 'abcdefgh;', undefined]) {
      expect(() => parseIdempotencyKey(bad), String(bad)).toThrow();
    }
  });
});
