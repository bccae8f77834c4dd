/**
 * The build log as a person reads it. The raw log (the glue's `build.log`) interleaves the build's own output, the
 * builder's `[kiln]` lines and the SDK's machine lines (`##kiln {...}`, src/protocol/sdk-output.ts). People see the
 * first two; machine lines become progress events. Everything in the log is attacker-written text.
 *
 * ANSI colours: `lineHtml` escapes the text for HTML first, then maps SGR sequences (colour, bold, ...) onto a
 * fixed set of class names and drops every other escape and control character. The result holds no markup but
 * `<span class="ansi-...">` and `</span>`, so the page may insert it as HTML (no inline style: the CSP forbids it).
 */
import { Buffer } from 'node:buffer';
import { PROGRESS_PREFIX, parseProgressLine, type ProgressEvent } from '../../protocol/sdk-output.js';
import type { LogChunk } from '../../protocol/index.js';

/** A line longer than this with no newline yet is shown in pieces instead of waited for. */
export const LONG_LINE_BYTES = 64 * 1024;

export const isMachineLine = (line: string): boolean => line.startsWith(PROGRESS_PREFIX);

/** A chunk cut at its last complete line: what may be shown now, and the byte offset just after it. */
export interface LineCut {
  lines: string[];
  start: number;
  next: number;
}

/**
 * The complete lines of a chunk read at `chunk.offset`. A trailing partial line is left for the next read (same
 * offset, so every reader shares the next chunk), unless the log has ended or the piece is too long to wait for.
 */
export function completeLines(chunk: LogChunk): LineCut {
  let text = chunk.text;
  const nl = text.lastIndexOf('\n');
  const ended = !chunk.more;
  if (nl < 0 && !ended && Buffer.byteLength(text) < LONG_LINE_BYTES)
    return { lines: [], start: chunk.offset, next: chunk.offset };
  if (
    nl >= 0 &&
    !ended &&
    nl < text.length - 1 &&
    Buffer.byteLength(text) - Buffer.byteLength(text.slice(0, nl + 1)) < LONG_LINE_BYTES
  )
    text = text.slice(0, nl + 1);
  const next = chunk.offset + Buffer.byteLength(text);
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return { lines: lines.map((l) => l.replace(/\r$/, '')), start: chunk.offset, next };
}

/** Human lines and the progress events among some raw lines. */
export function splitMachineLines(lines: readonly string[]): { human: string[]; progress: ProgressEvent[] } {
  const human: string[] = [];
  const progress: ProgressEvent[] = [];
  for (const l of lines) {
    if (!isMachineLine(l)) {
      human.push(l);
      continue;
    }
    const ev = parseProgressLine(l);
    if (ev) progress.push(ev);
  }
  return { human, progress };
}

const ESCAPES =
  // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
  /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[([0-9;:?]*)([ -/]*[@-~])?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g;
const HTML: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHtml = (t: string): string => t.replace(/[&<>"']/g, (c) => HTML[c]!);

/** SGR state: foreground/background as an index 0-15, and the attributes that have a class. */
export interface AnsiState {
  fg?: number;
  bg?: number;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
}

function applySgr(s: AnsiState, params: string): AnsiState {
  const n = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  let out: AnsiState = { ...s };
  for (let i = 0; i < n.length; i++) {
    const c = n[i]!;
    if (c === 0) out = {};
    else if (c === 1) out.bold = true;
    else if (c === 2) out.dim = true;
    else if (c === 3) out.italic = true;
    else if (c === 4) out.underline = true;
    else if (c === 22) {
      delete out.bold;
      delete out.dim;
    } else if (c === 23) delete out.italic;
    else if (c === 24) delete out.underline;
    else if (c >= 30 && c <= 37) out.fg = c - 30;
    else if (c >= 90 && c <= 97) out.fg = c - 90 + 8;
    else if (c === 39) delete out.fg;
    else if (c >= 40 && c <= 47) out.bg = c - 40;
    else if (c >= 100 && c <= 107) out.bg = c - 100 + 8;
    else if (c === 49) delete out.bg;
    else if (c === 38 || c === 48) {
      // 256-colour (5;n) and true-colour (2;r;g;b): the first 16 of 256 map to classes, the rest are skipped.
      const mode = n[i + 1];
      if (mode === 5) {
        const v = n[i + 2];
        if (v !== undefined && v >= 0 && v < 16) out[c === 38 ? 'fg' : 'bg'] = v;
        i += 2;
      } else if (mode === 2) i += 4;
    }
  }
  return out;
}

function classes(s: AnsiState): string {
  const c: string[] = [];
  if (s.fg !== undefined) c.push(`ansi-fg-${s.fg}`);
  if (s.bg !== undefined) c.push(`ansi-bg-${s.bg}`);
  if (s.bold) c.push('ansi-bold');
  if (s.dim) c.push('ansi-dim');
  if (s.italic) c.push('ansi-italic');
  if (s.underline) c.push('ansi-underline');
  return c.join(' ');
}

/**
 * One log line as safe HTML, from the SGR state the previous line left (`state`, updated in place for the next
 * line). Escaping comes first: no character of the line reaches the output unescaped, and escape sequences hold
 * none of `&<>"'` that matter after it (an OSC's text, a hyperlink's target say, is dropped whole).
 */
export function lineHtml(line: string, state: { sgr: AnsiState } = { sgr: {} }): string {
  const escaped = escapeHtml(line);
  let out = '';
  let open = classes(state.sgr);
  let inSpan = false;
  // Spans open only around text: a colour set and reset with nothing between leaves no empty element.
  const text = (t: string) => {
    if (!t) return;
    if (open && !inSpan) {
      out += `<span class="${open}">`;
      inSpan = true;
    }
    out += t;
  };
  let last = 0;
  for (const m of escaped.matchAll(ESCAPES)) {
    text(escaped.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[2] !== 'm' || !m[0].startsWith('\x1b[')) continue;
    state.sgr = applySgr(state.sgr, m[1] ?? '');
    const next = classes(state.sgr);
    if (next === open) continue;
    if (inSpan) {
      out += '</span>';
      inSpan = false;
    }
    open = next;
  }
  text(escaped.slice(last));
  if (inSpan) out += '</span>';
  return out;
}

/** A line's text without escapes and control characters (the JSON API's log, summaries). */
export const plainLine = (line: string): string => line.replace(ESCAPES, '');
