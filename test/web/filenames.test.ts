import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedTmpdir } from '../helpers/tmp.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

const DF = 'FROM debian:bookworm\nRUN true\n';

/** The hostile client file names of checklist case 19 (and a few more controls). */
const HOSTILE: Array<[string, string]> = [
  ['../../etc/passwd', '../../etc/passwd'],
  ['Dockerfile\\u202e (right-to-left override)', 'Dockerfile\u202e'],
  ['txt.\\u202egpj.exe', 'txt.\u202egpj.exe'],
  ['a 4 KiB name', `${'n'.repeat(4096)}`],
  ['a control character (\\x01)', 'Docker\x01file'],
  ['an escape sequence', 'Docker\x1b[31mfile'],
  ['a C1 control (\\x85)', 'Docker\u0085file'],
  ['a first-strong isolate (\\u2068)', 'Docker\u2068file'],
  ['an absolute path', '/etc/shadow'],
];

async function tarOf(name: string): Promise<Buffer> {
  const p = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    p.on('end', resolve);
  });
  p.entry({ name, mode: 0o644 }, Buffer.from('x'));
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/**
 * The new-Dockerfile form with a file whose name travels as RFC 5987 `filename*` (percent-encoded UTF-8), the form
 * in which a client can send any character, controls included, and the parser hands it over decoded.
 */
function postFile(c: HttpClient, token: string, name: string, filename: string): Promise<Response> {
  const b = `kilnboundary${Math.random().toString(36).slice(2)}`;
  const enc = [...Buffer.from(filename, 'utf8')].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('');
  const body = [
    `--${b}\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\n${token}\r\n`,
    `--${b}\r\nContent-Disposition: form-data; name="name"\r\n\r\n${name}\r\n`,
    `--${b}\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8''${enc}\r\nContent-Type: application/octet-stream\r\n\r\n${DF}\r\n`,
    `--${b}--\r\n`,
  ].join('');
  return c.request('/dockerfiles', {
    method: 'POST',
    body,
    headers: { 'content-type': `multipart/form-data; boundary=${b}` },
  });
}

describe('client file names are never trusted (case 19)', () => {
  let w: TestWeb;
  let c: HttpClient;
  let token: string;
  const uploadsTmp = isolatedTmpdir('kiln-test-names-tmp-');
  const count = async (t: string): Promise<number> => Number((await w.db(t).count({ n: '*' }))[0]!.n);
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { quotaDockerfiles: 1000 } } });
    c = w.client();
    await c.signUp('alice');
    token = await c.token('/dockerfiles/new');
    uploadsTmp.use();
  });
  afterAll(async () => {
    await w?.close();
    uploadsTmp.restore();
  });

  HOSTILE.forEach(([label, filename], i) => {
    it(`case 19: a Dockerfile uploaded as ${label} is stored under its server id; the file name is used nowhere`, async () => {
      const r = await postFile(c, token, `upload${i}`, filename);
      expect(r.status).toBe(303);
      const id = Number(/\/dockerfiles\/(\d+)$/.exec(r.headers.get('location') ?? '')![1]);
      const row = await w.db('dockerfiles').where({ id }).first();
      expect(row.name).toBe(`upload${i}`);
      const v = await w.db('dockerfile_versions').where({ id: row.current_version_id }).first();
      expect(v.content).toBe(DF);
      const raw = await c.get(`/dockerfiles/${id}/raw`);
      expect(raw.headers.get('content-disposition')).toBe(`attachment; filename="kiln-dockerfile-${id}"`);
      const page = await (await c.get(`/dockerfiles/${id}`)).text();
      const api = JSON.stringify(await (await c.get(`/api/dockerfiles/${id}`)).json());
      for (const shown of [page, api]) {
        expect(shown).not.toContain(filename);
        expect(shown).not.toContain('\u202e');
      }
    });
  });

  HOSTILE.forEach(([label, filename]) => {
    it(`case 19: a build context file named ${label} is refused with 422, as a flat file and inside a tar; nothing stored`, async () => {
      const before = { dockerfiles: await count('dockerfiles'), contexts: await count('dockerfile_contexts') };
      const flat = await c.postJson(
        '/api/dockerfiles',
        { name: 'ctx', content: DF, contextFiles: [{ name: filename, contentBase64: 'eA==' }] },
        { 'x-csrf-token': await c.apiToken() },
      );
      expect(flat.status).toBe(422);
      const tar = await c.postJson(
        '/api/dockerfiles',
        { name: 'ctx', content: DF, contextTarBase64: (await tarOf(filename)).toString('base64') },
        { 'x-csrf-token': await c.apiToken() },
      );
      expect(tar.status).toBe(422);
      for (const r of [flat, tar]) {
        const msg = ((await r.json()) as { error: { message: string } }).error.message;
        expect(msg).toMatch(/Build context (file|entry)/);
        // The message quotes the name with its tricks made visible, never acting on the page.
        // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
        expect(msg).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
        expect(msg.length).toBeLessThan(600);
      }
      expect({ dockerfiles: await count('dockerfiles'), contexts: await count('dockerfile_contexts') }).toEqual(before);
    });
  });

  it('case 19: a raw control character inside the multipart header is a malformed upload (400), nothing stored', async () => {
    const before = await count('dockerfiles');
    const f = new FormData();
    f.set('_csrf', token);
    f.set('name', 'raw-control');
    f.set('file', new Blob([DF]), 'Docker\x01file');
    const r = await c.postMultipart('/dockerfiles', f);
    expect(r.status).toBe(400);
    expect(await r.text()).toContain('malformed');
    expect(await count('dockerfiles')).toBe(before);
  });

  it('case 19: nothing was written to the temp directory by any of these uploads', () => {
    expect(tmpdir()).toBe(uploadsTmp.dir);
    expect(readdirSync(uploadsTmp.dir)).toEqual([]);
  });
});
