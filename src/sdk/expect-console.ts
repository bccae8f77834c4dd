import { KilnError } from '../shared/errors.js';

/**
 * Console text a boot test must see before it passes: the program's own "I am up" line. A login prompt and a started
 * unit show that the machine booted and that the app was launched, not that the program did its work; a tester who
 * knows what the program prints once it serves can ask for that text. Two ways to ask, both checked on every boot:
 * `kiln sdk build --expect-console TEXT` (repeatable; whoever runs the build) and the image's LABEL
 * `io.kiln.expect-console` (the Dockerfile's author; also reaches builds started from the web, which passes no
 * options). The text is matched literally, anywhere on the serial console (colours stripped).
 */
export const EXPECT_CONSOLE_LABEL = 'io.kiln.expect-console';
export const EXPECT_CONSOLE_OPTION = '--expect-console';
export const MAX_EXPECT_TEXT_CHARS = 256;
export const MAX_EXPECT_TEXTS = 16;

export interface ConsoleExpectation {
  text: string;
  /** Who asked for it, named in a failure's reason: `--expect-console` or `LABEL io.kiln.expect-console`. */
  source: string;
}

// Console lines are text: a control character (a newline among them) could never be matched as the user means it.
// eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function checkText(text: string, source: string): void {
  const where = source === EXPECT_CONSOLE_OPTION ? source : `The image's ${source}`;
  if (!text.trim()) throw new KilnError('invalid_input', `${where} must not be empty or blank`);
  if ([...text].length > MAX_EXPECT_TEXT_CHARS)
    throw new KilnError('invalid_input', `${where} is longer than ${MAX_EXPECT_TEXT_CHARS} characters`);
  if (CONTROL.test(text))
    throw new KilnError(
      'invalid_input',
      `${where} contains a control character (such as a newline); the text must fit on one console line`,
    );
}

/**
 * What the boot tests must see: the command line's texts, then the label's. An empty label means none (a stage built
 * on an earlier one inherits its labels, and a label cannot be removed, only overwritten). Refuses bad text with
 * `invalid_input` naming where it came from; duplicates are kept once.
 */
export function consoleExpectations(
  cli: readonly string[] = [],
  labels?: Record<string, string> | null,
): ConsoleExpectation[] {
  const out: ConsoleExpectation[] = [];
  const add = (text: string, source: string) => {
    checkText(text, source);
    if (!out.some((e) => e.text === text)) out.push({ text, source });
  };
  for (const t of cli) add(t, EXPECT_CONSOLE_OPTION);
  const label = labels?.[EXPECT_CONSOLE_LABEL];
  if (label !== undefined && label !== '') add(label, `LABEL ${EXPECT_CONSOLE_LABEL}`);
  if (out.length > MAX_EXPECT_TEXTS)
    throw new KilnError(
      'invalid_input',
      `At most ${MAX_EXPECT_TEXTS} console texts can be expected (${out.length} given)`,
    );
  return out;
}

/** The expectations the console (colours stripped) has not shown yet. */
export function missingTexts(clean: string, expected: readonly ConsoleExpectation[] = []): ConsoleExpectation[] {
  return expected.filter((e) => !clean.includes(e.text));
}

/**
 * The console line that comes closest to an expected text: the last one holding the longest leading part of it (at
 * least 12 characters), with that length. A program that printed its line with one value wrong shows up here.
 */
export function closestLine(clean: string, text: string): { line: string; matched: number } | undefined {
  // A leading part found on the console means every shorter one is too: binary search for the longest.
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (clean.includes(text.slice(0, mid))) lo = mid;
    else hi = mid - 1;
  }
  if (lo < Math.min(12, text.length)) return undefined;
  const line = clean
    .split(/\r?\n/)
    .filter((l) => l.includes(text.slice(0, lo)))
    .at(-1);
  return line === undefined ? undefined : { line: line.trim().slice(0, 400), matched: lo };
}

/**
 * Why a boot test failed on missing text, in the boot diagnosis's style: what the console lacks and who asked for
 * it, the evidence (for each text the closest console line, else the last line the application's service left
 * there: Kiln's unit and sysvinit runner are named kiln-app), and what to change.
 */
export function explainMissingTexts(clean: string, missing: readonly ConsoleExpectation[]): string {
  const what = `the console never showed ${missing.map((e) => `"${e.text}" (asked for by ${e.source})`).join(', ')}`;
  const near = missing.map((e) => ({ e, c: closestLine(clean, e.text) })).filter((x) => x.c);
  let evidence = near
    .map(
      ({ e, c }) =>
        `; the closest console line, same as "${e.text.slice(0, 40)}${e.text.length > 40 ? '...' : ''}" for its first ${c!.matched} characters: "${c!.line}"`,
    )
    .join('');
  if (!evidence) {
    const appLine = clean
      .split(/\r?\n/)
      .filter((l) => /kiln-app/.test(l))
      .at(-1)
      ?.trim()
      .slice(0, 300);
    if (appLine) evidence = `; the application service's last console line: "${appLine}"`;
  }
  return `${what}${evidence}. Fix: the program must print it on its stdout or stderr (Kiln sends both to the console) once it is up; the serial log shows what it printed instead`;
}
