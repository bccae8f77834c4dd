/**
 * The builder's word expansion (buildkit `frontend/dockerfile/shell/lex.go` as vendored by Docker 20.10, which the
 * legacy builder uses): `$X`, `${X}`, `${X:-word}`, `${X:+word}`, `${X?word}`, `${X:?word}`, single and double
 * quotes, the escape token. It knows no `${X-word}`, `${X+word}`, `${X:=word}` or `${X#...}`: those are errors
 * there, so they are errors here (checked against the engine by test/dockerfile/engine-diff.test.ts).
 *
 * A variable's value may be UNKNOWN (it could come from something the policy was not told, such as a base image's
 * ENV). Expansion then says what it still knows: the text before the first unknown part.
 */

export const UNKNOWN: unique symbol = Symbol('unknown');
export type Value = string | typeof UNKNOWN;

export interface Expansion {
  /** The whole result when `known`; otherwise only the known parts. */
  text: string;
  known: boolean;
  /** The known text before the first unknown part (the whole text when known). */
  prefix: string;
}

/** Where the builder's lexer fails, with its reason (the build stops at that instruction). */
export class LexError extends Error {}

/** Where Kiln stops expanding (the builder would go on): nesting deeper than any real Dockerfile needs. */
export class LexLimit extends LexError {}
const MAX_DEPTH = 100;

type Part = string | typeof UNKNOWN;

const DIGIT = /^\p{Nd}$/u;
const LETTER = /^\p{L}$/u;
const SPECIAL_PARAMS = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);

class Scanner {
  private i = 0;
  /** `${` nesting, bounded so that a crafted word cannot exhaust the stack. */
  depth = 0;
  constructor(
    private readonly cps: string[],
    readonly escape: string,
  ) {
    // Go's text/scanner drops a byte order mark at the start of what it scans: each word is scanned on its own.
    if (cps[0] === '\uFEFF') this.i = 1;
  }
  peek(): string | undefined {
    return this.cps[this.i];
  }
  next(): string | undefined {
    const c = this.cps[this.i];
    if (c !== undefined) this.i++;
    return c;
  }
}

/** A variable's value, or undefined when it is not set (which only `?` tells apart from empty). */
export type Lookup = (name: string) => Value | undefined;

/** Expands one word as the builder's `ProcessWord` does. Throws LexError where the builder fails. */
export function expandWord(word: string, lookup: Lookup, escape = '\\'): Expansion {
  const sw = new Scanner(Array.from(word), escape);
  let parts: Part[];
  try {
    parts = processStopOn(sw, lookup, undefined);
  } catch (e) {
    if (!(e instanceof LexError)) throw e;
    const shown = JSON.stringify(word.length > 100 ? `${word.slice(0, 100)}…` : word);
    throw new (e instanceof LexLimit ? LexLimit : LexError)(`failed to process ${shown}: ${e.message}`);
  }
  let text = '';
  let prefix = '';
  let known = true;
  for (const p of parts) {
    if (p === UNKNOWN) {
      known = false;
      continue;
    }
    text += p;
    if (known) prefix += p;
  }
  return { text, known, prefix };
}

function processStopOn(sw: Scanner, lookup: Lookup, stop: string | undefined): Part[] {
  const out: Part[] = [];
  for (let ch = sw.peek(); ch !== undefined; ch = sw.peek()) {
    if (stop !== undefined && ch === stop) {
      sw.next();
      return out;
    }
    if (ch === "'") out.push(singleQuote(sw));
    else if (ch === '"') out.push(...doubleQuote(sw, lookup));
    else if (ch === '$') out.push(...dollar(sw, lookup));
    else {
      let c = sw.next()!;
      if (c === sw.escape) {
        const n = sw.next();
        // An escape token at the end of the word is dropped.
        if (n === undefined) break;
        c = n;
      }
      out.push(c);
    }
  }
  if (stop !== undefined) throw new LexError(`unexpected end of statement while looking for matching ${stop}`);
  return out;
}

function singleQuote(sw: Scanner): string {
  sw.next();
  let s = '';
  for (;;) {
    const ch = sw.next();
    if (ch === undefined) throw new LexError('unexpected end of statement while looking for matching single-quote');
    if (ch === "'") return s;
    s += ch;
  }
}

function doubleQuote(sw: Scanner, lookup: Lookup): Part[] {
  sw.next();
  const out: Part[] = [];
  for (;;) {
    const p = sw.peek();
    if (p === undefined) throw new LexError('unexpected end of statement while looking for matching double-quote');
    if (p === '"') {
      sw.next();
      return out;
    }
    if (p === '$') {
      out.push(...dollar(sw, lookup));
      continue;
    }
    let ch = sw.next()!;
    if (ch === sw.escape) {
      const n = sw.peek();
      // Only `"`, `$` and the escape token itself can be escaped inside double quotes; any other escape stays.
      if (n === undefined) continue;
      if (n === '"' || n === '$' || n === sw.escape) ch = sw.next()!;
    }
    out.push(ch);
  }
}

function dollar(sw: Scanner, lookup: Lookup): Part[] {
  sw.next();
  if (sw.peek() !== '{') {
    const name = processName(sw);
    return name === '' ? ['$'] : [lookup(name) ?? ''];
  }
  sw.next();
  const first = sw.peek();
  if (first === undefined) throw new LexError("syntax error: missing '}'");
  if (first === '{' || first === '}' || first === ':') throw new LexError('syntax error: bad substitution');
  const name = processName(sw);
  const ch = sw.next();
  if (ch === '}') return [lookup(name) ?? ''];
  if (ch !== '?' && ch !== ':') throw new LexError("missing ':' in substitution");
  const modifier = ch === '?' ? '' : sw.next();
  const word = stopOnBrace(sw, lookup);
  const v = lookup(name);
  if (v === UNKNOWN) return [UNKNOWN];
  // ${X?word} refuses an unset X, ${X:?word} an empty one too; the message is the word, or says which.
  const refuse = (what: string) => {
    const text = word.filter((p): p is string => p !== UNKNOWN).join('');
    throw new LexError(`${name}: ${text !== '' ? text : `is not allowed to be ${what}`}`);
  };
  if (ch === '?') return v === undefined ? refuse('unset') : [v];
  if (modifier === '+') return v ? word : [];
  if (modifier === '-') return v ? [v] : word;
  if (modifier === '?') return v === undefined ? refuse('unset') : v === '' ? refuse('empty') : [v];
  throw new LexError(`unsupported modifier (${modifier}) in substitution`);
}

function stopOnBrace(sw: Scanner, lookup: Lookup): Part[] {
  if (++sw.depth > MAX_DEPTH)
    throw new LexLimit(`\${...} nested more than ${MAX_DEPTH} deep, which Kiln does not check`);
  try {
    return processStopOn(sw, lookup, '}');
  } catch (e) {
    if (e instanceof LexError && !(e instanceof LexLimit) && sw.peek() === undefined)
      throw new LexError("syntax error: missing '}'");
    throw e;
  } finally {
    sw.depth--;
  }
}

function processName(sw: Scanner): string {
  let name = '';
  for (let ch = sw.peek(); ch !== undefined; ch = sw.peek()) {
    if (name === '' && DIGIT.test(ch)) {
      while (sw.peek() !== undefined && DIGIT.test(sw.peek()!)) name += sw.next();
      return name;
    }
    if (name === '' && SPECIAL_PARAMS.has(ch)) {
      sw.next();
      return ch;
    }
    if (!LETTER.test(ch) && !DIGIT.test(ch) && ch !== '_') break;
    name += sw.next();
  }
  return name;
}
