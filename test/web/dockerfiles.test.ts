import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedTmpdir } from '../helpers/tmp.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const GOOD = 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y linux-image-amd64 systemd-sysv\n';

async function counts(w: TestWeb) {
  const n = async (t: string) => Number((await w.db(t).count({ n: '*' }))[0]!.n);
  return { dockerfiles: await n('dockerfiles'), versions: await n('dockerfile_versions'), builds: await n('builds') };
}

function upload(
  c: HttpClient,
  token: string,
  name: string,
  file: Uint8Array | string | null,
  content?: string,
  filename = 'Dockerfile',
) {
  const f = new FormData();
  f.set('_csrf', token);
  f.set('name', name);
  if (content !== undefined) f.set('content', content);
  if (file !== null) f.set('file', new Blob([file as BlobPart]), filename);
  return c.postMultipart('/dockerfiles', f);
}

describe('Dockerfile input', () => {
  let w: TestWeb;
  let c: HttpClient;
  let token: string;
  // Uploads run with a temp directory of their own: a stray upload file would show there, and nothing else writes it.
  const uploadsTmp = isolatedTmpdir();
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { quotaDockerfiles: 3 } } });
    c = w.client();
    await c.signUp('alice');
    token = await c.token('/dockerfiles/new');
    uploadsTmp.use();
  });
  afterAll(async () => {
    await w?.close();
    uploadsTmp.restore();
  });

  it('case 18: stores a pasted Dockerfile (CRLF normalised) and an uploaded one', async () => {
    const r = await upload(c, token, 'pasted', null, GOOD.replace(/\n/g, '\r\n'));
    expect(r.status).toBe(303);
    const r2 = await upload(c, token, 'uploaded', Buffer.from(GOOD), undefined, '../../etc/passwd');
    expect(r2.status).toBe(303);
    const rows = await w.db('dockerfile_versions').select('content');
    expect(rows.map((x) => x.content)).toEqual([GOOD, GOOD]);
    const names = (await w.db('dockerfiles').select('name')).map((x) => x.name).sort();
    expect(names).toEqual(['pasted', 'uploaded']);
  });

  const rejections: Array<[string, () => [string, Uint8Array | string | null, string | undefined], number, RegExp]> = [
    ['empty text', () => ['empty1', null, ''], 422, /empty/],
    ['whitespace only', () => ['empty2', null, '  \n\t\n'], 422, /empty/],
    ['empty file', () => ['empty3', new Uint8Array(0), undefined], 422, /empty/],
    [
      'not UTF-8 (\\xff\\xfe)',
      () => ['bad-utf8', Uint8Array.from([0xff, 0xfe, 0x46, 0x52]), undefined],
      422,
      /not valid UTF-8/,
    ],
    ['overlong UTF-8', () => ['bad-utf8b', Uint8Array.from([0x46, 0xc0, 0xaf]), undefined], 422, /not valid UTF-8/],
    ['NUL in file', () => ['nul', Buffer.from('FROM x\0\n'), undefined], 422, /NUL/],
    ['NUL in pasted text', () => ['nul2', null, 'FROM x\0\n'], 422, /NUL/],
    ['bare CR', () => ['cr', Buffer.from('FROM x\rRUN id\n'), undefined], 422, /carriage return/],
    ['ESC control', () => ['esc', Buffer.from('FROM x\n\x1b[31mRUN id\n'), undefined], 422, /control character/],
    ['64 KiB + 1 byte file', () => ['big', Buffer.alloc(64 * 1024 + 1, 0x41), undefined], 413, /too large|larger/],
    ['64 KiB + 1 byte pasted', () => ['big2', null, 'A'.repeat(64 * 1024 + 1)], 413, /larger/],
    ['name with uppercase', () => ['Bad', null, GOOD], 422, /Name must be/],
    ['name with slash', () => ['a/b', null, GOOD], 422, /Name must be/],
    ['name too long', () => ['a'.repeat(64), null, GOOD], 422, /Name must be/],
    ['name empty', () => ['', null, GOOD], 422, /Name is required/],
    ['name ../x', () => ['../x', null, GOOD], 422, /Name must be/],
    ['file and text both', () => ['both', Buffer.from(GOOD), GOOD], 422, /either a file or pasted text/],
  ];
  for (const [label, make, status, msg] of rejections) {
    // The checklist case each rejection belongs to: sizes are 16, encodings and control characters 18.
    const caseNo = status === 413 ? 16 : /UTF-8|NUL|CR|ESC/.test(label) ? 18 : 0;
    it(`${caseNo ? `case ${caseNo}: ` : ''}rejects ${label} with ${status} and stores nothing`, async () => {
      const before = await counts(w);
      const [name, file, content] = make();
      const r = await upload(c, token, name, file, content);
      expect(r.status).toBe(status);
      expect(await r.text()).toMatch(msg);
      expect(await counts(w)).toEqual(before);
    });
  }

  it('case 16: exactly 64 KiB is accepted', async () => {
    const body = 'FROM debian:bookworm\n#' + 'x'.repeat(64 * 1024 - 23) + '\n';
    expect(Buffer.byteLength(body)).toBe(64 * 1024);
    const r = await upload(c, token, 'exact', Buffer.from(body));
    expect(r.status).toBe(303);
    await w.db('dockerfiles').where({ name: 'exact' }).delete();
  });

  it('case 17: refuses two files or 1,000 fields before buffering', async () => {
    const before = await counts(w);
    const f = new FormData();
    f.set('_csrf', token);
    f.set('name', 'two');
    f.append('file', new Blob([GOOD]), 'a');
    f.append('file', new Blob([GOOD]), 'b');
    expect([400, 413]).toContain((await c.postMultipart('/dockerfiles', f)).status);
    const g = new FormData();
    g.set('_csrf', token);
    for (let i = 0; i < 1000; i++) g.append(`f${i}`, 'x');
    expect([400, 413]).toContain((await c.postMultipart('/dockerfiles', g)).status);
    expect(await counts(w)).toEqual(before);
  });

  it('case 16: leaves no temp file behind', () => {
    expect(tmpdir()).toBe(uploadsTmp.dir);
    expect(readdirSync(uploadsTmp.dir)).toEqual([]);
  });

  it('case 18: JSON API: same rules, exact bytes via base64', async () => {
    const t = await c.apiToken();
    const before = await counts(w);
    const bad = await c.postJson(
      '/api/dockerfiles',
      { name: 'api-bad', contentBase64: Buffer.from([0xff, 0xfe]).toString('base64') },
      { 'x-csrf-token': t },
    );
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/UTF-8/);
    const big = await c.postJson(
      '/api/dockerfiles',
      { name: 'api-big', content: 'A'.repeat(64 * 1024 + 1) },
      { 'x-csrf-token': t },
    );
    expect(big.status).toBe(413);
    const lone = await c.postJson(
      '/api/dockerfiles',
      { name: 'api-lone', content: 'FROM x\n\ud800' },
      { 'x-csrf-token': t },
    );
    expect(lone.status).toBe(422);
    expect(await counts(w)).toEqual(before);
  });

  it('case 20: duplicate name => 409; quota+1 => 409, nothing stored', async () => {
    const dup = await upload(c, token, 'pasted', null, GOOD);
    expect(dup.status).toBe(409);
    expect(await upload(c, token, 'third', null, GOOD)).toHaveProperty('status', 303);
    const before = await counts(w);
    const over = await upload(c, token, 'fourth', null, GOOD);
    expect(over.status).toBe(409);
    expect(await over.text()).toMatch(/limit of 3 Dockerfiles/);
    expect(await counts(w)).toEqual(before);
  });

  it('case 20: parallel uploads never exceed the quota', async () => {
    const c2 = w.client();
    await c2.signUp('para');
    const t = await c2.token('/dockerfiles/new');
    const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => upload(c2, t, `p${i}`, null, GOOD)));
    const ok = rs.filter((r) => r.status === 303).length;
    expect(ok).toBe(3);
    expect(rs.filter((r) => r.status === 409).length).toBe(7);
    const uid = (await w.db('users').where({ username: 'para' }).first()).id;
    expect(Number((await w.db('dockerfiles').where({ owner_id: uid }).count({ n: '*' }))[0]!.n)).toBe(3);
  });

  it('case 10: without a CSRF token => 403, nothing stored', async () => {
    const before = await counts(w);
    const r = await upload(c, 'not-the-token', 'nocsrf', null, GOOD);
    expect(r.status).toBe(403);
    const f = new FormData();
    f.set('name', 'nocsrf2');
    f.set('content', GOOD);
    expect((await c.postMultipart('/dockerfiles', f)).status).toBe(403);
    const j = await c.postJson('/api/dockerfiles', { name: 'nocsrf3', content: GOOD });
    expect(j.status).toBe(403);
    expect(await counts(w)).toEqual(before);
  });

  it('case 10: cross-site POST with a valid token is refused by the Origin / Sec-Fetch-Site check', async () => {
    const before = await counts(w);
    const form = (name: string) => {
      const f = new FormData();
      f.set('_csrf', token);
      f.set('name', name);
      f.set('content', GOOD);
      return f;
    };
    expect((await c.postMultipart('/dockerfiles', form('xs1'), { origin: 'https://evil.example' })).status).toBe(403);
    expect((await c.postMultipart('/dockerfiles', form('xs2'), { 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await c.postMultipart('/dockerfiles', form('xs3'), { origin: 'null' })).status).toBe(403);
    expect((await counts(w)).dockerfiles).toBe(before.dockerfiles);
  });

  it("case 11: another user's CSRF token does not work with my session", async () => {
    const b = w.client();
    await b.signUp('bob');
    const bToken = await b.token('/dockerfiles/new');
    const r = await upload(c, bToken, 'stolen', null, GOOD);
    expect(r.status).toBe(403);
  });

  it('anonymous upload is refused before parsing', async () => {
    const anon = w.client();
    const t = await anon.token('/login');
    const r = await upload(anon, t, 'anon', null, GOOD);
    expect(r.status).toBe(401);
    expect((await anon.get('/dockerfiles/new')).headers.get('location')).toBe('/login?next=%2Fdockerfiles%2Fnew');
  });
});

describe('Dockerfile display: stored XSS is shown as text', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 14: escapes script and attribute-breaking payloads for the owner and for an admin', async () => {
    const payload =
      'FROM debian:bookworm\nLABEL a="<script>alert(1)</script>"\nLABEL b="\\"><img src=x onerror=alert(2)>"\n';
    const c = w.client();
    await c.signUp('mallory');
    const id = await c.createDockerfile('xss', payload);
    const { addUser } = await import('../helpers/web.js');
    const admin = await addUser(w.db, 'root', 'admin');
    const a = w.client();
    expect((await a.login(admin.username, admin.password)).status).toBe(303);
    for (const viewer of [c, a]) {
      const html = await (await viewer.get(`/dockerfiles/${id}`)).text();
      expect(html).not.toContain('<script>alert(1)</script>');
      expect(html).not.toContain('<img src=x');
      expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
      expect(html).toContain('&lt;img src=x onerror=alert(2)&gt;');
    }
    const raw = await c.get(`/dockerfiles/${id}/raw`);
    expect(raw.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(raw.headers.get('content-disposition')).toMatch(/^attachment;/);
    expect(raw.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await raw.text()).toBe(payload);
  });
});

describe('Dockerfile edits make versions; builds keep theirs', () => {
  let w: TestWeb;
  beforeAll(async () => {
    w = await startTestWeb();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('edit -> new version, old build still points at the old one; bad edits and other users change nothing', async () => {
    const a = w.client();
    await a.signUp('alice');
    const id = await a.createDockerfile('web', GOOD);
    const first = await a.build(id);
    const v1 = (await w.db('builds').where({ id: first.id }).first()).version_id;
    const t = await a.token(`/dockerfiles/${id}/edit`);
    const f = new FormData();
    f.set('_csrf', t);
    f.set('content', GOOD + 'RUN echo v2\n');
    expect((await a.postMultipart(`/dockerfiles/${id}`, f)).status).toBe(303);
    const second = await a.build(id);
    const v2 = (await w.db('builds').where({ id: second.id }).first()).version_id;
    expect(v2).not.toBe(v1);
    expect((await w.db('dockerfile_versions').where({ id: v1 }).first()).content).toBe(GOOD);
    expect((await w.db('dockerfile_versions').where({ id: v2 }).first()).content).toBe(GOOD + 'RUN echo v2\n');
    const n = async () => Number((await w.db('dockerfile_versions').count({ n: '*' }))[0]!.n);
    const before = await n();
    const bad = new FormData();
    bad.set('_csrf', t);
    bad.set('file', new Blob([Uint8Array.from([0x46, 0x00])]), 'x');
    const r = await a.postMultipart(`/dockerfiles/${id}`, bad);
    expect(r.status).toBe(422);
    expect(await r.text()).toContain('NUL');
    const at = await a.apiToken();
    expect(
      (await a.postJson(`/api/dockerfiles/${id}`, { content: GOOD + 'RUN echo v2\n' }, { 'x-csrf-token': at })).status,
    ).toBe(200);
    expect(await n()).toBe(before);
    const b = w.client();
    await b.signUp('bob');
    const bt = await b.apiToken();
    expect(
      (await b.postJson(`/api/dockerfiles/${id}`, { content: 'FROM evil\n' }, { 'x-csrf-token': bt })).status,
    ).toBe(404);
    expect((await b.get(`/dockerfiles/${id}/edit`)).status).toBe(404);
    expect(await n()).toBe(before);
  });
});
