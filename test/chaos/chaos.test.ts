/**
 * The crash-injection harness's short form (test/chaos/harness.ts; `make chaos` runs the full one): 16 SIGKILLs
 * over `kiln serve` (SQLite) and two `kiln web` on PostgreSQL with `kiln glue-server`, fake SDK. CHAOS_SEED
 * replays a run's choices; the seed is printed first.
 */
import { describe, expect, it } from 'vitest';
import { seedFrom } from '../helpers/prng.js';
import { details, runChaos } from './harness.js';

describe('crash injection (short form)', () => {
  it(
    'SIGKILLs of kiln serve, the webs, the glue server and SDKs: no build lost or doubled, nothing left, databases intact',
    async () => {
      const seed = seedFrom('CHAOS_SEED');
      console.log(`chaos: seed ${seed} (CHAOS_SEED=${seed} replays it)`);
      const report = await runChaos({
        seed,
        kills: Number(process.env.CHAOS_KILLS ?? 16),
        stacks: ['serve', 'pg'],
        realBuilds: 0,
        say: (l) => console.log(l),
      });
      console.log(details(report));
      console.log(report.line);
      expect(report.stacks.reduce((a, s) => a + s.kills.length, 0)).toBe(Number(process.env.CHAOS_KILLS ?? 16));
      expect(report.stacks.every((s) => s.builds > 0)).toBe(true);
      expect(report.ok, `${details(report)}\n${report.line}`).toBe(true);
      expect(report.line).toMatch(/^chaos: \d+ kills, \d+ builds, 0 lost, 0 doubled, 0 leftovers \(seed \d+\)$/);
    },
    30 * 60_000,
  );
});
