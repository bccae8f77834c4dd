import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';
import { isolatedTmpdir } from '../helpers/tmp.js';
import { freshDb, type TestDb } from '../db/engines.js';
import type { TestGlue } from '../helpers/glue.js';
import { backendJobName } from '../../src/protocol/index.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';

const DF = 'FROM debian:bookworm\nCOPY app /app\n';

type TarIn = {
  name: string;
  pax?: Record<string, string>;
  type?: tarStream.Header['type'];
  data?: Buffer | string;
  linkname?: string;
  mode?: number;
  devmajor?: number;
  devminor?: number;
};

/** A tar made exactly as given (tar-stream writes hostile names and types as they are). */
async function mkTar(entries: TarIn[]): Promise<Buffer> {
  const p = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    p.on('end', resolve);
  });
  for (const e of entries) {
    const { data, ...h } = e;
    const header = { mode: 0o644, mtime: new Date(1_700_000_000_000), ...h };
    if (data === undefined) p.entry(header);
    else p.entry(header, Buffer.isBuffer(data) ? data : Buffer.from(data));
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

type TarOut = { name: string; type: string; data: Buffer; linkname?: string; mode: number; uid: number };
async function readTar(buf: Buffer): Promise<TarOut[]> {
  const out: TarOut[] = [];
  const ex = tarStream.extract();
  ex.end(buf);
  for await (const e of ex) {
    const chunks: Buffer[] = [];
    for await (const c of e) chunks.push(c as Buffer);
    out.push({
      name: e.header.name,
      type: e.header.type ?? 'file',
      data: Buffer.concat(chunks),
      linkname: e.header.linkname ?? undefined,
      mode: e.header.mode ?? 0,
      uid: e.header.uid ?? 0,
    });
  }
  return out;
}

/** A response body with the HTML escapes undone, so messages can be matched as the user reads them. */
async function plain(r: Response): Promise<string> {
  return (await r.text())
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&#92;/g, '\\')
    .replace(/&amp;/g, '&');
}

async function counts(w: TestWeb) {
  const n = async (t: string) => Number((await w.db(t).count({ n: '*' }))[0]!.n);
  return {
    dockerfiles: await n('dockerfiles'),
    versions: await n('dockerfile_versions'),
    contexts: await n('dockerfile_contexts'),
  };
}

/** The multipart form of the new/edit pages. */
function form(token: string, fields: Record<string, string>, context: Array<[string, Buffer | string]> = []): FormData {
  const f = new FormData();
  f.set('_csrf', token);
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  for (const [name, data] of context) f.append('context', new Blob([data as BlobPart]), name);
  return f;
}

async function created(r: Response): Promise<number> {
  if (r.status !== 303) throw new Error(`expected 303, got ${r.status}: ${(await r.text()).slice(0, 300)}`);
  return Number(/\/dockerfiles\/(\d+)$/.exec(r.headers.get('location') ?? '')![1]);
}

/** Signs up; the session must hold at once (test/db/web-on-pg.test.ts has the regression test for that). */
async function signUpSure(c: HttpClient, name: string, password = 'correct horse battery staple'): Promise<void> {
  await c.signUp(name, password);
  expect((await c.get('/api/me')).status).toBe(200);
}

async function loginSure(c: HttpClient, name: string, password: string): Promise<void> {
  await c.login(name, password);
  expect((await c.get('/api/me')).status).toBe(200);
}

/** Presses Build and returns the context tar the glue's job spec carried (undefined: none). */
async function builtContext(
  w: TestWeb & { local: InProcessGlue },
  c: HttpClient,
  id: number,
): Promise<Buffer | undefined> {
  const { id: buildId } = await c.build(id);
  const row = await w.waitForBuild(buildId, (r) => r.backend_build !== null || r.state === 'failed');
  expect(row.state, String(row.reason)).not.toBe('failed');
  const file = path.join(w.local.dataDir, 'glue', 'jobs', backendJobName(id), 'context.tar');
  return existsSync(file) ? readFileSync(file) : undefined;
}

function suite(engine: 'sqlite' | 'pg') {
  describe(`build context uploads (${engine})`, () => {
    let w: TestWeb & { local: InProcessGlue };
    let pg: TestDb | undefined;
    let c: HttpClient;
    let token: string;
    const uploadsTmp = isolatedTmpdir();
    beforeAll(async () => {
      if (engine === 'pg') pg = await freshDb('pg');
      w = await startTestWeb({ db: pg?.db, config: { web: { quotaQueuedBuilds: 1000, quotaDockerfiles: 1000 } } });
      c = w.client();
      await signUpSure(c, 'alice');
      token = await c.token('/dockerfiles/new');
      uploadsTmp.use();
    });
    afterAll(async () => {
      await w?.close();
      await pg?.drop();
      uploadsTmp.restore();
    });

    it('Dockerfile + 2 files: the job spec carries a tar with exactly those 2 files and bytes', async () => {
      const bin = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
      const id = await created(
        await c.postMultipart(
          '/dockerfiles',
          form(token, { name: 'two-files', content: DF }, [
            ['app.py', 'print("hi")\n'],
            ['blob.bin', bin],
          ]),
        ),
      );
      const tar = (await builtContext(w, c, id))!;
      const entries = await readTar(tar);
      expect(entries.map((e) => [e.name, e.type, e.data.toString('hex')])).toEqual([
        ['app.py', 'file', Buffer.from('print("hi")\n').toString('hex')],
        ['blob.bin', 'file', bin.toString('hex')],
      ]);
      expect(entries.every((e) => e.uid === 0 && e.mode === 0o644)).toBe(true);
      const html = await (await c.get(`/dockerfiles/${id}`)).text();
      expect(html).toContain('app.py');
      expect(html).toContain('blob.bin');
      expect(html).toContain(createHash('sha256').update(tar).digest('hex'));
      const api = (await (await c.get(`/api/dockerfiles/${id}`)).json()) as {
        context: { sha256: string; size: number; entries: Array<{ name: string; size: number }> };
      };
      expect(api.context.size).toBe(tar.length);
      expect(api.context.entries.map((e) => [e.name, e.size])).toEqual([
        ['app.py', 12],
        ['blob.bin', 7],
      ]);
    });

    it('a .tar with a subdirectory and a symlink is preserved (re-packed: owner root, no setuid)', async () => {
      const up = await mkTar([
        { name: './', type: 'directory', mode: 0o755 },
        { name: './app/', type: 'directory', mode: 0o755 },
        { name: './app/main.py', data: 'print(1)\n', mode: 0o4755 },
        { name: './app/lib/', type: 'directory', mode: 0o700 },
        { name: './app/lib/x.txt', data: 'x' },
        { name: './latest', type: 'symlink', linkname: 'app/main.py' },
      ]);
      const id = await created(
        await c.postMultipart('/dockerfiles', form(token, { name: 'tarred', content: DF }, [['ctx.tar', up]])),
      );
      const entries = await readTar((await builtContext(w, c, id))!);
      expect(entries.map((e) => [e.name, e.type, e.data.toString(), e.linkname ?? null])).toEqual([
        ['app', 'directory', '', null],
        ['app/main.py', 'file', 'print(1)\n', null],
        ['app/lib', 'directory', '', null],
        ['app/lib/x.txt', 'file', 'x', null],
        ['latest', 'symlink', '', 'app/main.py'],
      ]);
      expect(entries.find((e) => e.name === 'app/main.py')!.mode).toBe(0o755);
      expect(entries.find((e) => e.name === 'app/lib')!.mode).toBe(0o700);
    });

    const hostile: Array<[string, () => Promise<Buffer>, RegExp]> = [
      [
        '../x',
        () =>
          mkTar([
            { name: 'ok.txt', data: 'a' },
            { name: '../x', data: 'evil' },
          ]),
        /"\.\.\/x".*"\.\."/,
      ],
      ['a/../../x', () => mkTar([{ name: 'a/../../x', data: 'evil' }]), /"a\/\.\.\/\.\.\/x"/],
      ['/etc/x', () => mkTar([{ name: '/etc/x', data: 'evil' }]), /"\/etc\/x".*absolute/],
      [
        'a char device',
        () => mkTar([{ name: 'tty', type: 'character-device', devmajor: 5, devminor: 0 }]),
        /"tty" is a character device/,
      ],
      [
        'a block device',
        () => mkTar([{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }]),
        /"sda" is a block device/,
      ],
      [
        'a hard link',
        () =>
          mkTar([
            { name: 'a', data: 'a' },
            { name: 'b', type: 'link', linkname: 'a' },
          ]),
        /"b" is a hard link/,
      ],
      ['a fifo', () => mkTar([{ name: 'p', type: 'fifo' }]), /"p" is a FIFO/],
      [
        'a file under a symlink',
        () =>
          mkTar([
            { name: 'etc', type: 'symlink', linkname: '/etc' },
            { name: 'etc/passwd', data: 'x' },
          ]),
        /"etc\/passwd" is inside "etc", which is a symlink/,
      ],
      [
        'a duplicate name',
        () =>
          mkTar([
            { name: 'a', data: '1' },
            { name: './a', data: '2' },
          ]),
        /"\.\/a" appears twice/,
      ],
      ['a control character', () => mkTar([{ name: 'a\nb', data: '1' }]), /control character/],
      [
        'a NUL in a (pax) name',
        () => mkTar([{ name: 'a\0b', data: '1', pax: { comment: 'x' } }]),
        /"a\\u0000b": the name contains a NUL byte/,
      ],
      ['gzip', async () => Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]), /gzip/],
      ['garbage', async () => Buffer.alloc(1024, 0x41), /not a valid tar/],
      [
        'a truncated tar',
        async () => (await mkTar([{ name: 'big', data: Buffer.alloc(4096, 1) }])).subarray(0, 1500),
        /not a valid tar/,
      ],
    ];
    for (const [label, make, msg] of hostile) {
      it(`refuses a tar with ${label}: 422 naming the entry, nothing stored`, async () => {
        const before = await counts(w);
        const r = await c.postMultipart(
          '/dockerfiles',
          form(token, { name: 'hostile', content: DF }, [['ctx.tar', await make()]]),
        );
        expect(r.status).toBe(422);
        expect(/role="alert">([^<]*)</.exec(await plain(r))?.[1]).toMatch(msg);
        expect(await counts(w)).toEqual(before);
      });
    }

    it('refuses bad flat file names and duplicates with 422', async () => {
      const before = await counts(w);
      for (const [files, msg] of [
        [
          [
            ['a/b', 'x'],
            ['c', 'y'],
          ],
          /may not contain "\/"/,
        ],
        [
          [
            ['..', 'x'],
            ['c', 'y'],
          ],
          /not a file name/,
        ],
        [
          [
            ['same', 'x'],
            ['same', 'y'],
          ],
          /given twice/,
        ],
        [
          [
            ['x'.repeat(256), 'x'],
            ['c', 'y'],
          ],
          /longer than 255 bytes/,
        ],
        [
          [
            ['tab\there', 'x'],
            ['c', 'y'],
          ],
          /control characters/,
        ],
      ] as Array<[Array<[string, string]>, RegExp]>) {
        const r = await c.postMultipart('/dockerfiles', form(token, { name: 'badnames', content: DF }, files));
        expect(r.status, files[0]![0]).toBe(422);
        expect(await plain(r)).toMatch(msg);
      }
      expect(await counts(w)).toEqual(before);
    });

    it('too big: 16 MiB + 1 byte of files, or more than 2,000 entries, is refused with a clear message', async () => {
      const before = await counts(w);
      const big = await c.postMultipart(
        '/dockerfiles',
        form(token, { name: 'big', content: DF }, [
          ['a.bin', Buffer.alloc(8 * 1024 * 1024)],
          ['b.bin', Buffer.alloc(8 * 1024 * 1024 + 1)],
        ]),
      );
      expect(big.status).toBe(413);
      expect(await big.text()).toMatch(/larger than 16 MiB/);
      const bigTar = await mkTar([{ name: 'a.bin', data: Buffer.alloc(16 * 1024 * 1024 + 1) }]);
      const r2 = await c.postMultipart(
        '/dockerfiles',
        form(token, { name: 'big', content: DF }, [['ctx.tar', bigTar]]),
      );
      expect(r2.status).toBe(413);
      expect(await r2.text()).toMatch(/larger than 16 MiB/);
      const many = await mkTar(Array.from({ length: 2001 }, (_, i) => ({ name: `f${i}`, data: '' })));
      const r3 = await c.postMultipart('/dockerfiles', form(token, { name: 'many', content: DF }, [['ctx.tar', many]]));
      expect(r3.status).toBe(422);
      expect(await r3.text()).toMatch(/more than 2000 entries/);
      expect(await counts(w)).toEqual(before);
    });

    it('exactly 16 MiB of files is accepted and fits the job spec', async () => {
      const id = await created(
        await c.postMultipart(
          '/dockerfiles',
          form(token, { name: 'sixteen', content: DF }, [['a.bin', Buffer.alloc(16 * 1024 * 1024, 7)]]),
        ),
      );
      const entries = await readTar((await builtContext(w, c, id))!);
      expect(entries.map((e) => [e.name, e.data.length])).toEqual([['a.bin', 16 * 1024 * 1024]]);
      await w.db('dockerfiles').where({ id }).delete();
    });

    it('edit without a new context keeps it; a new one replaces it; "remove" drops it; a bad one changes nothing', async () => {
      const id = await created(
        await c.postMultipart('/dockerfiles', form(token, { name: 'edited', content: DF }, [['one.txt', '1']])),
      );
      const editToken = await c.token(`/dockerfiles/${id}/edit`);
      const edit = (fields: Record<string, string>, files: Array<[string, Buffer | string]> = []) =>
        c.postMultipart(`/dockerfiles/${id}`, form(editToken, fields, files));
      const names = async () =>
        (await readTar((await builtContext(w, c, id)) ?? Buffer.alloc(1024))).map((e) => e.name);

      expect((await edit({ content: `${DF}RUN true\n` })).status).toBe(303);
      expect(await names()).toEqual(['one.txt']);
      const editPage = await (await c.get(`/dockerfiles/${id}/edit`)).text();
      expect(editPage).toContain('name="removeContext"');

      // A refused edit keeps the Dockerfile and its context as they were.
      const before = await counts(w);
      const cur = (await w.db('dockerfiles').where({ id }).first()).current_version_id;
      const bad = await edit({ content: `${DF}# other\n` }, [['x.tar', await mkTar([{ name: '../x', data: 'e' }])]]);
      expect(bad.status).toBe(422);
      expect(await counts(w)).toEqual(before);
      expect((await w.db('dockerfiles').where({ id }).first()).current_version_id).toBe(cur);
      expect(await names()).toEqual(['one.txt']);
      const both = await edit({ content: DF, removeContext: 'on' }, [['two.txt', '2']]);
      expect(both.status).toBe(422);

      expect(
        (
          await edit({ content: DF }, [
            ['two.txt', '2'],
            ['three.txt', '3'],
          ])
        ).status,
      ).toBe(303);
      expect(await names()).toEqual(['two.txt', 'three.txt']);

      expect((await edit({ content: DF, removeContext: 'on' })).status).toBe(303);
      expect(await builtContext(w, c, id)).toBeUndefined();
      expect(await (await c.get(`/dockerfiles/${id}`)).text()).toMatch(/None: the build sees only the Dockerfile/);

      // Earlier builds keep the version (and context) they were requested with.
      const versions = await w.db('dockerfile_versions').where({ dockerfile_id: id }).orderBy('id');
      expect(versions.map((v) => v.context_id == null)).toEqual([false, false, false, true]);
    });

    it('JSON API: contextFiles, contextTarBase64, keep and removeContext', async () => {
      const t = await c.apiToken();
      const h = { 'x-csrf-token': t };
      const r = await c.postJson(
        '/api/dockerfiles',
        {
          name: 'api-ctx',
          content: DF,
          contextFiles: [{ name: 'a.txt', contentBase64: Buffer.from('A').toString('base64') }],
        },
        h,
      );
      expect(r.status).toBe(201);
      const id = ((await r.json()) as { dockerfile: { id: number } }).dockerfile.id;
      expect((await readTar((await builtContext(w, c, id))!)).map((e) => [e.name, e.data.toString()])).toEqual([
        ['a.txt', 'A'],
      ]);
      const tar = await mkTar([
        { name: 'd/', type: 'directory' },
        { name: 'd/b.txt', data: 'B' },
      ]);
      const u = await c.postJson(
        `/api/dockerfiles/${id}`,
        { content: DF, contextTarBase64: tar.toString('base64') },
        h,
      );
      expect(u.status).toBe(200);
      expect((await readTar((await builtContext(w, c, id))!)).map((e) => e.name)).toEqual(['d', 'd/b.txt']);
      expect((await c.postJson(`/api/dockerfiles/${id}`, { content: `${DF}# keep\n` }, h)).status).toBe(200);
      expect((await readTar((await builtContext(w, c, id))!)).map((e) => e.name)).toEqual(['d', 'd/b.txt']);
      const hostileTar = await mkTar([{ name: '/etc/shadow', data: 'x' }]);
      const bad = await c.postJson(
        `/api/dockerfiles/${id}`,
        { content: DF, contextTarBase64: hostileTar.toString('base64') },
        h,
      );
      expect(bad.status).toBe(422);
      expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/"\/etc\/shadow"/);
      const rm = await c.postJson(`/api/dockerfiles/${id}`, { content: DF, removeContext: true }, h);
      expect(((await rm.json()) as { version: { hasContext: boolean } }).version.hasContext).toBe(false);
      expect(((await (await c.get(`/api/dockerfiles/${id}`)).json()) as { context: unknown }).context).toBeNull();
      const big = await c.postJson(
        '/api/dockerfiles',
        {
          name: 'api-big',
          content: DF,
          contextFiles: [{ name: 'a', contentBase64: Buffer.alloc(16 * 1024 * 1024 + 1).toString('base64') }],
        },
        h,
      );
      expect(big.status).toBe(413);
      const anon = await w
        .client()
        .postJson('/api/dockerfiles', { name: 'x', content: DF, contextTarBase64: tar.toString('base64') });
      expect([401, 403]).toContain(anon.status);
    });

    it('file names are shown as text, never HTML', async () => {
      const id = await created(
        await c.postMultipart(
          '/dockerfiles',
          form(token, { name: 'xss-ctx', content: DF }, [
            ['<img src=x onerror=alert(1)>', 'x'],
            ['"quoted".txt', 'y'],
          ]),
        ),
      );
      const html = await (await c.get(`/dockerfiles/${id}`)).text();
      expect(html).not.toContain('<img src=x');
      expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    });

    it("another user cannot see or change A's context (404); an admin can see it", async () => {
      const id = await created(
        await c.postMultipart(
          '/dockerfiles',
          form(token, { name: 'private', content: DF }, [['secret.txt', 'top secret']]),
        ),
      );
      const bob = w.client();
      await signUpSure(bob, `bob${engine}`);
      expect((await bob.get(`/dockerfiles/${id}`)).status).toBe(404);
      expect((await bob.get(`/api/dockerfiles/${id}`)).status).toBe(404);
      expect((await bob.get(`/dockerfiles/${id}/edit`)).status).toBe(404);
      const bt = await bob.token('/dockerfiles/new');
      const before = await counts(w);
      expect(
        (await bob.postMultipart(`/dockerfiles/${id}`, form(bt, { content: DF, removeContext: 'on' }))).status,
      ).toBe(404);
      expect(
        (
          await bob.postJson(
            `/api/dockerfiles/${id}`,
            { content: DF, removeContext: true },
            { 'x-csrf-token': await bob.apiToken() },
          )
        ).status,
      ).toBe(404);
      expect(await counts(w)).toEqual(before);
      const root = await addUser(w.db, `root${engine}`, 'admin');
      const a = w.client();
      await loginSure(a, root.username, root.password);
      expect(await (await a.get(`/dockerfiles/${id}`)).text()).toContain('secret.txt');
    });

    it('leaves no temp file behind', () => {
      expect(tmpdir()).toBe(uploadsTmp.dir);
      expect(readdirSync(uploadsTmp.dir)).toEqual([]);
    });
  });
}

suite('sqlite');
suite('pg');

/** The whole path minus Docker: the real SSH glue and local backend receive the context (16 MiB fits its stdin cap). */
describe('build context through the real SSH glue', () => {
  let w: TestWeb & { realGlue: TestGlue };
  beforeAll(async () => {
    w = await startTestWeb({ realGlue: true });
  });
  afterAll(async () => {
    await w?.close();
  });

  it("a 16 MiB context arrives byte for byte as the job's context.tar", async () => {
    const c = w.client();
    await signUpSure(c, 'carol');
    const token = await c.token('/dockerfiles/new');
    const big = Buffer.alloc(16 * 1024 * 1024 - 100, 3);
    const id = await created(
      await c.postMultipart(
        '/dockerfiles',
        form(token, { name: 'real', content: DF }, [
          ['big.bin', big],
          ['small.txt', 'hello'],
        ]),
      ),
    );
    const { id: buildId } = await c.build(id);
    const row = await w.waitForBuild(buildId, (r) => r.backend_build !== null || r.state === 'failed');
    expect(row.state, String(row.reason)).not.toBe('failed');
    const file = path.join(findJobDir(w.realGlue!.dataDir, backendJobName(id)), 'context.tar');
    const entries = await readTar(readFileSync(file));
    expect(entries.map((e) => [e.name, e.data.length])).toEqual([
      ['big.bin', big.length],
      ['small.txt', 5],
    ]);
    expect(entries[0]!.data.equals(big)).toBe(true);
    const meta = ((await (await c.get(`/api/dockerfiles/${id}`)).json()) as { context: { sha256: string } }).context;
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(meta.sha256);
  });
});

function findJobDir(root: string, name: string): string {
  for (const e of readdirSync(root, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const p = path.join(root, e.name);
    if (e.name === name) return p;
    try {
      return findJobDir(p, name);
    } catch {
      /* not below here */
    }
  }
  throw new Error(`no ${name} under ${root}`);
}

describe('big uploads at once', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('a fifth body over 1 MiB while four are still arriving gets 429 + Retry-After; afterwards uploads work again', async () => {
    const c = w.client();
    await signUpSure(c, 'dave');
    const token = await c.token('/dockerfiles/new');
    const u = new URL(w.url);
    const open: http.ClientRequest[] = [];
    // Four uploads that declare 2 MiB and send only the start: they hold their slots.
    for (let i = 0; i < 4; i++) {
      const req = http.request({
        host: u.hostname,
        port: u.port,
        method: 'POST',
        path: '/dockerfiles',
        headers: {
          cookie: c.cookieHeader(),
          'content-type': 'multipart/form-data; boundary=xx',
          'content-length': String(2 * 1024 * 1024),
        },
      });
      req.on('error', () => undefined);
      req.write('--xx\r\n');
      open.push(req);
    }
    await new Promise((r) => setTimeout(r, 300));
    const big = await c.postMultipart(
      '/dockerfiles',
      form(token, { name: 'fifth', content: DF }, [['a.bin', Buffer.alloc(2 * 1024 * 1024)]]),
    );
    expect(big.status).toBe(429);
    expect(big.headers.get('retry-after')).toBe('5');
    for (const r of open) r.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const ok = await c.postMultipart(
      '/dockerfiles',
      form(token, { name: 'later', content: DF }, [['a.bin', Buffer.alloc(2 * 1024 * 1024)]]),
    );
    expect(ok.status).toBe(303);
  });
});
