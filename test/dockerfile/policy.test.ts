import { describe, expect, it } from 'vitest';
import { canonicalImage } from '../../src/dockerfile/image-ref.js';
import { expandWord, LexError, UNKNOWN } from '../../src/dockerfile/lex.js';
import { parseDockerfile } from '../../src/dockerfile/parse.js';
import {
  checkDockerfile,
  evaluateDockerfile,
  kilnBaseConfigs,
  type PolicyOptions,
} from '../../src/dockerfile/policy.js';
import { isKilnError } from '../../src/shared/errors.js';
import { BENIGN, HOSTILE } from './corpus.js';

const bases = ['debian:bookworm', 'debian:trixie'];
const opts: PolicyOptions = { bases, allowRemoteAdd: false, baseConfigs: kilnBaseConfigs(bases) };

function refusal(text: string, o: PolicyOptions = opts): { line: number; message: string }[] {
  try {
    checkDockerfile(text, o);
  } catch (e) {
    expect(isKilnError(e, 'policy_violation')).toBe(true);
    expect((e as Error).message).toMatch(/^Dockerfile refused by policy:\n {2}line \d+: /);
    return (e as { detail: { line: number; message: string }[] }).detail;
  }
  throw new Error('expected a policy refusal');
}

describe('hostile corpus: refused at the right line', () => {
  it('holds at least 40 variants', () => {
    expect(HOSTILE.length).toBeGreaterThanOrEqual(40);
  });
  it.each(HOSTILE.map((c) => [c.title, c] as const))('%s', (_title, c) => {
    const v = refusal(c.text, { ...opts, buildArgs: c.buildArgs, baseConfigs: c.baseConfigs ?? opts.baseConfigs });
    expect([...new Set(v.map((x) => x.line))], JSON.stringify(v)).toEqual(c.lines);
  });
});

describe('benign controls: accepted', () => {
  it.each(BENIGN.map((c) => [c.title, c] as const))('%s', (_title, c) => {
    const r = evaluateDockerfile(c.text, {
      ...opts,
      buildArgs: c.buildArgs,
      allowRemoteAdd: c.allowRemoteAdd ?? false,
    });
    expect([...r.violations, ...r.layerViolations]).toEqual([]);
  });
});

describe('Dockerfile policy', () => {
  it('accepts an allowed base and returns it as the admin spelled it', () => {
    expect(checkDockerfile('FROM debian:bookworm\nRUN true\n', opts)).toMatchObject({
      bases: ['debian:bookworm'],
      stages: 1,
    });
    expect(checkDockerfile('FROM index.docker.io/library/debian:trixie\n', opts).bases).toEqual(['debian:trixie']);
  });

  it('accepts multi-stage builds, stage references, scratch, ARG in FROM and docker.io names', () => {
    const r = checkDockerfile(
      [
        'ARG SUITE=trixie',
        'FROM docker.io/library/debian:${SUITE} AS build',
        'RUN true',
        'FROM build AS second',
        'FROM scratch',
        'COPY --from=build /a /a',
        'COPY --from=1 /b /b',
        'FROM debian:bookworm',
        'COPY --from=second /c /c',
      ].join('\n'),
      opts,
    );
    expect(r.bases.sort()).toEqual(['debian:bookworm', 'debian:trixie']);
    expect(r.stages).toBe(4);
  });

  it('lets --build-arg choose among allowed bases only', () => {
    expect(checkDockerfile('ARG S=trixie\nFROM debian:$S\n', { ...opts, buildArgs: { S: 'bookworm' } }).bases).toEqual([
      'debian:bookworm',
    ]);
    expect(refusal('ARG S=trixie\nFROM debian:$S\n', { ...opts, buildArgs: { S: 'sid' } })[0]!.line).toBe(2);
  });

  it('refuses an unknown base with the allowed list and the line number', () => {
    const v = refusal('# comment\nFROM alpine:3.19\nRUN true\n');
    expect(v).toHaveLength(1);
    expect(v[0]!.line).toBe(2);
    expect(v[0]!.message).toContain('debian:bookworm, debian:trixie');
    expect(refusal('FROM debian\n')[0]!.message).toContain('not an allowed base');
    expect(refusal('ARG B=1\nFROM ${B:+registry.example/x}\n')[0]!.message).toContain(
      'FROM ${B:+registry.example/x} (registry.example/x) is not an allowed base',
    );
  });

  it.each([
    ['# syntax=docker/dockerfile:1\nFROM debian:bookworm\n', 1],
    ['#syntax = evil/frontend:latest\nFROM debian:bookworm\n', 1],
    ['# escape=`\n# Syntax=evil/x\nFROM debian:bookworm\n', 2],
  ])('case 38: refuses a syntax directive: %j', (text, line) => {
    const v = refusal(text);
    expect(v.map((x) => x.line)).toContain(line);
    expect(v[0]!.message).toContain('syntax');
  });

  it('case 39: refuses remote ADD (all forms) with line numbers unless allowed', () => {
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

  it('case 37: refuses RUN --network=host and --mount; COPY --from of an image; instructions before FROM; no FROM', () => {
    expect(refusal('FROM debian:bookworm\nCOPY --from=nginx:latest /a /b\n')[0]!.line).toBe(2);
    expect(refusal('FROM debian:bookworm AS a\nCOPY --from=a /x /y\nCOPY --from=1 /x /y\n').map((v) => v.line)).toEqual(
      [2, 3],
    );
    const run = refusal(
      'FROM debian:bookworm\nRUN --network=host curl x\nRUN --mount=type=secret,id=a cat /run/secrets/a\n',
    );
    expect(run.map((v) => v.line)).toEqual([2, 3]);
    expect(run[0]!.message).toBe('RUN --network is not allowed');
    expect(refusal('RUN true\nFROM debian:bookworm\n')[0]!.line).toBe(1);
    expect(refusal('# nothing\n')[0]!.message).toContain('no FROM');
  });

  it('case 43: refuses a WORKDIR in /proc, /sys or /dev (also relative, with .., via ENV, or in ONBUILD where it fires)', () => {
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
      'ENV D=/proc/self/fd/9',
      'WORKDIR $D',
    ].join('\n');
    const v = refusal(text);
    // Line 8 starts where the trigger of line 5 left it (/proc/self/fd/8): ../../../dev is /proc/dev.
    expect(v.map((x) => x.line)).toEqual([2, 4, 5, 6, 8, 10, 14]);
    expect(v[0]!.message).toContain('WORKDIR /proc/self/fd/7 is not allowed');
    expect(v[1]!.message).toContain('WORKDIR /sys/fs/cgroup');
    expect(v[2]!.message).toContain('ONBUILD WORKDIR /proc/self/fd/8 is not allowed');
    expect(v[2]!.message).toContain('it fires at line 7 (FROM a)');
    expect(v[3]!.message).toContain('ONBUILD RUN --network');
    expect(v[6]!.message).toContain(
      'WORKDIR /proc/self/fd/9 is not allowed (a working directory in /proc, /sys or /dev); written $D',
    );
  });

  it("says when a trigger fires in Kiln's own layer, and keeps those findings apart", () => {
    const r = evaluateDockerfile('FROM debian:bookworm\nONBUILD ADD http://10.0.0.1/ /x\n', opts);
    expect(r.violations).toEqual([]);
    expect(r.layerViolations).toEqual([
      { line: 2, message: expect.stringContaining('fires when Kiln builds its own layer on the final image') },
    ]);
    expect(refusal('FROM debian:bookworm\nONBUILD ADD http://10.0.0.1/ /x\n')[0]!.line).toBe(2);
  });

  it('refuses what the builder refuses before running, with its reason', () => {
    expect(refusal('FROM debian:bookworm\nFOO bar\n')[0]!.message).toContain('unknown instruction: FOO');
    expect(refusal('FROM debian:bookworm\nONBUILD FROM x\n')[0]!.message).toContain(
      "FROM isn't allowed as an ONBUILD trigger",
    );
    expect(refusal('# escape=x\nFROM debian:bookworm\n')[0]!.message).toContain('invalid escape token');
    expect(refusal('FROM debian:bookworm\nLABEL a=${A-b}\n')[0]!.message).toContain("missing ':' in substitution");
  });

  it('gives up, with a finding, on a Dockerfile crafted to take too much work (triggers firing in thousands of stages)', () => {
    const text = 'FROM debian:bookworm AS a\n' + 'ONBUILD LABEL x=$A${B:-c}\n'.repeat(1200) + 'FROM a\n'.repeat(4500);
    const v = refusal(text);
    expect(v).toHaveLength(1);
    expect(v[0]!.message).toMatch(/^Kiln stops checking here: the Dockerfile takes too much work to check/);
  });

  it('refuses ${} nested deeper than Kiln expands, and survives 100,000 levels', () => {
    expect(() =>
      checkDockerfile(`FROM debian:bookworm\nLABEL a=${'${A:-'.repeat(100)}x${'}'.repeat(100)}\n`, opts),
    ).not.toThrow();
    const v = refusal(`FROM debian:bookworm\nLABEL a=${'${A:-'.repeat(100_000)}${'}'.repeat(100_000)}\n`);
    expect(v[0]!.message).toContain('nested more than 100 deep, which Kiln does not check');
    expect(v[0]!.message).not.toContain('the builder stops there');
    expect(v[0]!.message.length).toBeLessThan(400);
  });

  it('treats an allowed base as unknown unless its config is given', () => {
    const unknown = { bases, allowRemoteAdd: false };
    expect(refusal('FROM debian:bookworm\nWORKDIR $HOME\n', unknown)[0]!.message).toContain('cannot know');
    expect(() =>
      checkDockerfile('FROM debian:bookworm\nENV HOME=/root\nWORKDIR $HOME\nADD ${HOME}/x /y\n', unknown),
    ).not.toThrow();
  });
});

describe("the builder's expansion rules", () => {
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  it.each([
    ['$A', { A: '1' }, '1'],
    ['${A:+alt}', { A: '1' }, 'alt'],
    ['${A:+alt}', { A: '' }, ''],
    ['${A:-def}', { A: '' }, 'def'],
    ['${A:-def}', {}, 'def'],
    ['${A?x}', { A: '' }, ''],
    ['\\$A', { A: '1' }, '$A'],
    ["'$A'", { A: '1' }, '$A'],
    ['"$A b"', { A: '1' }, '1 b'],
    ['${A:-"}"}', {}, '}'],
    ['\uFEFF/x', {}, '/x'],
    ['$1$é', { é: 'e' }, 'e'],
    ['a\\', {}, 'a'],
  ])('%j with %j is %j', (word, vars, out) => {
    expect(expandWord(word, env(vars)).text).toBe(out);
  });
  it.each(['${A-x}', '${}', '${A:?}', '${A?}', '${A', '"a', "'a", '${A:=x}'])('%j fails as in the builder', (word) => {
    expect(() => expandWord(word, env({}))).toThrow(LexError);
  });
  it('keeps what it knows before an unknown value', () => {
    expect(expandWord('http://${H}/x', () => UNKNOWN)).toEqual({ text: 'http:///x', known: false, prefix: 'http://' });
  });
});

describe("the builder's parser", () => {
  it('joins continuations, skips comments and blank lines inside them, keeps start lines', () => {
    const p = parseDockerfile('FROM x\nRUN a \\\n  # c\n\n  b\nLABEL a=b\\\\\nLABEL c=d\n');
    expect(p.nodes.map((n) => [n.keyword, n.startLine, n.args])).toEqual([
      ['from', 1, ['x']],
      ['run', 2, ['a   b']],
      ['label', 6, ['a', 'b\\\\']],
      ['label', 7, ['c', 'd']],
    ]);
  });
  it('honours # escape= only before anything else', () => {
    expect(parseDockerfile('# escape=`\nFROM x').escape).toBe('`');
    expect(parseDockerfile('\n# escape=`\nFROM x').escape).toBe('\\');
    expect(parseDockerfile('# syntax=a\n  # ESCAPE = ` \nFROM x').escape).toBe('`');
    expect(parseDockerfile('# hello\n# escape=`\nFROM x').escape).toBe('\\');
    // Only spaces after `=`: the builder's regular expression still takes one of them as the value.
    expect(parseDockerfile(`# escape=${' '.repeat(100_000)}\nFROM x`).error?.message).toBe(
      "invalid escape token ' ' does not match ` or \\",
    );
    expect(parseDockerfile('# escape=\nFROM x').escape).toBe('\\');
  });
  it('reads flags byte-wise, with quotes and backslashes, and JSON up to its first value', () => {
    const p = parseDockerfile('COPY --from="a b" --chown=\\x ["s", "d"] tail\nADD --from=\u00e0 x y\n');
    expect(p.nodes[0]).toMatchObject({ flags: ['--from=a b', '--chown=x'], args: ['s', 'd'], json: true });
    // U+00E0 is C3 A0 in UTF-8; the builder takes A0 for a space.
    expect(p.nodes[1]!.flags).toEqual(['--from=\u00c3']);
  });
  it('lower-cases keywords as Go does', () => {
    expect(parseDockerfile('WORKD\u0130R /x\n').nodes[0]!.keyword).toBe('workdir');
  });
});

describe('image names as the engine resolves them', () => {
  it.each([
    ['debian:bookworm', 'docker.io/library/debian:bookworm'],
    ['docker.io/library/debian:trixie', 'docker.io/library/debian:trixie'],
    ['index.docker.io/library/debian', 'docker.io/library/debian:latest'],
    ['debian:BOOKWORM', 'docker.io/library/debian:BOOKWORM'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['10.0.0.5:5000/img', '10.0.0.5:5000/img:latest'],
    ['Debian:bookworm', undefined],
    ['a'.repeat(64), undefined],
  ])('%s is %s', (ref, canonical) => {
    expect(canonicalImage(ref)).toBe(canonical);
  });
});
