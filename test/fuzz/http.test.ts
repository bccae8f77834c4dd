/**
 * The HTTP fuzzer's short form (test/fuzz/http-fuzz.ts): a few thousand seeded cases over every route as
 * anonymous, user and admin. The seed is printed; FUZZ_SEED replays a run, FUZZ_CASES makes it longer
 * (`make chaos` runs a long one).
 */
import { describe, expect, it } from 'vitest';
import { seedFrom } from '../helpers/prng.js';
import { startTestWeb } from '../helpers/web.js';
import { runHttpFuzz, summary } from './http-fuzz.js';
import { sendRaw } from './raw-http.js';

describe('HTTP fuzzer over every route (anonymous, user, admin)', () => {
  it('a request target that is not a path (`OPTIONS *`, absolute form) is a 400, not a 500 (found by the fuzzer)', async () => {
    // express-session skips a URL outside its cookie path "/", and passport then threw "Login sessions require
    // session support": a 500 with a stack in the log for one line of anyone's HTTP.
    const w = await startTestWeb();
    try {
      const port = Number(new URL(w.url).port);
      const send = (method: string, target: string) =>
        sendRaw(port, { method, target, headers: [['Host', `127.0.0.1:${port}`]], framing: 'none' });
      for (const [method, target] of [
        ['OPTIONS', '*'],
        ['PATCH', '*'],
        ['GET', 'login'],
        ['GET', `http://127.0.0.1:${port}/api/me`],
      ]) {
        expect((await send(method!, target!)).status, `${method} ${target}`).toBe(400);
      }
      expect((await send('GET', '/login')).status).toBe(200);
    } finally {
      await w.close();
    }
  });

  it(
    'no answer of 500 or above, no crash, health answers throughout',
    async () => {
      const seed = seedFrom('FUZZ_SEED');
      const cases = Number(process.env.FUZZ_CASES ?? 2000);
      console.log(`fuzz: seed ${seed} (FUZZ_SEED=${seed} replays it)`);
      const r = await runHttpFuzz({ seed, cases, progress: (l) => console.log(l) });
      console.log(summary(r));
      for (const f of r.fiveXX.slice(0, 10))
        console.log(`5xx case seed ${f.caseSeed}: ${f.status} ${f.request}\n${f.body}\n${f.logs.join('\n')}`);
      expect(r.cases).toBe(cases);
      expect(r.routes).toBeGreaterThan(20);
      // Most requests must get past the front door, or the fuzzer only tests the 404 page and the CSRF check.
      expect(
        Object.entries(r.statuses)
          .filter(([s]) => s.startsWith('2') || s.startsWith('3'))
          .reduce((a, [, n]) => a + n, 0),
      ).toBeGreaterThan(cases / 10);
      expect(r.fiveXX.map((f) => `${f.status} ${f.request}`)).toEqual([]);
      expect(r.crashes).toEqual([]);
      expect(r.unhealthy).toEqual([]);
      expect(r.unanswered).toEqual([]);
    },
    20 * 60_000,
  );
});
