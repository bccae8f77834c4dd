import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, isDiskFull, migrateLatest, type Db } from '../../src/db/index.js';
import { tempDir } from '../helpers/tmp.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const PW = 'correct horse battery staple';
const MiB = 1024 * 1024;
const root = process.getuid?.() === 0;

/**
 * Case 50 for real: the SQLite database lives on a 24 MiB tmpfs of its own, which the test fills with a file.
 * Two apps share that database: one with the free-space floor (uploads stop before the disk is full, so logins keep
 * room to write) and one without it (the write itself fails with SQLITE_FULL).
 */
describe.skipIf(!root)('disk full (SQLite on a small tmpfs)', () => {
  const tmp = tempDir('kiln-diskfull-');
  const fs = path.join(tmp.dir, 'fs');
  const filler = path.join(fs, 'filler');
  let db: Db;
  let guarded: TestWeb;
  let bare: TestWeb;
  let mounted = false;
  const free = (): number => { const s = statfsSync(fs); return Number(s.bavail) * Number(s.bsize); };
  /** Leaves about `leave` bytes free on the tmpfs (0: completely full). */
  const fill = (leave: number): void => {
    rmSync(filler, { force: true });
    const n = Math.max(0, free() - leave);
    writeFileSync(filler, Buffer.alloc(0));
    // dd stops at ENOSPC when asked for more than there is: exactly what "full" means.
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4096', `count=${Math.ceil(n / 4096)}`, 'status=none'], { stdio: 'ignore' });
    } catch { /* ENOSPC at the end is expected when leave is 0 */ }
  };
  const rows = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const t of ['dockerfiles', 'dockerfile_versions', 'dockerfile_contexts', 'builds']) out[t] = Number((await db(t).count({ n: '*' }))[0]!.n);
    return out;
  };
  const upload = async (c: HttpClient, name: string, contextBytes = 0, token?: string): Promise<Response> => c.postJson('/api/dockerfiles', {
    name, content: 'FROM debian:bookworm\nRUN true\n',
    ...(contextBytes ? { contextFiles: [{ name: 'blob.bin', contentBase64: Buffer.alloc(contextBytes, 9).toString('base64') }] } : {}),
  }, { 'x-csrf-token': token ?? await c.apiToken() });
  const formUpload = async (c: HttpClient, name: string): Promise<Response> => {
    const f = new FormData();
    f.set('_csrf', await c.token('/dockerfiles/new'));
    f.set('name', name);
    f.set('content', 'FROM debian:bookworm\nRUN true\n');
    return c.postMultipart('/dockerfiles', f);
  };

  beforeAll(async () => {
    mkdirSync(fs);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', fs]);
    mounted = true;
    db = createDb({ client: 'sqlite', filename: path.join(fs, 'kiln.sqlite') });
    await migrateLatest(db);
    guarded = await startTestWeb({ db, config: { web: { minFreeMb: 4 } } });
    bare = await startTestWeb({ db, config: { web: { minFreeMb: 0 } } });
    expect((await guarded.client().register('alice', PW)).status).toBe(201);
  });
  afterAll(async () => {
    await guarded?.close();
    await bare?.close();
    await db?.destroy();
    if (mounted) execFileSync('umount', [fs]);
    tmp.cleanup();
  });

  it('case 50: with little space left, uploads get 507 with a clear message and store nothing; logins still work', async () => {
    const c = guarded.client();
    await c.login('alice', PW);
    expect((await upload(c, 'before')).status).toBe(201);
    fill(2 * MiB);
    expect(free()).toBeLessThan(4 * MiB);
    const before = await rows();
    const api = await upload(c, 'api-upload');
    expect(api.status).toBe(507);
    const body = (await api.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('insufficient_storage');
    expect(body.error.message).toMatch(/running out of disk space.*Nothing was saved/);
    const form = await formUpload(c, 'form-upload');
    expect(form.status).toBe(507);
    expect(await form.text()).toContain('running out of disk space');
    expect(await rows()).toEqual(before);
    // Logging in writes a session (and throttle rows): the floor left room for it.
    for (let i = 0; i < 5; i++) {
      const other = guarded.client();
      expect((await other.login('alice', PW)).status, `login ${i}`).toBe(303);
      expect((await other.get('/api/me')).status).toBe(200);
    }
  });

  it('case 50: with the disk completely full the failed write is 507 (not 500), nothing is half-written, the database stays intact, and uploads work again once space is freed', async () => {
    const c = bare.client();
    expect((await c.login('alice', PW)).status).toBe(303);
    // The CSRF token lives in the session, which a full disk could not store any more: fetch it first.
    const token = await c.apiToken();
    fill(0);
    expect(free()).toBeLessThan(64 * 1024);
    const before = await rows();
    const r = await upload(c, 'full', 512 * 1024, token);
    expect(r.status).toBe(507);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('insufficient_storage');
    expect(await rows()).toEqual(before);
    // Whatever else is attempted on a full disk answers cleanly, never with a 500. (A new browser cannot log in now:
    // its session, which holds the login form's CSRF token, cannot be stored. The floor above exists for that.)
    for (const r2 of [await bare.client().login('alice', PW), await c.get('/dockerfiles'), await c.get('/api/me')]) {
      expect(r2.status === 507 || r2.status < 500, String(r2.status)).toBe(true);
    }
    expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
    expect(readdirSync(fs).sort()).toEqual(['filler', 'kiln.sqlite', 'kiln.sqlite-shm', 'kiln.sqlite-wal']);
    rmSync(filler);
    expect((await upload(c, 'after', 512 * 1024)).status).toBe(201);
    expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
  });

  it('case 50: the disk-full errors of every engine are recognised (SQLITE_FULL, PostgreSQL 53100, ENOSPC)', () => {
    for (const code of ['SQLITE_FULL', '53100', 'ENOSPC']) expect(isDiskFull(Object.assign(new Error('x'), { code })), code).toBe(true);
    for (const code of ['SQLITE_BUSY', '23505', 'EACCES', undefined]) expect(isDiskFull(Object.assign(new Error('x'), { code })), String(code)).toBe(false);
  });
});
