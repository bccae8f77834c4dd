/** Reading tar header fields and PAX records exactly as tar-stream does (numbers, strings, raw PAX values). */

export const pad512 = (n: number) => (512 - (n % 512)) % 512;

/** tar-stream's reading of a numeric field: base-256 when the high bit is set, else octal with optional spaces/NULs. */
export function decodeNumber(buf: Buffer, offset: number, length: number): number | null {
  const v = buf.subarray(offset, offset + length);
  if (v[0]! & 0x80) {
    let positive: boolean;
    if (v[0] === 0x80) positive = true;
    else if (v[0] === 0xff) positive = false;
    else return null;
    let sum = 0;
    for (let i = 1; i < v.length; i++) sum = sum * 256 + (positive ? v[i]! : 0xff - v[i]!);
    return positive ? sum : -sum;
  }
  let o = 0;
  while (o < v.length && v[o] === 32) o++;
  let end = v.indexOf(32, o);
  if (end === -1) end = v.length;
  while (o < end && v[o] === 0) o++;
  if (end === o) return 0;
  return parseInt(v.subarray(o, end).toString(), 8);
}

export function decodeString(buf: Buffer, offset: number, length: number): string {
  let end = buf.indexOf(0, offset);
  if (end === -1 || end > offset + length) end = offset + length;
  return buf.subarray(offset, end).toString('utf8');
}

/** PAX records, values kept as raw bytes (keys are ASCII in practice; decoded like tar-stream does). */
export function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  while (buf.length) {
    let i = 0;
    while (i < buf.length && buf[i] !== 32) i++;
    const len = parseInt(buf.subarray(0, i).toString(), 10);
    if (!len) return out;
    const rec = buf.subarray(i + 1, len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) return out;
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
    buf = buf.subarray(len);
  }
  return out;
}
