/**
 * The SSH door's command line parser (src/ssh-door/command.ts), property-tested: whatever arrives is a command of
 * the closed set or a usage error, never anything else; control characters are refused wherever they stand; quoting
 * groups words and nothing more.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DOCKERFILE_NAME_RE } from '../../src/core/validation.js';
import { MAX_COMMAND_CHARS, UsageError, parseDoorCommand, tokenize } from '../../src/ssh-door/command.js';

const name = fc.stringMatching(DOCKERFILE_NAME_RE);
const id = fc.integer({ min: 1, max: 999_999_999_999 }).map(String);
/** A word as a client may send it: bare, or quoted in either style, or part of each. */
const quoted = (w: string) =>
  fc.constantFrom(w, `'${w}'`, `"${w}"`, `${w.slice(0, 1)}'${w.slice(1)}'`, `"${w.slice(0, 2)}"${w.slice(2)}`);
const spaces = fc.constantFrom(' ', '  ', '   ');

describe('the SSH door command line', () => {
  it('parses every valid command, however its words are quoted and spaced', () => {
    const cmd = fc.oneof(
      fc.tuple(fc.constant('build'), name, fc.boolean()),
      fc.tuple(fc.constant('log'), id, fc.boolean()),
      fc.tuple(fc.constant('status'), id, fc.constant(false)),
    );
    fc.assert(
      fc.property(
        cmd.chain(([verb, arg, noFollow]) =>
          fc.tuple(quoted(verb), quoted(arg), spaces, spaces).map(([v, a, s1, s2]) => ({
            verb,
            arg,
            noFollow,
            line: `${v}${s1}${a}${noFollow ? `${s2}--no-follow` : ''}`,
          })),
        ),
        ({ verb, arg, noFollow, line }) => {
          const c = parseDoorCommand(line);
          expect(c.verb).toBe(verb);
          expect(c).toMatchObject(verb === 'build' ? { name: arg } : { id: arg });
          if (verb !== 'status') expect(c).toMatchObject({ follow: !noFollow });
        },
      ),
    );
    expect(parseDoorCommand('  list  ')).toEqual({ verb: 'list' });
    expect(parseDoorCommand('')).toEqual({ verb: 'help' });
  });

  it('answers anything with a command of the closed set or a usage error, never another failure', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 })), (line) => {
        try {
          const c = parseDoorCommand(line);
          expect(['build', 'status', 'log', 'list', 'help']).toContain(c.verb);
          if (c.verb === 'build') expect(c.name).toMatch(DOCKERFILE_NAME_RE);
        } catch (e) {
          expect(e).toBeInstanceOf(UsageError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses control characters, line separators and undecodable bytes anywhere, even inside quotes', () => {
    const bad = fc.constantFrom('\0', '\t', '\n', '\r', '\x1b', '\x7f', '\x85', '\u202e', '\u2028', '\ufffd');
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), bad, fc.string({ maxLength: 20 }), (a, c, b) => {
        expect(() => tokenize(`build '${a}${c}${b}'`)).toThrow(/control character/);
      }),
    );
    expect(() => tokenize('x'.repeat(MAX_COMMAND_CHARS + 1))).toThrow(/longer than/);
  });

  it('takes quotes as grouping only: no escapes, no expansion', () => {
    expect(tokenize(`build 'a b' "c'd" e\\f $(g) \`h\``)).toEqual(['build', 'a b', "c'd", 'e\\f', '$(g)', '`h`']);
    expect(tokenize(`a''b ''`)).toEqual(['ab', '']);
    expect(() => tokenize(`build "x`)).toThrow(/not closed/);
  });
});
