import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stripAnsi } from '../../src/sdk/boot-diagnosis.js';
import {
  closestLine,
  consoleExpectations,
  EXPECT_CONSOLE_LABEL,
  explainMissingTexts,
  missingTexts,
} from '../../src/sdk/expect-console.js';
import { KilnError } from '../../src/shared/errors.js';
import { kilnRun, repo } from '../helpers/kiln.js';
import { tempDir } from '../helpers/tmp.js';

const t = tempDir('kiln-sdk-expect-');
afterAll(() => t.cleanup());

const LABEL = `LABEL ${EXPECT_CONSOLE_LABEL}`;

function refusal(f: () => unknown): KilnError {
  try {
    f();
  } catch (e) {
    if (e instanceof KilnError) return e;
    throw e;
  }
  throw new Error('not refused');
}

describe('console expectations (--expect-console, LABEL io.kiln.expect-console)', () => {
  it("the command line's texts come first, then the label's; each once; an empty label asks for nothing", () => {
    expect(consoleExpectations(['A up', 'B up'], { [EXPECT_CONSOLE_LABEL]: 'C up', other: 'x' })).toEqual([
      { text: 'A up', source: '--expect-console' },
      { text: 'B up', source: '--expect-console' },
      { text: 'C up', source: LABEL },
    ]);
    expect(consoleExpectations(['same', 'same'], { [EXPECT_CONSOLE_LABEL]: 'same' })).toEqual([
      { text: 'same', source: '--expect-console' },
    ]);
    expect(consoleExpectations([], { [EXPECT_CONSOLE_LABEL]: '' })).toEqual([]);
    expect(consoleExpectations(undefined, null)).toEqual([]);
    // Quotes, $, % and non-ASCII are plain text here.
    expect(consoleExpectations(['it\'s "$HOME" 100% – ok'])[0]!.text).toBe('it\'s "$HOME" 100% – ok');
  });

  it.each([
    [[''], undefined, /--expect-console must not be empty/],
    [['   '], undefined, /--expect-console must not be empty or blank/],
    [['two\nlines'], undefined, /--expect-console contains a control character \(such as a newline\)/],
    [['x'.repeat(257)], undefined, /--expect-console is longer than 256 characters/],
    [
      [],
      { [EXPECT_CONSOLE_LABEL]: 'tab\there' },
      /The image's LABEL io\.kiln\.expect-console contains a control character/,
    ],
    [[], { [EXPECT_CONSOLE_LABEL]: ' ' }, /The image's LABEL io\.kiln\.expect-console must not be empty/],
    [Array.from({ length: 17 }, (_, i) => `t${i}`), undefined, /At most 16 console texts/],
  ])('refuses %j / %j with invalid_input naming where it came from', (cli, labels, message) => {
    const e = refusal(() => consoleExpectations(cli, labels));
    expect(e.code).toBe('invalid_input');
    expect(e.message).toMatch(message);
  });

  it("a missing text is named with who asked for it, the closest console line (else the app service's last one) and what to change", () => {
    const serial =
      '[    2.1] Linux version 6.1.0-40-amd64\r\n\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mkiln-app.service\x1b[0m - Kiln application.\r\n' +
      '[   9.1] show-config[222]: env: PS_HINT=[costs $$5]\r\n[   9.3] kiln-app.service: Main process exited, code=exited, status=1/FAILURE\r\n\r\nkiln login: ';
    const clean = stripAnsi(serial);
    const expected = consoleExpectations(['Started kiln-app.service', 'all systems go'], {
      [EXPECT_CONSOLE_LABEL]: 'env: PS_HINT=[costs $5]',
    });
    // Colours split systemd's lines: the text is looked for with them stripped.
    const missing = missingTexts(clean, expected);
    expect(missing).toEqual([
      { text: 'all systems go', source: '--expect-console' },
      { text: 'env: PS_HINT=[costs $5]', source: LABEL },
    ]);
    // A program that printed its line with one value wrong: that line is the evidence.
    expect(explainMissingTexts(clean, missing)).toBe(
      'the console never showed "all systems go" (asked for by --expect-console), ' +
        '"env: PS_HINT=[costs $5]" (asked for by LABEL io.kiln.expect-console); ' +
        'the closest console line, same as "env: PS_HINT=[costs $5]" for its first 21 characters: "[   9.1] show-config[222]: env: PS_HINT=[costs $$5]". ' +
        'Fix: the program must print it on its stdout or stderr (Kiln sends both to the console) once it is up; the serial log shows what it printed instead',
    );
    expect(closestLine(clean, 'env: PS_HINT=[costs $5]')).toEqual({
      line: '[   9.1] show-config[222]: env: PS_HINT=[costs $$5]',
      matched: 21,
    });
    // Nothing close (under 12 characters in common): the app service's last line instead.
    expect(closestLine(clean, 'all systems go')).toBeUndefined();
    expect(explainMissingTexts(clean, missing.slice(0, 1))).toBe(
      'the console never showed "all systems go" (asked for by --expect-console); ' +
        'the application service\'s last console line: "[   9.3] kiln-app.service: Main process exited, code=exited, status=1/FAILURE". ' +
        'Fix: the program must print it on its stdout or stderr (Kiln sends both to the console) once it is up; the serial log shows what it printed instead',
    );
  });

  it('kiln sdk build refuses a bad --expect-console before building anything (exit 2, result.json says why)', async () => {
    const out = path.join(t.dir, 'refused');
    const r = await kilnRun([
      'sdk',
      'build',
      '--dockerfile',
      path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'),
      '--out',
      out,
      '--expect-console',
      'a\nb',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--expect-console contains a control character');
    const result = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(result.ok).toBe(false);
    expect(result.error.code).toBe('invalid_input');
    expect(await fsp.readdir(out)).toEqual(['result.json']);
  });
});

describe('a real boot that never shows the expected text', () => {
  it("fails its boot test, and the reason names the text and who asked for it (the label's text showed, so only the option's is named)", async () => {
    const dir = path.join(t.dir, 'df');
    await fsp.mkdir(dir);
    // debian-minimal's kernel layer (shared through the engine's cache), then a program that prints a computed line:
    // the marker's text is in no file of the image, so only the program can put it on the console.
    const base = await fsp.readFile(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');
    await fsp.writeFile(
      path.join(dir, 'Dockerfile'),
      `${base}\nLABEL ${EXPECT_CONSOLE_LABEL}="kiln-expect: up 42"\n` +
        'CMD ["sh", "-c", "echo kiln-expect: up $((6*7)); exec sleep infinity"]\n',
    );
    const out = path.join(t.dir, 'out');
    const r = await kilnRun(
      [
        'sdk',
        'build',
        '--dockerfile',
        path.join(dir, 'Dockerfile'),
        '--out',
        out,
        '--format',
        'raw',
        '--boot-firmware',
        'bios',
        '--expect-console',
        'kiln-expect: never printed',
      ],
      { KILN_SDK_BOOT_TIMEOUT_SECONDS: '300' },
    );
    const result = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    const log = await fsp.readFile(path.join(out, 'build.log'), 'utf8');
    const serial = stripAnsi(await fsp.readFile(path.join(out, 'serial-image.raw.log'), 'utf8'));
    expect(r.code).toBe(1);
    expect(result.ok).toBe(false);
    expect(log).toContain(
      '[kiln] the boot tests pass only when the console shows "kiln-expect: never printed" (--expect-console), "kiln-expect: up 42" (LABEL io.kiln.expect-console)',
    );
    expect(serial).toContain('kiln-expect: up 42');
    expect(serial).toMatch(/login:/);
    const boot = result.bootTests[0];
    expect(boot.passed).toBe(false);
    // The program printed its line, with other words: that line is the closest to the missing text.
    expect(boot.reason).toMatch(
      /^login prompt seen, but within 60 s the console never showed "kiln-expect: never printed" \(asked for by --expect-console\); the closest console line, same as "kiln-expect: never printed" for its first 13 characters: ".*kiln-expect: up 42"\. Fix: the program must print it/,
    );
    expect(boot.reason).not.toContain('asked for by LABEL');
    expect(result.error.message).toContain(
      'The BIOS boot test of image.raw failed: login prompt seen, but within 60 s the console never showed "kiln-expect: never printed"',
    );
  }, 900_000);

  it('a label whose text cannot be matched fails the build after the image is built, naming the label', async () => {
    const dir = path.join(t.dir, 'bad-label');
    await fsp.mkdir(dir);
    await fsp.writeFile(
      path.join(dir, 'Dockerfile'),
      `FROM debian:bookworm\nARG MARKER\nLABEL ${EXPECT_CONSOLE_LABEL}=$MARKER\n`,
    );
    const out = path.join(t.dir, 'bad-label-out');
    const r = await kilnRun([
      'sdk',
      'build',
      '--dockerfile',
      path.join(dir, 'Dockerfile'),
      '--out',
      out,
      '--format',
      'raw',
      '--build-arg',
      'MARKER=up\nand running',
    ]);
    const result = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(r.code).toBe(1);
    expect(result.error).toEqual({
      code: 'invalid_input',
      message:
        "The image's LABEL io.kiln.expect-console contains a control character (such as a newline); the text must fit on one console line",
    });
    expect(result.stages.map((s: { name: string }) => s.name)).not.toContain('export');
  }, 900_000);
});
