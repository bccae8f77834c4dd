import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
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
/** A tmpfs of its own under `dir`, and a filler file to leave exactly as much free as a test wants. */
function smallDisk(dir: string, sizeMb: number, owner?: string) {
  const fill = path.join(dir, 'filler');
  mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m,mode=0700`, 'tmpfs', dir]);
  if (owner) execFileSync('chown', [`${owner}:${owner}`, dir]);
  const free = (): number => {
    const st = statfsSync(dir);
    return Number(st.bavail) * Number(st.bsize);
  };
  return {
    free,
    /** Leaves about `leave` bytes free (0: completely full). */
    fill(leave: number): void {
      rmSync(fill, { force: true });
      const n = Math.max(0, free() - leave);
      writeFileSync(fill, Buffer.alloc(0));
      // dd stops at ENOSPC when asked for more than there is: exactly what "full" means.
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${fill}`, 'bs=4096', `count=${Math.ceil(n / 4096)}`, 'status=none'], {
          stdio: 'ignore',
        });
      } catch {
        /* ENOSPC at the end is expected when leave is 0 */
      }
    },
    unfill: (): void => rmSync(fill, { force: true }),
    unmount: (): void => {
      execFileSync('umount', [dir]);
    },
  };
}

describe.skipIf(!root)('disk full (SQLite on a small tmpfs)', () => {
  const tmp = tempDir('kiln-diskfull-');
  const fs = path.join(tmp.dir, 'fs');
  let disk: ReturnType<typeof smallDisk> | undefined;
  let db: Db;
  let guarded: TestWeb;
  let bare: TestWeb;
  const free = (): number => disk!.free();
  const fill = (leave: number): void => disk!.fill(leave);
  const rows = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const t of ['dockerfiles', 'dockerfile_versions', 'dockerfile_contexts', 'builds'])
      out[t] = Number((await db(t).count({ n: '*' }))[0]!.n);
    return out;
  };
  const upload = async (c: HttpClient, name: string, contextBytes = 0, token?: string): Promise<Response> =>
    c.postJson(
      '/api/dockerfiles',
      {
        name,
        content: 'FROM debian:bookworm\nRUN true\n',
        ...(contextBytes
          ? { contextFiles: [{ name: 'blob.bin', contentBase64: Buffer.alloc(contextBytes, 9).toString('base64') }] }
          : {}),
      },
      { 'x-csrf-token': token ?? (await c.apiToken()) },
    );
  const formUpload = async (c: HttpClient, name: string): Promise<Response> => {
    const f = new FormData();
    f.set('_csrf', await c.token('/dockerfiles/new'));
    f.set('name', name);
    f.set('content', 'FROM debian:bookworm\nRUN true\n');
    return c.postMultipart('/dockerfiles', f);
  };

  beforeAll(async () => {
    disk = smallDisk(fs, 24);
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
    disk?.unmount();
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
    // A new browser cannot log in now: its session, which would hold the login form's CSRF token, cannot be stored
    // (the floor above exists for that). It is told so (507), not handed a form or token that could only be refused.
    const fresh = bare.client();
    const form = await fresh.get('/login');
    expect(form.status).toBe(507);
    expect(await form.text()).not.toContain('name="_csrf"');
    const apiToken = await fresh.get('/api/csrf');
    expect(apiToken.status).toBe(507);
    expect(((await apiToken.json()) as { error: { code: string } }).error.code).toBe('insufficient_storage');
    // Whatever else is attempted on a full disk answers cleanly, never with a 500.
    for (const r2 of [await c.get('/dockerfiles'), await c.get('/api/me')]) {
      expect(r2.status === 507 || r2.status < 500, String(r2.status)).toBe(true);
    }
    expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
    expect(readdirSync(fs).sort()).toEqual(['filler', 'kiln.sqlite', 'kiln.sqlite-shm', 'kiln.sqlite-wal']);
    disk!.unfill();
    expect((await upload(c, 'after', 512 * 1024)).status).toBe(201);
    expect(await db.raw('PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
  });

  it('case 50: the disk-full errors of every engine are recognised (SQLITE_FULL, PostgreSQL 53100, ENOSPC)', () => {
    for (const code of ['SQLITE_FULL', '53100', 'ENOSPC'])
      expect(isDiskFull(Object.assign(new Error('x'), { code })), code).toBe(true);
    for (const code of ['SQLITE_BUSY', '23505', 'EACCES', undefined])
      expect(isDiskFull(Object.assign(new Error('x'), { code })), String(code)).toBe(false);
  });
});

const PG_BIN = ['15', '16', '17'].map((v) => `/usr/lib/postgresql/${v}/bin`).find((d) => existsSync(`${d}/initdb`));

/**
 * Case 50 on PostgreSQL for real: a private server (own data directory on a small tmpfs, unix socket only, stopped
 * afterwards; the shared server is never touched) whose disk the test fills.
 */
describe.skipIf(!root || !PG_BIN)('disk full (PostgreSQL, a private server on a small tmpfs)', () => {
  const tmp = tempDir('kiln-pgfull-');
  const dir = path.join(tmp.dir, 'fs');
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  let disk: ReturnType<typeof smallDisk> | undefined;
  let started = false;
  let db: Db;
  let w: TestWeb;
  const pgCtl = (...args: string[]) =>
    execFileSync('runuser', ['-u', 'postgres', '--', `${PG_BIN}/pg_ctl`, '-D', data, ...args], {
      stdio: 'ignore',
      timeout: 120_000,
      cwd: dir,
    });

  beforeAll(async () => {
    chmodSync(tmp.dir, 0o711); // the server runs as postgres and must reach its directory
    disk = smallDisk(dir, 96, 'postgres');
    // 1 MiB WAL segments, so the server keeps recycled segments on this small disk and a full disk fails a relation
    // extension (an ERROR, SQLSTATE 53100) rather than a WAL write.
    execFileSync(
      'runuser',
      [
        '-u',
        'postgres',
        '--',
        `${PG_BIN}/initdb`,
        '-D',
        data,
        '--wal-segsize=1',
        '-A',
        'trust',
        '-U',
        'kiln',
        '-E',
        'UTF8',
      ],
      { stdio: 'ignore', timeout: 120_000, cwd: dir },
    );
    execFileSync('runuser', ['-u', 'postgres', '--', 'mkdir', sock]);
    const port = String(50000 + Math.floor(Math.random() * 10000));
    pgCtl(
      '-w',
      '-l',
      path.join(dir, 'log'),
      '-o',
      `-c listen_addresses='' -c unix_socket_directories=${sock} -c port=${port} -c min_wal_size=16MB -c max_wal_size=32MB -c shared_buffers=8MB`,
      'start',
    );
    started = true;
    db = createDb({ client: 'pg', url: `postgresql://kiln@${encodeURIComponent(sock)}:${port}/postgres` });
    await migrateLatest(db);
    w = await startTestWeb({ db });
  });
  afterAll(async () => {
    await w?.close();
    await db?.destroy();
    if (started) pgCtl('-m', 'fast', 'stop');
    disk?.unmount();
    tmp.cleanup();
  });

  it('case 50: PostgreSQL out of disk: the upload is 507, nothing is half-written, the server keeps answering, and uploads work again once space is freed', async () => {
    const c = w.client();
    await c.signUp('alice', PW);
    const token = await c.apiToken();
    // Churn through some WAL so recycled segments exist before the disk fills, then give the space back.
    await db.raw("create table scratch as select repeat('x', 1000) as t from generate_series(1, 20000)");
    await db.raw('drop table scratch');
    await db.raw('checkpoint');
    const count = async (): Promise<number[]> =>
      Promise.all(
        ['dockerfiles', 'dockerfile_versions', 'dockerfile_contexts'].map(async (t) =>
          Number((await db(t).count({ n: '*' }))[0]!.n),
        ),
      );
    const before = await count();
    disk!.fill(0);
    const r = await c.postJson(
      '/api/dockerfiles',
      {
        name: 'full',
        content: 'FROM debian:bookworm\nRUN true\n',
        contextFiles: [{ name: 'blob.bin', contentBase64: Buffer.alloc(2 * 1024 * 1024, 9).toString('base64') }],
      },
      { 'x-csrf-token': token },
    );
    expect(r.status).toBe(507);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('insufficient_storage');
    expect(await count()).toEqual(before);
    expect((await c.get('/api/me')).status).toBe(200);
    disk!.unfill();
    const ok = await c.postJson(
      '/api/dockerfiles',
      { name: 'after', content: 'FROM debian:bookworm\nRUN true\n' },
      { 'x-csrf-token': token },
    );
    expect(ok.status).toBe(201);
  });
});
