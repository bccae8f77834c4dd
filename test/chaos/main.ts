/**
 * `make chaos`: the crash-injection harness's full form. Settings: CHAOS_SEED (replay), CHAOS_KILLS (default 100),
 * CHAOS_STACKS (default serve,jenkins,pg), CHAOS_REAL_BUILDS (default 3, serve stack), CHAOS_KEEP=1 (keep the run
 * directory when something failed). The last line is the summary; the exit status is 1 when an invariant broke.
 */
import { seedFrom } from '../helpers/prng.js';
import { details, runChaos } from './harness.js';
import { STACKS, type StackName } from './stacks.js';

// Interrupted (Ctrl-C): exit through process.exit, so the parts' last-resort clean-up (parts.ts) runs.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

const seed = seedFrom('CHAOS_SEED');
const stacks = (process.env.CHAOS_STACKS ?? STACKS.join(','))
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const s of stacks)
  if (!(STACKS as readonly string[]).includes(s))
    throw new Error(`CHAOS_STACKS: unknown stack ${s} (known: ${STACKS.join(', ')})`);
const kills = Number(process.env.CHAOS_KILLS ?? 100);
const realBuilds = Number(process.env.CHAOS_REAL_BUILDS ?? 3);
const started = Date.now();
const report = await runChaos({
  seed,
  kills,
  stacks: stacks as StackName[],
  realBuilds,
  keep: process.env.CHAOS_KEEP === '1',
  say: (l) => console.log(l),
});
console.log(details(report));
console.log(
  `chaos: ${((Date.now() - started) / 60_000).toFixed(1)} min; load average ${(await import('node:os'))
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}${report.ok ? '' : `; run directory ${report.root}`}`,
);
console.log(report.line);
process.exit(report.ok ? 0 : 1);
