import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, findUserByName } from '../../src/db/index.js';
import { tempDir } from '../helpers/tmp.js';
import { startTestWeb } from '../helpers/web.js';
import { tokenActor } from '../../src/core/tokens.js';

const KILN = path.resolve(__dirname, '../../bin/kiln');

describe('kiln migrate / kiln user (compiled CLI)', () => {
  let dir: string;
  let cleanup: () => void;
  const run = (...args: string[]) =>
    spawnSync(KILN, args, {
      env: { ...process.env, KILN_DATA_DIR: dir, KILN_LOG_LEVEL: 'silent' },
      encoding: 'utf8',
      timeout: 60_000,
    });
  beforeAll(() => {
    ({ dir, cleanup } = tempDir('kiln-cli-'));
  });
  afterAll(() => cleanup());

  it('migrate creates the database, twice is a no-op', () => {
    const r1 = run('migrate');
    expect(r1.status, r1.stderr).toBe(0);
    expect(r1.stdout).toContain('applied: 001_initial');
    const r2 = run('migrate');
    expect(r2.stdout).toContain('up to date');
  });

  it('user add --admin prints a one-time password, stores only its hash, refuses duplicates and bad names', async () => {
    const r = run('user', 'add', '--admin', 'boss');
    expect(r.status, r.stderr).toBe(0);
    const pw = /one-time password: (\S+)/.exec(r.stdout)![1]!;
    expect(pw.length).toBeGreaterThanOrEqual(20);
    const db = createDb({ client: 'sqlite', filename: path.join(dir, 'kiln.sqlite') });
    try {
      const u = (await findUserByName(db, 'boss'))!;
      expect(u.role).toBe('admin');
      expect(u.password_hash).not.toContain(pw);
    } finally {
      await db.destroy();
    }
    expect(run('user', 'add', 'boss').status).toBe(1);
    expect(run('user', 'add', 'Bad Name').status).not.toBe(0);
    expect(run('user', 'list').stdout).toMatch(/^boss\tadmin/m);
  });

  it('user token prints a working token alone on stdout (for $(...)), stores only its hash, and refuses what it may not make', async () => {
    expect(run('user', 'add', 'ci-user').status).toBe(0);
    const r = run('user', 'token', 'ci-user', '--scope', 'build', '--expires', '30d', '--name', 'gitlab');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kiln_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$/);
    expect(r.stderr).toMatch(/API token "gitlab" for ci-user: scopes build, expires 20\d\d-/);
    const token = r.stdout.trim();
    const db = createDb({ client: 'sqlite', filename: path.join(dir, 'kiln.sqlite') });
    try {
      const row = await db('api_tokens').first();
      expect(JSON.stringify(row)).not.toContain(token.slice(22));
      const actor = await tokenActor({ db }, `Bearer ${token}`);
      expect(actor).toMatchObject({ username: 'ci-user', scopes: ['build'], via: 'token' });
    } finally {
      await db.destroy();
    }
    expect(run('user', 'token', 'ci-user').stdout).toMatch(/^kiln_/); // read, no expiry
    const refused = [
      run('user', 'token', 'ci-user', '--scope', 'admin'),
      run('user', 'token', 'ci-user', '--expires', 'soon'),
      run('user', 'token', 'nobody'),
    ];
    for (const x of refused) {
      expect(x.status).toBe(1);
      expect(x.stdout).toBe('');
    }
    expect(run('user', 'token').status).toBe(2);
    expect(run('user', 'token', 'ci-user', '--bogus').status).toBe(2);
  });
});

describe('first admin on an empty database', () => {
  it('ensureFirstAdmin creates admin once, then returns null', async () => {
    const w = await startTestWeb();
    try {
      const { ensureFirstAdmin } = await import('../helpers/web.js');
      const first = await ensureFirstAdmin(w.db);
      expect(first?.username).toBe('admin');
      expect(await ensureFirstAdmin(w.db)).toBeNull();
      const c = w.client();
      expect((await c.login('admin', first!.password)).status).toBe(303);
      const me = (await (await c.get('/api/me')).json()) as { user: { role: string } };
      expect(me.user.role).toBe('admin');
    } finally {
      await w.close();
    }
  });
});
