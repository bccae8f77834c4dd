/**
 * The SSH door's command line: what the client sent as its `exec` request, parsed without a shell. A small strict
 * tokenizer (words separated by spaces; '...' and "..." group characters, with no escapes and no expansion of any
 * kind), then a closed set of commands with fixed arguments. Nothing here reaches a shell, a path or the database.
 */
import { CONTROL_CHARS, parseDockerfileName } from '../core/index.js';

/** Longest command line accepted, in characters. */
export const MAX_COMMAND_CHARS = 1024;

export type DoorCommand =
  | { verb: 'build'; name: string; follow: boolean }
  | { verb: 'status'; id: string }
  | { verb: 'log'; id: string; follow: boolean }
  | { verb: 'list' }
  | { verb: 'help' };

/** A command line Kiln does not take; `message` is said to the user, with the usage. */
export class UsageError extends Error {}

/** Also refused: line and paragraph separators, and U+FFFD (bytes that were not UTF-8). */
const REFUSED_CHARS = new RegExp(`${CONTROL_CHARS.source}|[\\u2028\\u2029\\ufffd]`);

/** Splits a command line into words. Throws UsageError on control characters, an unclosed quote or a long line. */
export function tokenize(line: string): string[] {
  if (line.length > MAX_COMMAND_CHARS)
    throw new UsageError(`The command is longer than ${MAX_COMMAND_CHARS} characters.`);
  if (REFUSED_CHARS.test(line)) throw new UsageError('The command holds a control character; nothing was run.');
  const words: string[] = [];
  let word: string | undefined;
  let quote: '"' | "'" | undefined;
  for (const c of line) {
    if (quote) {
      if (c === quote) quote = undefined;
      else word += c;
    } else if (c === ' ') {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= '';
    } else {
      word = (word ?? '') + c;
    }
  }
  if (quote) throw new UsageError(`A ${quote} quote is not closed; nothing was run.`);
  if (word !== undefined) words.push(word);
  return words;
}

const ID = /^[1-9][0-9]{0,11}$/;

function buildId(word: string | undefined): string {
  if (word === undefined) throw new UsageError('Which build? Give its number.');
  if (!ID.test(word)) throw new UsageError(`"${word.slice(0, 40)}" is not a build number.`);
  return word;
}

/** `--no-follow` may stand anywhere after the command; any other option is refused. */
function options(words: string[], allowed: readonly string[]): { args: string[]; flags: Set<string> } {
  const args: string[] = [];
  const flags = new Set<string>();
  for (const w of words) {
    if (!w.startsWith('-')) args.push(w);
    else if (allowed.includes(w)) flags.add(w);
    else throw new UsageError(`Unknown option "${w.slice(0, 40)}".`);
  }
  return { args, flags };
}

function arity(verb: string, args: string[], n: number): void {
  if (args.length > n) throw new UsageError(`${verb} takes ${n === 0 ? 'no' : n} argument${n === 1 ? '' : 's'}.`);
}

/** The command a line asks for. An empty line (`ssh HOST` with no command, a shell request) is `help`. */
export function parseDoorCommand(line: string): DoorCommand {
  const [verb, ...rest] = tokenize(line);
  switch (verb) {
    case undefined:
    case 'help':
      return { verb: 'help' };
    case 'list':
      arity(verb, options(rest, []).args, 0);
      return { verb };
    case 'status': {
      const { args } = options(rest, []);
      arity(verb, args, 1);
      return { verb, id: buildId(args[0]) };
    }
    case 'log': {
      const { args, flags } = options(rest, ['--no-follow']);
      arity(verb, args, 1);
      return { verb, id: buildId(args[0]), follow: !flags.has('--no-follow') };
    }
    case 'build': {
      const { args, flags } = options(rest, ['--no-follow']);
      arity(verb, args, 1);
      if (args[0] === undefined) throw new UsageError('Which Dockerfile? Give its name.');
      let name: string;
      try {
        name = parseDockerfileName(args[0]);
      } catch (e) {
        throw new UsageError(`"${args[0].slice(0, 70)}": ${(e as Error).message}`);
      }
      return { verb, name, follow: !flags.has('--no-follow') };
    }
    default:
      throw new UsageError(`Kiln has no command "${verb.slice(0, 40)}".`);
  }
}
