/**
 * The builder's Dockerfile parser (buildkit `frontend/dockerfile/parser` and `instructions` as vendored by Docker
 * 20.10's legacy builder), reproduced rule for rule, because the policy must see the instructions the builder
 * will run and not the ones a reader sees: parser directives (`# escape=`), line continuations (comment and blank
 * lines inside one are dropped), keywords in any letter case, `--flag` words (byte-wise, backslash-escaped,
 * case-sensitive names), JSON (exec) form decoded up to the end of its first value, and the words of each
 * instruction before expansion. No heredocs: that builder has none.
 */

export type Escape = '\\' | '`';

export interface Node {
  /** Lower-cased as the builder does; unknown keywords are kept (the node then has an error). */
  keyword: string;
  /** The logical line (continuations joined), as the builder keeps it; ONBUILD triggers are cut from it. */
  original: string;
  /** `--name=value` words, quotes removed. */
  flags: string[];
  /** The argument words (quotes still in place: expansion removes them). For ENV/LABEL: key, value, key, value. */
  args: string[];
  json: boolean;
  /** 1-based lines in the text parsed. */
  startLine: number;
  endLine: number;
  /** The instruction an ONBUILD carries. */
  child?: Node;
  /** Why the builder refuses this instruction before running anything (it fails the whole build). */
  error?: string;
}

export interface ParsedDockerfile {
  escape: Escape;
  nodes: Node[];
  /** Directives the builder recognised, with their lines. */
  directives: { name: string; value: string; line: number }[];
  /** A refusal of the whole file (bad directive). */
  error?: { line: number; message: string };
}

/** Go's unicode.IsSpace. */
export function isSpace(c: string): boolean {
  const cp = c.codePointAt(0)!;
  if (cp <= 0xff) return cp === 0x20 || (cp >= 0x09 && cp <= 0x0d) || cp === 0x85 || cp === 0xa0;
  return (
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

function trimLeftSpace(s: string): string {
  const cps = Array.from(s);
  let i = 0;
  while (i < cps.length && isSpace(cps[i]!)) i++;
  return cps.slice(i).join('');
}

/** Go's strings.TrimSpace. */
export function trimSpace(s: string): string {
  const cps = Array.from(trimLeftSpace(s));
  let j = cps.length;
  while (j > 0 && isSpace(cps[j - 1]!)) j--;
  return cps.slice(0, j).join('');
}

/** Go's strings.ToLower (simple per-rune mapping: U+0130 becomes a plain `i`, unlike JavaScript's). */
export function goLower(s: string): string {
  let out = '';
  for (const c of s) out += c === '\u0130' ? 'i' : c.toLowerCase();
  return out;
}

const WHITESPACE = /[\t\v\f\r ]+/;
const VALID_DIRECTIVES = new Set(['escape', 'syntax']);

class ParseError extends Error {}

/** The flags each instruction accepts (anything else is `unknown flag`). */
export const INSTRUCTION_FLAGS: Readonly<Record<string, readonly string[]>> = {
  add: ['chown', 'chmod'],
  arg: [],
  cmd: [],
  copy: ['from', 'chown', 'chmod'],
  entrypoint: [],
  env: [],
  expose: [],
  from: ['platform'],
  healthcheck: ['interval', 'timeout', 'start-period', 'retries'],
  label: [],
  maintainer: [],
  onbuild: [],
  run: ['mount', 'network', 'security'],
  shell: [],
  stopsignal: [],
  user: [],
  volume: [],
  workdir: [],
};
const MULTI_FLAGS = new Set(['run:mount']);

type LineParser = (rest: string, escape: Escape) => { args: string[]; json: boolean };

const LINE_PARSERS: Record<string, LineParser> = {
  add: maybeJsonToList,
  arg: nameOrNameVal,
  cmd: maybeJson,
  copy: maybeJsonToList,
  entrypoint: maybeJson,
  env: (r, e) => nameVal(r, 'ENV', e),
  expose: whitespaceDelimited,
  from: whitespaceDelimited,
  healthcheck: healthConfig,
  label: (r, e) => nameVal(r, 'LABEL', e),
  maintainer: str,
  run: maybeJson,
  shell: maybeJson,
  stopsignal: str,
  user: str,
  volume: maybeJsonToList,
  workdir: str,
};

/** Parses a Dockerfile (or an ONBUILD trigger, which the builder parses on its own with the default escape). */
export function parseDockerfile(text: string): ParsedDockerfile {
  let escape: Escape = '\\';
  let continuation = continuationRegex(escape);
  const directives: ParsedDockerfile['directives'] = [];
  const seen = new Set<string>();
  let directivesDone = false;
  const nodes: Node[] = [];

  // Lines end at \n only; trailing \r and \n are trimmed from each (bufio with line endings kept, then TrimRight).
  const raw = text.split('\n');
  if (raw.length && raw[raw.length - 1] === '') raw.pop();
  if (raw.length && raw[0]!.startsWith('\uFEFF')) raw[0] = raw[0]!.slice(1);
  const trimNewline = (s: string) => {
    let end = s.length;
    while (end > 0 && (s[end - 1] === '\r' || s[end - 1] === '\n')) end--;
    return s.slice(0, end);
  };
  const isComment = (s: string) => trimLeftSpace(trimNewline(s)).startsWith('#');

  // possibleParserDirective: only before anything else; an unknown key, a plain comment or any other line ends them.
  const directive = (token: string, line: number): void => {
    if (directivesDone) return;
    const m = directiveOf(token);
    if (!m || !VALID_DIRECTIVES.has(m.name)) {
      directivesDone = true;
      return;
    }
    if (seen.has(m.name)) throw new ParseError(`only one ${m.name} parser directive can be used`);
    seen.add(m.name);
    directives.push({ ...m, line });
    if (m.name === 'escape') {
      if (m.value !== '`' && m.value !== '\\')
        throw new ParseError(`invalid escape token '${m.value}' does not match \` or \\`);
      escape = m.value;
      continuation = continuationRegex(escape);
    }
  };
  const processLine = (s: string, stripLeft: boolean, line: number): string => {
    let token = trimNewline(s);
    if (stripLeft) token = trimLeftSpace(token);
    directive(token, line);
    return token.startsWith('#') ? '' : token;
  };
  const trimContinuation = (s: string): [string, boolean] =>
    continuation.test(s) ? [s.replace(continuation, '$1'), false] : [s, true];

  let current = 0;
  try {
    while (current < raw.length) {
      const startLine = current + 1;
      const first = processLine(raw[current]!, true, startLine);
      current++;
      let [line, endOfLine] = trimContinuation(first);
      if (endOfLine && line === '') continue;
      while (!endOfLine && current < raw.length) {
        const r = raw[current]!;
        const token = processLine(r, false, current + 1);
        current++;
        if (isComment(r)) continue;
        if (trimLeftSpace(trimNewline(token)) === '') continue;
        let part: string;
        [part, endOfLine] = trimContinuation(token);
        line += part;
      }
      nodes.push(nodeFromLine(line, escape, startLine, current));
    }
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
    return { escape, nodes, directives, error: { line: current + 1, message: e.message } };
  }
  return { escape, nodes, directives };
}

/**
 * `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go's \s: tab, newline, form feed, carriage return, space), read
 * without a regular expression: a lazy group before `\s*$` backtracks quadratically on a long line of spaces.
 */
function directiveOf(token: string): { name: string; value: string } | undefined {
  const sp = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\f' || c === '\r';
  if (!token.startsWith('#')) return undefined;
  let i = 1;
  while (sp(token[i])) i++;
  const key = /^[a-zA-Z][a-zA-Z0-9]*/.exec(token.slice(i))?.[0];
  if (!key) return undefined;
  i += key.length;
  while (sp(token[i])) i++;
  if (token[i] !== '=') return undefined;
  const afterEquals = ++i;
  while (sp(token[i])) i++;
  let end = token.length;
  while (end > i && sp(token[end - 1])) end--;
  if (end > i) return { name: key.toLowerCase(), value: token.slice(i, end) };
  // Only spaces after `=`: the regular expression's `(.+?)` still takes the last of them.
  return token.length > afterEquals ? { name: key.toLowerCase(), value: token[token.length - 1]! } : undefined;
}

function continuationRegex(e: Escape): RegExp {
  const q = e === '\\' ? '\\\\' : '`';
  return new RegExp(`([^${q}])${q}[ \\t]*$|^${q}[ \\t]*$`);
}

function nodeFromLine(line: string, escape: Escape, startLine: number, endLine: number): Node {
  const [node, rest] = splitCommand(line, startLine, endLine);
  try {
    lineArgs(node, rest, escape);
    node.error = instructionError(node);
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
    node.error = e.message;
  }
  return node;
}

/** Keyword, flags and the rest of the line (builder splitCommand). */
function splitCommand(line: string, startLine: number, endLine: number): [Node, string] {
  const trimmed = trimSpace(line);
  const m = WHITESPACE.exec(trimmed);
  const keyword = goLower(m ? trimmed.slice(0, m.index) : trimmed);
  let rest = '';
  let flags: string[] = [];
  if (m) [rest, flags] = extractFlags(trimmed.slice(m.index + m[0].length));
  return [{ keyword, original: line, flags, args: [], json: false, startLine, endLine }, trimSpace(rest)];
}

/**
 * The argument words, by the keyword's line parser. An ONBUILD's instruction goes through its own line parser
 * when the ONBUILD is parsed (so its errors refuse the file), but is checked as an instruction only when it fires.
 */
function lineArgs(node: Node, rest: string, escape: Escape): void {
  if (node.keyword === 'onbuild') {
    if (rest === '') return;
    const [child, childRest] = splitCommand(rest, node.startLine, node.endLine);
    // ONBUILD ONBUILD is refused anyway; going no deeper keeps `ONBUILD ONBUILD ...` off the stack.
    if (child.keyword !== 'onbuild') lineArgs(child, childRest, escape);
    node.child = child;
    node.args = [child.keyword, ...child.args];
    return;
  }
  const parser = LINE_PARSERS[node.keyword];
  if (parser) ({ args: node.args, json: node.json } = parser(rest, escape));
}

/**
 * The `--flag` words before the arguments. The builder walks bytes, not characters: a UTF-8 byte 0x85 or 0xA0
 * counts as a space and each byte becomes one Latin-1 character, so a non-ASCII flag value never names a stage.
 */
function extractFlags(line: string): [string, string[]] {
  const b = Buffer.from(line, 'utf8');
  const words: string[] = [];
  const isSp = (c: number) => c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0x85 || c === 0xa0;
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word: number[] = [];
  let quote = 0;
  let blankOK = false;
  const text = (bs: number[]) => Buffer.from(bs).toString('latin1');
  for (let pos = 0; pos <= b.length; pos++) {
    let ch = pos < b.length ? b[pos]! : 0;
    if (phase === 'spaces') {
      if (pos === b.length) break;
      if (isSp(ch)) continue;
      if (ch !== 0x2d || pos + 1 === b.length || b[pos + 1] !== 0x2d) return [b.subarray(pos).toString('utf8'), words];
      phase = 'word';
    }
    if (pos === b.length) {
      if (text(word) !== '--' && (blankOK || word.length > 0)) words.push(text(word));
      break;
    }
    if (phase === 'word') {
      if (isSp(ch)) {
        phase = 'spaces';
        if (text(word) === '--') return [b.subarray(pos).toString('utf8'), words];
        if (blankOK || word.length > 0) words.push(text(word));
        word = [];
        blankOK = false;
        continue;
      }
      if (ch === 0x27 || ch === 0x22) {
        quote = ch;
        blankOK = true;
        phase = 'quote';
        continue;
      }
      if (ch === 0x5c) {
        if (pos + 1 === b.length) continue;
        ch = b[++pos]!;
      }
      word.push(ch);
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === 0x5c) {
      if (pos + 1 === b.length) {
        phase = 'word';
        continue;
      }
      ch = b[++pos]!;
    }
    word.push(ch);
  }
  return ['', words];
}

/** Space- or quote-delimited words, quotes and escapes kept (ENV, LABEL, ARG). */
function parseWords(rest: string, escape: Escape): string[] {
  const cps = Array.from(rest);
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= cps.length; pos++) {
    let ch = cps[pos] ?? '';
    if (phase === 'spaces') {
      if (pos === cps.length) break;
      if (isSpace(ch)) continue;
      phase = 'word';
    }
    if (pos === cps.length) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (isSpace(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === cps.length) continue;
        word += ch;
        ch = cps[++pos]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === cps.length) {
        phase = 'word';
        continue;
      }
      word += ch;
      ch = cps[++pos]!;
    }
    word += ch;
  }
  return words;
}

function nameVal(rest: string, key: string, escape: Escape): { args: string[]; json: boolean } {
  const words = parseWords(rest, escape);
  if (!words.length) return { args: [], json: false };
  if (!words[0]!.includes('=')) {
    // The old form: KEY name value (the value is the rest of the line, verbatim).
    const m = WHITESPACE.exec(rest);
    if (!m) throw new ParseError(`${key} must have two arguments`);
    return { args: [rest.slice(0, m.index), rest.slice(m.index + m[0].length)], json: false };
  }
  const args: string[] = [];
  for (const w of words) {
    const i = w.indexOf('=');
    if (i < 0)
      throw new ParseError(`Syntax error - can't find = in ${JSON.stringify(w)}. Must be of the form: name=value`);
    args.push(w.slice(0, i), w.slice(i + 1));
  }
  return { args, json: false };
}

function nameOrNameVal(rest: string, escape: Escape): { args: string[]; json: boolean } {
  return { args: parseWords(rest, escape), json: false };
}

function whitespaceDelimited(rest: string): { args: string[]; json: boolean } {
  return { args: rest === '' ? [] : rest.split(WHITESPACE), json: false };
}

function str(rest: string): { args: string[]; json: boolean } {
  return { args: rest === '' ? [] : [rest], json: false };
}

/** The first JSON value of `rest` when it is an array (Go's json.Decoder ignores what follows it). */
function parseJson(rest: string): string[] | undefined {
  const s = trimLeftSpace(rest);
  if (!s.startsWith('[')) return undefined;
  let depth = 0;
  let inString = false;
  let end = -1;
  for (let i = 0; i < s.length && end < 0; i++) {
    const c = s[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') {
      depth--;
      if (depth === 0) end = i + 1;
    }
  }
  if (end < 0) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(s.slice(0, end));
  } catch {
    return undefined;
  }
  if (!Array.isArray(value)) return undefined;
  if (value.some((v) => typeof v !== 'string'))
    throw new ParseError('when using JSON array syntax, arrays must be comprised of strings only');
  return value as string[];
}

function maybeJson(rest: string): { args: string[]; json: boolean } {
  if (rest === '') return { args: [], json: false };
  const j = parseJson(rest);
  return j ? { args: j, json: true } : { args: [rest], json: false };
}

function maybeJsonToList(rest: string): { args: string[]; json: boolean } {
  const j = parseJson(rest);
  return j ? { args: j, json: true } : whitespaceDelimited(rest);
}

function healthConfig(rest: string): { args: string[]; json: boolean } {
  const m = /^(\S*)\s*(.*)$/s.exec(rest)!;
  if (m[1] === '') return { args: [], json: false };
  const cmd = maybeJson(m[2]!);
  return { args: [m[1]!, ...cmd.args], json: cmd.json };
}

/** Flag values by name, or the builder's complaint (unknown, duplicate or valueless flags). */
export function parseFlags(node: Pick<Node, 'keyword' | 'flags'>): { values: Map<string, string[]>; error?: string } {
  const known = INSTRUCTION_FLAGS[node.keyword] ?? [];
  const values = new Map<string, string[]>();
  for (const f of node.flags) {
    if (!f.startsWith('--')) return { values, error: `arg should start with -- : ${f}` };
    if (f === '--') break;
    const body = f.slice(2);
    const i = body.indexOf('=');
    const name = i >= 0 ? body.slice(0, i) : body;
    if (!known.includes(name)) return { values, error: `unknown flag: ${name}` };
    if (values.has(name) && !MULTI_FLAGS.has(`${node.keyword}:${name}`))
      return { values, error: `duplicate flag specified: ${name}` };
    if (i < 0) return { values, error: `missing a value on flag: ${name}` };
    values.set(name, [...(values.get(name) ?? []), body.slice(i + 1)]);
  }
  return { values };
}

const STAGE_NAME = /^[a-z][a-z0-9\-_.]*$/;

/** `AS` compared as Go's strings.EqualFold does (ſ folds to s). */
const isAs = (w: string) => /^[aA][sSſ]$/.test(w);

/** The stage name of a FROM (lower-cased), or the builder's complaint. */
export function stageName(args: readonly string[]): { name?: string; error?: string } {
  if (args.length === 3 && isAs(args[1]!)) {
    const name = goLower(args[2]!);
    if (!STAGE_NAME.test(name))
      return {
        error: `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`,
      };
    return { name };
  }
  if (args.length !== 1) return { error: 'FROM requires either one or three arguments' };
  return {};
}

/** What instructions.ParseInstruction refuses before anything runs. */
function instructionError(n: Node): string | undefined {
  const kw = n.keyword;
  if (!(kw in INSTRUCTION_FLAGS)) return `unknown instruction: ${kw.toUpperCase()}`;
  const flagError = parseFlags(n).error;
  if (flagError) return flagError;
  const count = n.args.length;
  switch (kw) {
    case 'from':
      return stageName(n.args).error;
    case 'add':
    case 'copy':
      return count < 2
        ? `${kw.toUpperCase()} requires at least two arguments, but only one was provided. Destination could not be determined.`
        : undefined;
    case 'workdir':
      return count !== 1 ? 'WORKDIR requires exactly one argument' : undefined;
    case 'env':
    case 'label':
    case 'arg':
      if (count === 0) return `${kw.toUpperCase()} requires at least one argument`;
      for (let i = 0; i < count; i += kw === 'arg' ? 1 : 2) {
        const key = kw === 'arg' ? n.args[i]!.split('=')[0]! : n.args[i]!;
        if (key === '') return `${kw.toUpperCase()} names can not be blank`;
      }
      return undefined;
    case 'onbuild': {
      if (!n.child) return 'ONBUILD requires at least one argument';
      const trigger = n.child.keyword.toUpperCase();
      if (trigger === 'ONBUILD') return "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";
      if (trigger === 'MAINTAINER' || trigger === 'FROM') return `${trigger} isn't allowed as an ONBUILD trigger`;
      return undefined;
    }
    default:
      return undefined;
  }
}

/** The text an ONBUILD stores as its trigger: the logical line without its leading keyword. */
export function triggerText(n: Node): string {
  return n.original.replace(/^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*/i, '');
}
