import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher } from '../../src/core/passwords.js';
import { until } from '../helpers/wait.js';
import { TOUCH_EVERY_MS } from '../../src/web/session-store.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

describe('session lifetime', () => {
  let w: TestWeb;
  let t = Date.now();
  beforeAll(async () => {
    w = await startTestWeb({ clock: () => t, config: { web: { sessionAbsoluteHours: 1 } } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('absolute timeout ends a session even while it is in use', async () => {
    const c = w.client();
    await c.signUp('alice');
    t += 3600_000;
    expect((await c.get('/api/me')).status).toBe(200);
    t += 1;
    expect((await c.get('/api/me')).status).toBe(401);
  });

  it('the login page after a session expired carries a token, and logging in with it works (the old cookie still sent)', async () => {
    const c = w.client();
    await c.signUp('dave');
    const oldCookie = c.jar.get('kiln.sid');
    t += 3600_001;
    expect((await c.get('/api/me')).status).toBe(401);
    // The browser still sends the expired session's cookie to the login page and with the login form.
    expect(c.jar.get('kiln.sid')).toBe(oldCookie);
    const l = await c.login('dave', 'correct horse battery staple');
    expect(l.status).toBe(303);
    expect((await c.get('/api/me')).status).toBe(200);
  });

  it('a login stores its session with the CSRF token before it answers: the token the next page hands out is that one', async () => {
    // express-session saves a regenerated session once more after the login's headers are out. A client that follows
    // the redirect at once can have its next page add a token first, which that late save then overwrote: the
    // page's form got 403 under load. The token is now part of what the login itself stores.
    const c = w.client();
    await c.signUp('carol');
    const sid = /^s:([^.]+)\./.exec(decodeURIComponent(c.jar.get('kiln.sid')!))![1];
    const row = await w.db('sessions').where({ sid }).first();
    const stored = (typeof row.sess === 'string' ? JSON.parse(row.sess) : row.sess) as {
      csrfToken?: string;
      passport?: unknown;
    };
    expect(stored.passport).toBeDefined();
    expect(stored.csrfToken).toMatch(/^[0-9a-f]{256}$/);
    expect(await c.token('/dockerfiles/new')).toBe(stored.csrfToken);
    expect(await c.apiToken()).toBe(stored.csrfToken);
  });

  it('the session row carries the idle expiry, rolled forward on use (at most once a minute per process)', async () => {
    let t2 = Date.now();
    const w2 = await startTestWeb({ clock: () => t2, config: { web: { sessionIdleMinutes: 30 } } });
    try {
      const c = w2.client();
      await c.signUp('bob');
      const rows = await w2.db('sessions').select();
      const mine = rows.find((r) => String(r.sess).includes('"passport"'));
      const exp = new Date(mine.expired).getTime();
      expect(exp - Date.now()).toBeGreaterThan(29 * 60_000);
      expect(exp - Date.now()).toBeLessThanOrEqual(30 * 60_000 + 1000);
      // Within a minute of the last write, page views write nothing: no UPDATE (and no fsync) per request.
      const writes: string[] = [];
      const onQuery = (q: { sql: string }) => {
        if (/^update\s+`?sessions`?\s/i.test(q.sql)) writes.push(q.sql);
      };
      w2.db.on('query', onQuery);
      for (let i = 0; i < 5; i++) expect((await c.get('/api/me')).status).toBe(200);
      t2 += TOUCH_EVERY_MS - 1000;
      expect((await c.get('/dockerfiles')).status).toBe(200);
      expect(writes).toEqual([]);
      // Rolled forward: a request a minute after the last write moves the stored expiry (and the cookie's) later.
      t2 += TOUCH_EVERY_MS;
      const after = await until(async () => {
        await c.get('/api/me');
        const row = (await w2.db('sessions').select()).find((r) => r.sid === mine.sid);
        return new Date(row.expired).getTime() > exp && row;
      });
      expect(new Date(after.expired).getTime()).toBeGreaterThan(exp);
      w2.db.off('query', onQuery);
      expect(writes.length).toBeGreaterThanOrEqual(1);
      expect(c.lastSetCookie.find((s) => s.startsWith('kiln.sid='))).toMatch(/Expires=/);
    } finally {
      await w2.close();
    }
  });
});

describe('hash storm', () => {
  let w: TestWeb;
  const CAP = 1;
  const QUEUE = 256;
  // One hash at a time leaves the second core to the event loop (the machine has 2).
  const hasher = new PasswordHasher(CAP, QUEUE);
  let running = 0;
  let maxRunning = 0;
  let maxQueued = 0;
  // Counts what runs inside the semaphore: the argon2 work itself.
  const run = hasher.sem.run.bind(hasher.sem);
  hasher.sem.run = <T>(fn: () => Promise<T>): Promise<T> => {
    maxQueued = Math.max(maxQueued, hasher.sem.queued);
    return run(async () => {
      maxRunning = Math.max(maxRunning, ++running);
      try {
        return await fn();
      } finally {
        running--;
      }
    });
  };
  beforeAll(async () => {
    w = await startTestWeb({ hasher, limits: { ipAttempts: 100_000 } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 4: 1,000 parallel logins with random names: hashing stays capped, the queue bounded, all refused cleanly, other routes answer meanwhile', async () => {
    const c = w.client();
    const t = await c.token('/login');
    const rss0 = process.memoryUsage().rss;
    let done = 0;
    const storm = Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        c
          .postForm('/login', {
            _csrf: t,
            username: `rnd${i}x${Math.random().toString(36).slice(2, 8)}`,
            password: 'not the password at all',
          })
          .then((r) => {
            done++;
            return r.status;
          }),
      ),
    );
    // Wait until hashing has begun, then ask for other pages while the storm is still being answered.
    await until(() => maxRunning > 0, 60_000, 10);
    for (const [p, want] of [
      ['/static/kiln.css', 200],
      ['/login', 200],
      ['/api/me', 401],
      ['/register', 200],
    ] as const) {
      const page = await w.client().get(p);
      expect(page.status, p).toBe(want);
      expect(done, `${p} answered only after the storm`).toBeLessThan(1000);
    }
    const statuses = await storm;
    expect(statuses.every((st) => st === 401 || st === 429)).toBe(true);
    // Over the queue's bound the hasher refuses at once (429) instead of holding the request.
    expect(statuses.filter((st) => st === 429).length).toBeGreaterThan(0);
    expect(maxRunning).toBe(CAP);
    expect(maxQueued).toBeLessThanOrEqual(QUEUE);
    // argon2 m=19 MiB x CAP at a time: memory stays bounded whatever the queue length
    expect(process.memoryUsage().rss - rss0).toBeLessThan(400 * 1024 * 1024);
  }, 300_000); // a few hundred argon2 runs one at a time, on a machine shared with builds
});
