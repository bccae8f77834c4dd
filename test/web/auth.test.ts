import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/shared/logger.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

const PW = 'correct horse battery staple';

describe('web auth', () => {
  let w: TestWeb;
  // Throttling has its own tests below; here it would turn repeated failures into fast 429s.
  beforeAll(async () => {
    w = await startTestWeb({ limits: { clientFreeFailures: 1000, accountFailures: 1000, ipAttempts: 1000 } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 1: registers, logs in, and stores an argon2id hash (no plaintext)', async () => {
    const c = w.client();
    await c.signUp('alice', PW);
    const me = await c.get('/api/me');
    expect(me.status).toBe(200);
    expect(((await me.json()) as { user: { username: string } }).user.username).toBe('alice');
    const row = await w.db('users').where({ username: 'alice' }).first();
    expect(row.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(JSON.stringify(await w.db('sessions').select())).not.toContain(PW);
  });

  it('case 2: rejects bad usernames and passwords (11 and 129 characters) with clear messages', async () => {
    const c = w.client();
    for (const [u, p, status] of [
      ['Bob', PW, 422],
      ['bo', PW, 422],
      ['bob;rm', PW, 422],
      ['bob', 'short', 400],
      ['bob', 'x'.repeat(129), 400],
    ] as const) {
      const r = await c.register(u, p);
      expect(r.status, `${u}/${p.length}`).toBe(status);
      expect(await r.text()).toMatch(/Username must be|Password must be/);
    }
    expect(await w.db('users').where({ username: 'bob' }).first()).toBeUndefined();
  });

  it('case 2: accepts 64 emoji and 128-character passwords without truncation', async () => {
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

  it('case 6: unknown user and wrong password look identical (status and body)', async () => {
    const a = await w.client().login('alice', 'wrong password here');
    const b = await w.client().login('nosuchuser', 'wrong password here');
    expect(a.status).toBe(401);
    expect(b.status).toBe(401);
    const strip = (s: string) => s.replace(/value="[^"]*"/g, '');
    expect(strip(await a.text()).replace('alice', 'X')).toBe(strip(await b.text()).replace('nosuchuser', 'X'));
  });

  it('case 6: unknown, disabled and wrong-password logins each cost exactly one argon2 verification (same timing)', async () => {
    const { authenticate } = await import('../../src/core/users.js');
    const { PasswordHasher } = await import('../../src/core/passwords.js');
    const { DEFAULT_LOGIN_LIMITS } = await import('../../src/core/deps.js');
    const h = new PasswordHasher(1);
    let verifies = 0;
    const orig = h.verify.bind(h);
    h.verify = async (stored: string, pw: string) => {
      verifies++;
      return orig(stored, pw);
    };
    const { insertUser, setUserDisabled } = await import('../../src/db/index.js');
    const frank = await insertUser(w.db, {
      username: 'frank',
      passwordHash: await h.hash('wrong password here'),
      role: 'user',
    });
    await setUserDisabled(w.db, frank.id, true);
    for (const u of ['emoji', 'nosuchuser', 'frank', 'BAD NAME']) {
      verifies = 0;
      const limits = { ...DEFAULT_LOGIN_LIMITS, clientFreeFailures: 1000, accountFailures: 1000 };
      await expect(
        authenticate(
          { db: w.db, hasher: h, limits },
          { username: u, password: 'wrong password here', ip: '127.0.0.1' },
        ),
      ).rejects.toMatchObject({ code: 'unauthenticated', message: 'Wrong username or password.' });
      expect(verifies, u).toBe(1);
    }
  });

  it('case 7: regenerates the session id on login; the pre-login id is dead', async () => {
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

  it('case 8: logout destroys the session server side: replayed cookie => 401', async () => {
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

  it('case 10: logout without a CSRF token is refused', async () => {
    const c = w.client();
    await c.login('carol', PW);
    expect((await c.postForm('/logout', {})).status).toBe(403);
    expect((await c.get('/api/me')).status).toBe(200);
  });

  it('case 10: login without a CSRF token is refused', async () => {
    const c = w.client();
    const r = await c.postForm('/login', { username: 'carol', password: PW });
    expect(r.status).toBe(403);
  });

  it('case 8: disabled users lose their live session on the next request', async () => {
    const c = w.client();
    await c.signUp('dave', PW);
    expect((await c.get('/api/me')).status).toBe(200);
    const { setUserDisabled, findUserByName } = await import('../../src/db/index.js');
    await setUserDisabled(w.db, (await findUserByName(w.db, 'dave'))!.id, true);
    expect((await c.get('/api/me')).status).toBe(401);
    expect((await w.client().login('dave', PW)).status).toBe(401);
  });

  it('case 9: session cookie on http loopback: HttpOnly, SameSite=Lax, Path=/, no Domain', async () => {
    const c = w.client();
    await c.get('/login');
    const sc = c.lastSetCookie.find((s) => s.startsWith('kiln.sid='))!;
    expect(sc).toMatch(/HttpOnly/i);
    expect(sc).toMatch(/SameSite=Lax/i);
    expect(sc).toMatch(/Path=\//);
    expect(sc).not.toMatch(/Domain=/i);
  });

  it('case 25: redirects after login only to same-origin relative paths', async () => {
    const cases: Array<[string, string]> = [
      ['//evil.com', '/'],
      ['/\\evil.com', '/'],
      ['https://evil.com', '/'],
      ['%2F%2Fevil.com', '/'],
      ['javascript:alert(1)', '/'],
      ['/\t/evil.com', '/'],
      ['http:/evil.com', '/'],
      ['/dockerfiles?x=1', '/dockerfiles?x=1'],
      ['/builds/3', '/builds/3'],
    ];
    for (const [next, want] of cases) {
      const c = w.client();
      const r = await c.login('carol', PW, next);
      expect(r.status, next).toBe(303);
      expect(r.headers.get('location'), next).toBe(want);
    }
  });
});

/** A Set-Cookie line with everything `__Host-` needs, plus HttpOnly and the given SameSite. */
function expectHostCookie(sc: string | undefined, sameSite: 'Lax' | 'Strict'): void {
  expect(sc).toBeDefined();
  expect(sc).toMatch(/; Secure/i);
  expect(sc).toMatch(/HttpOnly/i);
  expect(sc).toMatch(new RegExp(`SameSite=${sameSite}`, 'i'));
  expect(sc).toMatch(/Path=\//);
  expect(sc).not.toMatch(/Domain=/i);
}

describe('web auth: https cookie and throttling', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({
      config: { web: { publicUrl: 'https://kiln.example', trustProxyHops: 1 } },
    });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 9: uses __Host-sid; Secure; HttpOnly; SameSite=Lax; Path=/ behind an https proxy; the device cookie is __Host- too', async () => {
    const c = w.client();
    await c.get('/login', { 'x-forwarded-proto': 'https' });
    expectHostCookie(
      c.lastSetCookie.find((s) => s.startsWith('__Host-sid=')),
      'Lax',
    );
    // After a login the browser also gets its device cookie (login throttle): the same protections, SameSite=Strict.
    const h = { 'x-forwarded-proto': 'https', origin: 'https://kiln.example' };
    const tokenOf = async (p: string) => /name="_csrf" value="([^"]+)"/.exec(await (await c.get(p, h)).text())![1]!;
    expect(
      (
        await c.postForm(
          '/register',
          { _csrf: await tokenOf('/register'), username: 'erin', password: PW, password2: PW },
          h,
        )
      ).status,
    ).toBe(201);
    expect(
      (await c.postForm('/login', { _csrf: await tokenOf('/login'), username: 'erin', password: PW }, h)).status,
    ).toBe(303);
    expectHostCookie(
      c.lastSetCookie.find((s) => s.startsWith('__Host-kiln-device=')),
      'Strict',
    );
  });
});

describe('web auth: per-IP limit ignores X-Forwarded-For without trusted hops', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb({ limits: { ipAttempts: 3, ipWindowMs: 60_000 } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 5: rotating X-Forwarded-For does not buy new attempts', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = w.client();
      const t = await c.token('/login');
      statuses.push(
        (
          await c.postForm(
            '/login',
            { _csrf: t, username: `nobody${i}`, password: 'whatever whatever' },
            { 'x-forwarded-for': `1.2.3.${i}` },
          )
        ).status,
      );
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
  });
});

describe('change password', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('needs the current password, ends the other sessions, keeps this one', async () => {
    const c = w.client();
    await c.signUp('alice', PW);
    const other = w.client();
    await other.login('alice', PW);
    expect((await other.get('/api/me')).status).toBe(200);
    const t = await c.token('/account');
    const wrong = await c.postForm('/account/password', {
      _csrf: t,
      current: 'not my password!',
      password: 'a brand new passphrase',
      password2: 'a brand new passphrase',
    });
    expect(wrong.status).toBe(400);
    expect(await wrong.text()).toContain('The current password is wrong.');
    const short = await c.postForm('/account/password', {
      _csrf: t,
      current: PW,
      password: 'short',
      password2: 'short',
    });
    expect(short.status).toBe(400);
    expect((await w.client().login('alice', PW)).status).toBe(303);
    const ok = await c.postForm('/account/password', {
      _csrf: t,
      current: PW,
      password: 'a brand new passphrase',
      password2: 'a brand new passphrase',
    });
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
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { registrationOpen: false } } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('refuses the page and the POST; nothing stored', async () => {
    const c = w.client();
    expect((await c.get('/register')).status).toBe(403);
    const t = await c.token('/login');
    expect(await (await c.get('/login')).text()).not.toContain('href="/register"');
    expect((await c.postForm('/register', { _csrf: t, username: 'eve', password: PW, password2: PW })).status).toBe(
      403,
    );
    expect(await w.db('users').where({ username: 'eve' }).first()).toBeUndefined();
  });
});

describe('a hundred logins, and what is kept of the password', () => {
  const lines: string[] = [];
  let w: TestWeb;
  beforeAll(async () => {
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    w = await startTestWeb({ logger: createLogger({ level: 'trace', destination }), limits: { ipAttempts: 1000 } });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 1: the right password logs in 100 times; the hash is argon2id m=19456 t=2 p=1; no plaintext in the database or the logs', async () => {
    const pw = 'a secret passphrase 4 case one';
    const c = w.client();
    expect((await c.register('hundred', pw)).status).toBe(201);
    for (let i = 0; i < 100; i++) expect((await w.client().login('hundred', pw)).status, `login ${i}`).toBe(303);
    // a few wrong ones as well: failures are logged and counted, never with the text typed
    for (let i = 0; i < 3; i++) expect((await w.client().login('hundred', `${pw}!`)).status).toBe(401);
    const row = await w.db('users').where({ username: 'hundred' }).first();
    expect(row.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    const tables = (await w.db('sqlite_master').where({ type: 'table' }).select('name')).map(
      (r: { name: string }) => r.name,
    );
    for (const t of tables) {
      const dump = JSON.stringify(await w.db(t).select());
      expect(dump, t).not.toContain(pw);
      expect(dump, t).not.toContain(Buffer.from(pw).toString('base64'));
    }
    expect(lines.length).toBeGreaterThan(100);
    expect(lines.join('')).not.toContain(pw);
  });
});
