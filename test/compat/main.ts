/**
 * `make compat`: builds and boots every corpus entry (corpus.ts), one at a time, one line per entry, and last
 * `compat: P/N boot to their marker`. COMPAT_ONLY=name,name runs those entries only; COMPAT_KEEP=1 keeps the failed
 * entries' output directories (build.log, serial log). Exit 1 unless every entry booted to its marker.
 */
import os from 'node:os';
import { runCompat } from './corpus.js';

const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());

const names = process.env.COMPAT_ONLY?.split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const started = Date.now();
const run = await runCompat({
  names,
  keep: process.env.COMPAT_KEEP === '1',
  signal: ac.signal,
  say: (l) => console.log(l),
});
console.log(
  `compat: ${((Date.now() - started) / 60_000).toFixed(1)} min; load average ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
console.log(run.line);
process.exit(run.ok ? 0 : 1);
