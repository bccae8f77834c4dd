import { describe, expect, it } from 'vitest';
import { PROGRESS_PREFIX as PROTOCOL_PREFIX } from '../../src/protocol/index.js';
import { PROGRESS_PREFIX } from '../../src/sdk/reporter.js';
import { checkDockerfile, normaliseImage } from '../../src/sdk/policy.js';
import { isKilnError } from '../../src/shared/errors.js';

const opts = { bases: ['debian:bookworm', 'debian:trixie'], allowRemoteAdd: false };

function refusal(text: string, o = opts): { line: number; message: string }[] {
  try {
    checkDockerfile(text, o);
  } catch (e) {
    expect(isKilnError(e, 'policy_violation')).toBe(true);
    return (e as { detail: { line: number; message: string }[] }).detail;
  }
  throw new Error('expected a policy refusal');
}

describe('progress prefix', () => {
  it('equals the protocol prefix', () => {
    expect(PROGRESS_PREFIX).toBe(PROTOCOL_PREFIX);
  });
});

describe('Dockerfile policy', () => {
  it('accepts an allowed base and returns it', () => {
    expect(checkDockerfile('FROM debian:bookworm\nRUN true\n', opts)).toEqual({ bases: ['debian:bookworm'], stages: 1 });
  });

  it('accepts multi-stage builds, stage references, scratch, ARG in FROM and docker.io names', () => {
    const r = checkDockerfile([
      'ARG SUITE=trixie',
      'FROM docker.io/library/debian:${SUITE} AS build',
      'RUN true',
      'FROM build AS second',
      'FROM scratch',
      'COPY --from=build /a /a',
      'COPY --from=1 /b /b',
      'FROM debian:bookworm',
      'COPY --from=second /c /c',
    ].join('\n'), opts);
    expect(r.bases.sort()).toEqual(['debian:bookworm', 'debian:trixie']);
    expect(r.stages).toBe(4);
  });

  it('lets --build-arg choose the base', () => {
    expect(checkDockerfile('ARG S=trixie\nFROM debian:$S\n', { ...opts, buildArgs: { S: 'bookworm' } }).bases).toEqual(['debian:bookworm']);
    expect(refusal('ARG S=trixie\nFROM debian:$S\n', { ...opts, buildArgs: { S: 'sid' } } as typeof opts)[0]!.line).toBe(2);
  });

  it('refuses an unknown base with the allowed list and the line number', () => {
    const v = refusal('# comment\nFROM alpine:3.19\nRUN true\n');
    expect(v).toHaveLength(1);
    expect(v[0]!.line).toBe(2);
    expect(v[0]!.message).toContain('debian:bookworm, debian:trixie');
    expect(refusal('FROM debian\n')[0]!.message).toContain('not an allowed base');
    expect(refusal('FROM 10.0.0.5:5000/img\n')[0]!.line).toBe(1);
    expect(refusal('FROM debian@sha256:' + 'a'.repeat(64) + '\n')[0]!.line).toBe(1);
  });

  it.each([
    ['# syntax=docker/dockerfile:1\nFROM debian:bookworm\n', 1],
    ['#syntax = evil/frontend:latest\nFROM debian:bookworm\n', 1],
    ['# escape=`\n# Syntax=evil/x\nFROM debian:bookworm\n', 2],
  ])('refuses a syntax directive: %j', (text, line) => {
    const v = refusal(text);
    expect(v.map((x) => x.line)).toContain(line);
    expect(v[0]!.message).toContain('syntax');
  });

  it('refuses remote ADD (all forms) with line numbers unless allowed', () => {
    const text = [
      'FROM debian:bookworm',
      'ADD http://169.254.169.254/latest/meta-data/ /x',
      'ADD --chown=1:1 https://example.com/a.tgz /y',
      'ADD ["ftp://example.com/f", "/z"]',
      'ADD git@github.com:a/b.git /src',
      'ADD local.txt /ok',
      'COPY local.txt /ok2',
    ].join('\n');
    expect(refusal(text).map((v) => v.line)).toEqual([2, 3, 4, 5]);
    expect(() => checkDockerfile(text, { ...opts, allowRemoteAdd: true })).not.toThrow();
  });

  it('refuses COPY --from of an image, RUN --network/--mount, instructions before FROM, no FROM', () => {
    expect(refusal('FROM debian:bookworm\nCOPY --from=nginx:latest /a /b\n')[0]!.line).toBe(2);
    expect(refusal('FROM debian:bookworm AS a\nCOPY --from=a /x /y\nCOPY --from=1 /x /y\n').map((v) => v.line)).toEqual([2, 3]);
    expect(refusal('FROM debian:bookworm\nRUN --network=host curl x\nRUN --mount=type=secret,id=a cat /run/secrets/a\n').map((v) => v.line)).toEqual([2, 3]);
    expect(refusal('RUN true\nFROM debian:bookworm\n')[0]!.line).toBe(1);
    expect(refusal('# nothing\n')[0]!.message).toContain('no FROM');
  });

  it('checklist 43: refuses a WORKDIR in /proc, /sys or /dev (also relative, with .., or in ONBUILD), and ONBUILD RUN --network', () => {
    const text = [
      'FROM debian:bookworm AS a',
      'WORKDIR /proc/self/fd/7',
      'WORKDIR /app',
      'WORKDIR ../sys/fs/cgroup',
      'ONBUILD WORKDIR /proc/self/fd/8',
      'ONBUILD RUN --network=host curl http://jenkins:8080',
      'FROM a',
      'WORKDIR ../../../dev',
      'FROM debian:bookworm',
      'WORKDIR dev/x',
      'WORKDIR /srv/proc',
      'WORKDIR /device',
    ].join('\n');
    const v = refusal(text);
    // Line 8 starts where stage a ended (/sys/fs/cgroup), so ../../../dev is /dev; line 10 starts from /.
    expect(v.map((x) => x.line)).toEqual([2, 4, 5, 6, 8, 10]);
    expect(v[0]!.message).toContain('WORKDIR /proc/self/fd/7 is not allowed');
    expect(v[1]!.message).toContain('WORKDIR /sys/fs/cgroup');
    expect(v[2]!.message).toContain('ONBUILD WORKDIR /proc/self/fd/8');
    expect(v[3]!.message).toContain('ONBUILD RUN --network');
  });

  it('normalises image names', () => {
    expect(normaliseImage('Debian:Bookworm')).toBe('debian:bookworm');
    expect(normaliseImage('docker.io/library/debian:trixie')).toBe('debian:trixie');
    expect(normaliseImage('debian')).toBe('debian:latest');
    expect(normaliseImage('localhost:5000/x')).toBe('localhost:5000/x:latest');
  });
});
