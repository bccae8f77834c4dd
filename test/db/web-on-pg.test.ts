import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestWeb, type TestWeb } from '../helpers/web.js';
import { freshDb, type TestDb } from './engines.js';

/** The web on PostgreSQL: sessions (the session store's PG path), CSRF, quotas and builds over HTTP. */
describe('web on PostgreSQL', () => {
  let pg: TestDb;
  let w: TestWeb;
  beforeAll(async () => {
    pg = await freshDb('pg');
    w = await startTestWeb({ db: pg.db, config: { web: { quotaQueuedBuilds: 2 } } });
  });
  afterAll(async () => {
    await w?.close();
    await pg?.drop();
  });

  it('a client that follows the login redirect at once is logged in (the session is saved before the answer)', async () => {
    // Regression: express-session saves at the end of the response after sending the headers, so the next request
    // could read the session before loginAt was written and end it. Failed 1-3 times in 20 before the fix.
    for (let i = 0; i < 30; i++) {
      const c = w.client();
      await c.signUp(`quick${i}`);
      expect((await c.get('/api/me')).status, `sign-up ${i}`).toBe(200);
    }
  });

  it('register, log in (session regenerated), create, build twice with one key, log out', async () => {
    const c = w.client();
    await c.register('alice', 'correct horse battery staple');
    await c.token('/login');
    const before = c.jar.get('kiln.sid');
    await c.login('alice', 'correct horse battery staple');
    expect(c.jar.get('kiln.sid')).not.toBe(before);
    const id = await c.createDockerfile('web', 'FROM debian:bookworm\nRUN true\n');
    const { id: buildId, key, token } = await c.build(id);
    const again = await c.postForm(`/dockerfiles/${id}/builds`, { _csrf: token, key });
    expect(again.headers.get('location')).toBe(`/builds/${buildId}`);
    const t = await c.apiToken();
    const rs = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        c.postJson(`/api/dockerfiles/${id}/builds`, { key: `pg-parallel-${i}-key` }, { 'x-csrf-token': t }),
      ),
    );
    expect(rs.filter((r) => r.status === 201).length).toBe(1);
    expect(Number((await pg.db('builds').count({ n: '*' }))[0]!.n)).toBe(2);
    const cookie = c.cookieHeader();
    const out = await c.postForm('/logout', { _csrf: await c.token('/dockerfiles') });
    expect(out.status).toBe(303);
    expect((await fetch(`${w.url}/api/me`, { headers: { cookie } })).status).toBe(401);
  });
});
