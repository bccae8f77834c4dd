import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

const PW = 'correct horse battery staple';

describe('web auth', () => {
  let w: TestWeb;
  // Throttling has its own tests below; here it would turn repeated failures into fast 429s.
  beforeAll(async () => { w = await startTestWeb({ limits: { accountFailures: 1000, ipAttempts: 1000 } }); });
  afterAll(async () => { await w?.close(); });

  it('registers, logs in, and stores an argon2id hash (no plaintext)', async () => {
    const c = w.client();
    await c.signUp('alice', PW);
    const me = await c.get('/api/me');
    expect(me.status).toBe(200);
    expect(((await me.json()) as { user: { username: string } }).user.username).toBe('alice');
    const row = await w.db('users').where({ username: 'alice' }).first();
    expect(row.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(JSON.stringify(await w.db('sessions').select())).not.toContain(PW);
  });

  it('rejects bad usernames and passwords with clear messages', async () => {
    const c = w.client();
    for (const [u, p, status] of [
      ['Bob', PW, 422], ['bo', PW, 422], ['bob;rm', PW, 422], ['bob', 'short', 400], ['bob', 'x'.repeat(129), 400],
    ] as const) {
      const r = await c.register(u, p);
      expect(r.status, `${u}/${p.length}`).toBe(status);
      expect(await r.text()).toMatch(/Username must be|Password must be/);
    }
    expect(await w.db('users').where({ username: 'bob' }).first()).toBeUndefined();
  });

  it('accepts 64 emoji and 128-character passwords without truncation', async () => {
    const emoji = '🔥'.repeat(64);
    const c = w.client();
    await c.signUp('emoji', emoji);
    const c2 = w.client();
    expect((await c2.login('emoji', '🔥'.repeat(63) + '🧊')).status).toBe(401);
    const long = Array.from({ length: 128 }, (_, i) => String.fromCharCode(33 + ((i * 7) % 90))).join('');
    await w.client().signUp('longpw', long);
    expect((await w.client().login('longpw', long.slice(0, 127) + (long.endsWith('!') ? '?' : '!'))).status).toBe(401);
    expect((await w.client().login('longpw', long)).status).toBe(303);
  });

  it('taken username => 409', async () => {
    const r = await w.client().register('alice', PW);
    expect(r.status).toBe(409);
    expect(await r.text()).toContain('That username is taken.');
  });

  it('unknown user and wrong password look identical', async () => {
    const a = await w.client().login('alice', 'wrong password here');
    const b = await w.client().login('nosuchuser', 'wrong password here');
    expect(a.status).toBe(401);
    expect(b.status).toBe(401);
    const strip = (s: string) => s.replace(/value="[^"]*"/g, '');
    expect(strip(await a.text()).replace('alice', 'X')).toBe(strip(await b.text()).replace('nosuchuser', 'X'));
  });

  it('unknown user and wrong password take about the same time', async () => {
    const time = async (u: string) => {
      const c = w.client();
      const t = await c.token('/login');
      const t0 = performance.now();
      await c.postForm('/login', { _csrf: t, username: u, password: 'wrong password here' });
      return performance.now() - t0;
    };
    await time('alice'); await time('ghost');
    const a: number[] = []; const b: number[] = [];
    for (let i = 0; i < 12; i++) { a.push(await time('emoji')); b.push(await time(`ghost${i}`)); }
    // Noise on a shared machine only ever adds time, so the fastest samples compare the work itself. The bound is
    // loose because other jobs share the 2 cores; the exact check is the next test (one argon2 run either way).
    const ratio = Math.min(...a) / Math.min(...b);
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });

  it('unknown, disabled and wrong-password logins each cost exactly one argon2 verification', async () => {
    const { authenticate } = await import('../../src/web/services/users.js');
    const { PasswordHasher } = await import('../../src/web/services/passwords.js');
    const { DEFAULT_LOGIN_LIMITS } = await import('../../src/web/services/context.js');
    const h = new PasswordHasher(1);
    let verifies = 0;
    const orig = h.verify.bind(h);
    h.verify = async (stored: string, pw: string) => { verifies++; return orig(stored, pw); };
    const { insertUser, setUserDisabled } = await import('../../src/db/index.js');
    const frank = await insertUser(w.db, { username: 'frank', passwordHash: await h.hash('wrong password here'), role: 'user' });
    await setUserDisabled(w.db, frank.id, true);
    for (const u of ['emoji', 'nosuchuser', 'frank', 'BAD NAME']) {
      verifies = 0;
      await expect(authenticate(w.db, h, { ...DEFAULT_LOGIN_LIMITS, accountFailures: 1000 }, u, 'wrong password here')).rejects.toMatchObject({ code: 'unauthenticated', message: 'Wrong username or password.' });
      expect(verifies, u).toBe(1);
    }
  });

  it('regenerates the session id on login; the pre-login id is dead', async () => {
    const c = w.client();
    await c.register('carol', PW);
    const t = await c.token('/login');
    const before = c.jar.get('kiln.sid');
    expect(before).toBeTruthy();
    const r = await c.postForm('/login', { _csrf: t, username: 'carol', password: PW });
    expect(r.status).toBe(303);
    const after = c.jar.get('kiln.sid');
    expect(after).toBeTruthy();
    expect(after).not.toBe(before);
    const stale = await fetch(`${w.url}/api/me`, { headers: { cookie: `kiln.sid=${before}` } });
    expect(stale.status).toBe(401);
  });

  it('logout destroys the session server side: replayed cookie => 401', async () => {
    const c = w.client();
    await c.login('carol', PW);
    const cookie = c.cookieHeader();
    expect((await c.get('/api/me')).status).toBe(200);
    const t = await c.token('/dockerfiles');
    const out = await c.postForm('/logout', { _csrf: t });
    expect(out.status).toBe(303);
    const replay = await fetch(`${w.url}/api/me`, { headers: { cookie } });
    expect(replay.status).toBe(401);
  });

  it('logout without a CSRF token is refused', async () => {
    const c = w.client();
    await c.login('carol', PW);
    expect((await c.postForm('/logout', {})).status).toBe(403);
    expect((await c.get('/api/me')).status).toBe(200);
  });

  it('login without a CSRF token is refused', async () => {
    const c = w.client();
    const r = await c.postForm('/login', { username: 'carol', password: PW });
    expect(r.status).toBe(403);
  });

  it('disabled users lose their live session on the next request', async () => {
    const c = w.client();
    await c.signUp('dave', PW);
    expect((await c.get('/api/me')).status).toBe(200);
    const { setUserDisabled, findUserByName } = await import('../../src/db/index.js');
    await setUserDisabled(w.db, (await findUserByName(w.db, 'dave'))!.id, true);
    expect((await c.get('/api/me')).status).toBe(401);
    expect((await w.client().login('dave', PW)).status).toBe(401);
  });

  it('session cookie on http loopback: HttpOnly, SameSite=Lax, Path=/, no Domain', async () => {
    const c = w.client();
    await c.get('/login');
    const sc = c.lastSetCookie.find((s) => s.startsWith('kiln.sid='))!;
    expect(sc).toMatch(/HttpOnly/i);
    expect(sc).toMatch(/SameSite=Lax/i);
    expect(sc).toMatch(/Path=\//);
    expect(sc).not.toMatch(/Domain=/i);
  });

  it('redirects after login only to same-origin relative paths', async () => {
    const cases: Array<[string, string]> = [
      ['//evil.com', '/'], ['/\\evil.com', '/'], ['https://evil.com', '/'], ['%2F%2Fevil.com', '/'], ['javascript:alert(1)', '/'],
      ['/\t/evil.com', '/'], ['http:/evil.com', '/'], ['/dockerfiles?x=1', '/dockerfiles?x=1'], ['/builds/3', '/builds/3'],
    ];
    for (const [next, want] of cases) {
      const c = w.client();
      const r = await c.login('carol', PW, next);
      expect(r.status, next).toBe(303);
      expect(r.headers.get('location'), next).toBe(want);
    }
  });
});

describe('web auth: https cookie and throttling', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({
      config: { web: { publicUrl: 'https://kiln.example', trustProxyHops: 1 } },
      limits: { accountFailures: 5, accountWindowMs: 1500, ipAttempts: 1000 },
    });
  });
  afterAll(async () => { await w?.close(); });

  it('uses __Host-sid; Secure; HttpOnly; SameSite=Lax; Path=/ behind an https proxy', async () => {
    const c = w.client();
    await c.get('/login', { 'x-forwarded-proto': 'https' });
    const sc = c.lastSetCookie.find((s) => s.startsWith('__Host-sid='));
    expect(sc).toBeDefined();
    expect(sc).toMatch(/; Secure/i);
    expect(sc).toMatch(/HttpOnly/i);
    expect(sc).toMatch(/SameSite=Lax/i);
    expect(sc).toMatch(/Path=\//);
    expect(sc).not.toMatch(/Domain=/i);
  });

  it('soft-locks an account after N failures (429 + Retry-After), then lets the right password in', async () => {
    const h = { 'x-forwarded-proto': 'https', origin: 'https://kiln.example' };
    const c = w.client();
    const t0 = await (async () => { await c.get('/register', h); const html = await (await c.get('/register', h)).text(); return /name="_csrf" value="([^"]+)"/.exec(html)![1]!; })();
    expect((await c.postForm('/register', { _csrf: t0, username: 'erin', password: PW, password2: PW }, h)).status).toBe(201);
    const attempt = async (pw: string, ip: string) => {
      const cc = w.client();
      const html = await (await cc.get('/login', h)).text();
      const t = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
      return cc.postForm('/login', { _csrf: t, username: 'erin', password: pw }, { ...h, 'x-forwarded-for': ip });
    };
    for (let i = 0; i < 5; i++) expect((await attempt('wrong password!!', `1.2.3.${i}`)).status).toBe(401);
    const locked = await attempt(PW, '1.2.3.99');
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
    const row = await w.db('login_failures').where({ username: 'erin' }).first();
    expect(Number(row.failures)).toBe(5);
    await new Promise((r) => setTimeout(r, 1600));
    expect((await attempt(PW, '1.2.3.100')).status).toBe(303);
  });
});

describe('web auth: per-IP limit ignores X-Forwarded-For without trusted hops', () => {
  let w: TestWeb;
  beforeAll(async () => { w = await startTestWeb({ limits: { ipAttempts: 3, ipWindowMs: 60_000 } }); });
  afterAll(async () => { await w?.close(); });

  it('rotating X-Forwarded-For does not buy new attempts', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = w.client();
      const t = await c.token('/login');
      statuses.push((await c.postForm('/login', { _csrf: t, username: `nobody${i}`, password: 'whatever whatever' }, { 'x-forwarded-for': `1.2.3.${i}` })).status);
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
  });
});

describe('change password', () => {
  let w: TestWeb;
  beforeAll(async () => { w = await startTestWeb(); });
  afterAll(async () => { await w?.close(); });

  it('needs the current password, ends the other sessions, keeps this one', async () => {
    const c = w.client();
    await c.signUp('alice', PW);
    const other = w.client();
    await other.login('alice', PW);
    expect((await other.get('/api/me')).status).toBe(200);
    const t = await c.token('/account');
    const wrong = await c.postForm('/account/password', { _csrf: t, current: 'not my password!', password: 'a brand new passphrase', password2: 'a brand new passphrase' });
    expect(wrong.status).toBe(400);
    expect(await wrong.text()).toContain('The current password is wrong.');
    const short = await c.postForm('/account/password', { _csrf: t, current: PW, password: 'short', password2: 'short' });
    expect(short.status).toBe(400);
    expect((await w.client().login('alice', PW)).status).toBe(303);
    const ok = await c.postForm('/account/password', { _csrf: t, current: PW, password: 'a brand new passphrase', password2: 'a brand new passphrase' });
    expect(ok.status).toBe(303);
    expect(ok.headers.get('location')).toBe('/account?changed=1');
    expect((await c.get('/api/me')).status).toBe(200);
    expect((await other.get('/api/me')).status).toBe(401);
    expect((await w.client().login('alice', PW)).status).toBe(401);
    expect((await w.client().login('alice', 'a brand new passphrase')).status).toBe(303);
  });
});

describe('registration closed', () => {
  let w: TestWeb;
  beforeAll(async () => { w = await startTestWeb({ config: { web: { registrationOpen: false } } }); });
  afterAll(async () => { await w?.close(); });

  it('refuses the page and the POST; nothing stored', async () => {
    const c = w.client();
    expect((await c.get('/register')).status).toBe(403);
    const t = await c.token('/login');
    expect(await (await c.get('/login')).text()).not.toContain('href="/register"');
    expect((await c.postForm('/register', { _csrf: t, username: 'eve', password: PW, password2: PW })).status).toBe(403);
    expect(await w.db('users').where({ username: 'eve' }).first()).toBeUndefined();
  });
});
