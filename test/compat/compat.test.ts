/**
 * The compatibility corpus (corpus.ts): its shape, checked on every entry without building anything, and its short
 * form, a few entries built and booted through the same `runCompat` as `make compat` (which runs them all).
 *
 * The short form's entries, and why these (each boot costs minutes of CI; the other boots in `make test` cover the
 * rest of what an image maps to):
 * - systemd-timer-appliance: the image's own systemd units (a .timer, DynamicUser=, StateDirectory=) and no CMD, so
 *   no Kiln app service: the boot passes only on the marker its own unit prints (LABEL io.kiln.expect-console alone).
 *   It shares debian-minimal's kernel layer, so it is the cheapest boot of the corpus.
 * - build-args: the pipeline's options as CI passes them: `--build-arg` overriding ARG defaults (one before FROM
 *   choosing a `-slim` tag) and `--expect-console` from the command line, on an image without kernel or init.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { consoleExpectations } from '../../src/sdk/expect-console.js';
import { kilnRun } from '../helpers/kiln.js';
import { ENTRY_OPTIONS, listCorpus, MARKER_PREFIX, runCompat } from './corpus.js';

const SHORT_FORM = ['systemd-timer-appliance', 'build-args'];

const corpus = listCorpus();
const text = (name: string) => readFileSync(corpus.find((e) => e.name === name)!.dockerfile, 'utf8');
/** Instructions, comments and continuations aside. */
const instructions = (t: string) =>
  t
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() && !l.trimStart().startsWith('#'));

describe('the compatibility corpus', () => {
  it('has at least 20 entries, each with a header saying which CI pattern it is and how its marker comes about', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(20);
    for (const e of corpus) {
      const t = text(e.name);
      expect(t.startsWith('# CI pattern: '), e.name).toBe(true);
      expect(t, e.name).toMatch(/^# Marker: /m);
    }
  });

  it('each entry expects its own marker, KILN-COMPAT-OK <name>, text the SDK accepts; no two share one', () => {
    for (const e of corpus) {
      expect(
        e.label === `${MARKER_PREFIX} ${e.name}` || e.label.startsWith(`${MARKER_PREFIX} ${e.name}:`),
        `${e.name}: ${e.label}`,
      ).toBe(true);
      expect(() => consoleExpectations(e.expectConsole, { 'io.kiln.expect-console': e.label })).not.toThrow();
    }
    expect(new Set(corpus.map((e) => `${MARKER_PREFIX} ${e.name}`)).size).toBe(corpus.length);
    for (const name of Object.keys(ENTRY_OPTIONS)) expect(corpus.map((e) => e.name)).toContain(name);
    for (const name of SHORT_FORM) expect(corpus.map((e) => e.name)).toContain(name);
  });

  it('covers what the issue asks for: Node and Python services, a compiled multi-stage binary, nginx, a systemd-unit appliance, USER, SHELL, -slim, trixie, HEALTHCHECK, STOPSIGNAL, build arguments', () => {
    const having = (re: RegExp) =>
      corpus.filter((e) => instructions(text(e.name)).some((l) => re.test(l))).map((e) => e.name);
    const needs: [string, RegExp][] = [
      ['Node from Debian', /apt-get install .*\bnodejs\b/],
      ['Python from Debian packages', /apt-get install .*\bpython3-(flask|yaml)\b/],
      ['a port EXPOSEd', /^EXPOSE\s/],
      ['a Go or C toolchain in a builder stage', /apt-get install .*\b(golang-go|gcc)\b/],
      ['a multi-stage build', /^COPY --from=/],
      ['nginx', /apt-get install .*\bnginx/],
      ['an image that enables its own units', /systemctl enable/],
      ['a non-root USER', /^USER (?!root\b|0\b)\S/],
      ['SHELL', /^SHELL \[/],
      ['-slim', /^FROM \S*debian:\S*-slim\b/],
      ['trixie', /^FROM \S*debian:trixie/],
      ['HEALTHCHECK', /^HEALTHCHECK\s/],
      ['STOPSIGNAL', /^STOPSIGNAL\s/],
      ['ARG with a default', /^ARG \w+=/],
    ];
    for (const [what, re] of needs) expect(having(re), what).not.toEqual([]);
    expect(
      Object.values(ENTRY_OPTIONS).some((o) => Object.keys(o.buildArgs ?? {}).length),
      'a --build-arg the corpus passes',
    ).toBe(true);
  });

  it('every entry passes the Dockerfile policy with the default settings, base names as CI writes them included (kiln sdk check)', async () => {
    for (const e of corpus) {
      const r = await kilnRun([
        'sdk',
        'check',
        '--dockerfile',
        e.dockerfile,
        '--context',
        e.dir,
        ...Object.entries(e.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
      ]);
      expect(`${e.name}: ${r.code} ${r.stdout}${r.stderr}`).toMatch(new RegExp(`^${e.name}: 0 ok: no findings`));
    }
  });
});

describe('the compatibility corpus, short form (make compat runs every entry)', () => {
  it(
    `${SHORT_FORM.join(', ')}: each builds and boots to its marker`,
    async () => {
      const run = await runCompat({ names: SHORT_FORM, say: (l) => console.log(l) });
      console.log(run.line);
      expect(run.results.map((r) => `${r.name}: ${r.reason || 'pass'}`)).toEqual(
        SHORT_FORM.slice()
          .sort()
          .map((n) => `${n}: pass`),
      );
      expect(run.line).toBe(`compat: ${SHORT_FORM.length}/${SHORT_FORM.length} boot to their marker`);
    },
    60 * 60_000,
  );
});
