import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

/**
 * The `SHA256SUMS` format (`sha256  name` lines, as `sha256sum -c` reads them). The SDK writes one as the builder's
 * claim; the web writes its own from what it hashed itself, and signs that one.
 */
export interface SumEntry {
  sha256: string;
  name: string;
}

/** Lines sorted by name, one per entry, newline-terminated. */
export function formatSha256Sums(entries: readonly SumEntry[]): string {
  return [...entries]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((e) => `${e.sha256}  ${e.name}\n`)
    .join('');
}

/** Parses SHA256SUMS text; a path, a backslash, a NUL, a malformed line or a name listed twice is refused. */
export function parseSha256Sums(text: string): SumEntry[] {
  const out: SumEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^([0-9a-f]{64}) [ *]([^/\\\0]+)$/.exec(line);
    if (!m) throw new Error(`malformed SHA256SUMS line: ${JSON.stringify(line.slice(0, 100))}`);
    if (out.some((e) => e.name === m[2]))
      throw new Error(`SHA256SUMS lists ${JSON.stringify(m[2]!.slice(0, 100))} twice`);
    out.push({ sha256: m[1]!, name: m[2]! });
  }
  return out;
}

/** Reads a stream to its end, hashing it; keeps at most `keepBytes` of it (for small documents read on the way). */
export async function hashStream(
  stream: Readable,
  keepBytes = 0,
): Promise<{ sha256: string; size: number; head: Buffer }> {
  const h = createHash('sha256');
  const kept: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const c = chunk as Buffer;
    h.update(c);
    if (size < keepBytes) kept.push(c.subarray(0, keepBytes - size));
    size += c.length;
  }
  return { sha256: h.digest('hex'), size, head: Buffer.concat(kept) };
}
