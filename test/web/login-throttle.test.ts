import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LOGIN_LIMITS } from '../../src/core/deps.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';
import { freshDb, type TestDb } from '../db/engines.js';

const PW = 'correct horse battery staple';
const WRONG = 'not the password at all';
const L = DEFAULT_LOGIN_LIMITS;

/**
 * One login over the JSON API from address `ip` (the app trusts one proxy hop, so X-Forwarded-For is the client's
 * address). A fresh CSRF token each time: a successful login starts a new session.
 */
async function login(c: HttpClient, username: string, password: string, ip: string): Promise<Response> {
  const t = await c.apiToken();
  return c.postJson('/api/login', { username, password }, { 'x-csrf-token': t, 'x-forwarded-for': ip });
}

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`login throttle (${engine})`, () => {
    let pg: TestDb | undefined;
    let w: TestWeb;
    let now = Date.parse('2030-01-01T00:00:00Z');
    const advance = (ms: number): void => {
      now += ms;
    };
    beforeAll(async () => {
      pg = engine === 'pg' ? await freshDb('pg') : undefined;
      w = await startTestWeb({
        db: pg?.db,
        config: { web: { trustProxyHops: 1 } },
        // Only the per-IP limiter (express-rate-limit, its own clock) is opened up: the account throttle is the default.
        limits: { ipAttempts: 1_000_000 },
        clock: () => now,
      });
      for (const u of ['victim', 'owner', 'admin1']) {
        const r = await w.client().register(u, PW);
        expect(r.status).toBe(201);
      }
    });
    afterAll(async () => {
      await w?.close();
      await pg?.drop();
    });

    it(`finding 4: 250 concurrent wrong guesses from one client get exactly ${L.clientFreeFailures} password checks, the rest 429`, async () => {
      const c = w.client();
      const t = await c.apiToken();
      const rs = await Promise.all(
        Array.from({ length: 250 }, () =>
          c.postJson(
            '/api/login',
            { username: 'victim', password: WRONG },
            { 'x-csrf-token': t, 'x-forwarded-for': '198.51.100.7' },
          ),
        ),
      );
      const statuses = rs.map((r) => r.status);
      expect(statuses.filter((s) => s === 401).length).toBe(L.clientFreeFailures);
      expect(statuses.filter((s) => s === 429).length).toBe(250 - L.clientFreeFailures);
      const refused = rs.find((r) => r.status === 429)!;
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
      // The same burst with the right password in it changes nothing: that client must wait like any other.
      expect((await login(w.client(), 'victim', PW, '198.51.100.7')).status).toBe(429);
    });

    it('finding 5: ten bad attempts every 15 minutes from one address do not keep the owner out', async () => {
      const owner = w.client();
      expect((await login(owner, 'owner', PW, '203.0.113.1')).status).toBe(200);
      expect(owner.jar.get('kiln.device')).toBeTruthy();
      const attacker = w.client();
      let guessesChecked = 0;
      for (let round = 0; round < 8; round++) {
        for (let i = 0; i < 10; i++) {
          const r = await login(attacker, 'owner', WRONG, '192.0.2.66');
          expect([401, 429]).toContain(r.status);
          if (r.status === 401) guessesChecked++;
        }
        // the owner's own browser (device cookie), even from the attacker's address (same NAT)
        expect((await login(owner, 'owner', PW, '192.0.2.66')).status, `round ${round}: owner's browser`).toBe(200);
        // a browser the owner never used, from another address
        expect(
          (await login(w.client(), 'owner', PW, `203.0.113.${10 + round}`)).status,
          `round ${round}: new browser`,
        ).toBe(200);
        // the attacker's address without the owner's cookie waits, and is told how long
        const blocked = await login(w.client(), 'owner', PW, '192.0.2.66');
        expect(blocked.status).toBe(429);
        expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
        advance(15 * 60_000);
      }
      // Backoff, not a fixed window: over two hours the address got its free attempts and a few spaced ones.
      expect(guessesChecked).toBeGreaterThanOrEqual(L.clientFreeFailures);
      expect(guessesChecked).toBeLessThan(L.clientFreeFailures + 8);
    });

    it('finding 5: a forged or borrowed device cookie is just a new browser', async () => {
      const owner = w.client();
      expect((await login(owner, 'admin1', PW, '203.0.113.50')).status).toBe(200);
      const genuine = owner.jar.get('kiln.device')!;
      const [uid, dev, mac] = genuine.split('.');
      const forged = `${uid}.${dev}.${mac!.slice(0, -2)}${mac!.endsWith('AA') ? 'BB' : 'AA'}`;
      for (const cookie of [forged, `${Number(uid) + 1}.${dev}.${mac}`]) {
        const c = w.client();
        c.jar.set('kiln.device', cookie);
        for (let i = 0; i < L.clientFreeFailures; i++)
          expect((await login(c, 'admin1', WRONG, '192.0.2.99')).status).toBe(401);
        expect((await login(c, 'admin1', WRONG, '192.0.2.99')).status).toBe(429);
        advance(L.clientForgetMs);
      }
      expect((await login(owner, 'admin1', PW, '192.0.2.99')).status).toBe(200);
    });

    it(`case 3: ${L.accountFailures + 1} wrong passwords within an hour from rotating addresses: 429 after ${L.accountFailures}, the owner's browser still gets in, everyone after the window`, async () => {
      expect((await w.client().register('rotated', PW)).status).toBe(201);
      const owner = w.client();
      expect((await login(owner, 'rotated', PW, '203.0.113.200')).status).toBe(200);
      advance(1000);
      const attacker = w.client();
      const statuses: number[] = [];
      for (let i = 0; i <= L.accountFailures; i++) {
        statuses.push((await login(attacker, 'rotated', WRONG, `10.${(i >> 8) & 255}.${i & 255}.1`)).status);
        advance(10_000); // 101 attempts within 17 minutes
      }
      expect(statuses.slice(0, L.accountFailures).every((s) => s === 401)).toBe(true);
      expect(statuses[L.accountFailures]).toBe(429);
      // New browsers wait for the window (told how long); the owner's browser is not locked out.
      const newBrowser = await login(w.client(), 'rotated', PW, '203.0.113.201');
      expect(newBrowser.status).toBe(429);
      const retry = Number(newBrowser.headers.get('retry-after'));
      expect(retry).toBeGreaterThan(0);
      expect(retry).toBeLessThanOrEqual(L.accountWindowMs / 1000);
      expect((await login(owner, 'rotated', PW, '203.0.113.200')).status).toBe(200);
      advance(retry * 1000);
      expect((await login(w.client(), 'rotated', PW, '203.0.113.202')).status).toBe(200);
    });
  });
}
