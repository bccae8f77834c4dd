import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByName } from '../../src/db/users.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

/** Every way a client could try to name its own role; none may be read from a request (checklist 1.6). */
const ELEVATE = { role: 'admin', is_admin: true, isAdmin: true, admin: '1' };

describe('roles come from the database, never from a request', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 13: registering with role or is_admin in the body (form and API) makes a plain user', async () => {
    const form = w.client();
    const t = await form.token('/register');
    const r1 = await form.postForm('/register', {
      _csrf: t,
      username: 'mallory',
      password: 'correct horse battery staple',
      password2: 'correct horse battery staple',
      role: 'admin',
      is_admin: 'true',
    });
    expect(r1.status).toBe(201);
    const api = w.client();
    const r2 = await api.postJson(
      '/api/register',
      { username: 'trudy', password: 'correct horse battery staple', ...ELEVATE },
      { 'x-csrf-token': await api.apiToken() },
    );
    expect(r2.status).toBe(201);
    expect(((await r2.json()) as { user: { role: string } }).user.role).toBe('user');
    expect((await findUserByName(w.db, 'mallory'))?.role).toBe('user');
    expect((await findUserByName(w.db, 'trudy'))?.role).toBe('user');
  });

  it('case 13: a role field sent to every state-changing route leaves the user a plain user', async () => {
    const posts = w.routes().filter((r) => r.method === 'POST');
    expect(posts.length).toBeGreaterThan(5);
    const c = w.client();
    await c.signUp('eve');
    const df = await c.createDockerfile('eves', 'FROM debian:bookworm\nRUN true\n');
    for (const r of posts) {
      if (/logout/.test(r.path)) continue; // would end the session the rest of the loop needs
      const p = r.path.replace(':id', String(df)).replace(':name', 'image.raw');
      const res = await c.postJson(
        p,
        {
          ...ELEVATE,
          name: 'eves',
          content: 'FROM debian:bookworm\n',
          key: `roles-${Math.random().toString(36).slice(2, 12)}`,
        },
        { 'x-csrf-token': await c.apiToken() },
      );
      expect(res.status, `${r.method} ${p}`).toBeLessThan(500);
    }
    expect((await findUserByName(w.db, 'eve'))?.role).toBe('user');
    const me = await c.get('/api/me');
    expect(((await me.json()) as { user: { role: string } }).user.role).toBe('user');
  });
});
