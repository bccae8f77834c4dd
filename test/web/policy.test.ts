import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

/** The SDK's Dockerfile policy, run by the web when a Dockerfile is saved (src/dockerfile). */

const HOSTILE =
  [
    'FROM debian:bookworm',
    'ARG U=http://169.254.169.254/latest/meta-data/',
    'ADD $U /x',
    'ENV D=/proc/self/fd/7',
    'WORKDIR $D',
    'RUN echo "<b>bold</b>" & true',
  ].join('\n') + '\n';

async function counts(w: TestWeb) {
  const n = async (t: string) => Number((await w.db(t).count({ n: '*' }))[0]!.n);
  return { dockerfiles: await n('dockerfiles'), versions: await n('dockerfile_versions') };
}

function form(token: string, fields: Record<string, string>, file?: string): FormData {
  const f = new FormData();
  f.set('_csrf', token);
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  if (file !== undefined) f.set('file', new Blob([file]), 'Dockerfile');
  return f;
}

describe('saving a Dockerfile runs the policy', () => {
  let w: TestWeb;
  let c: HttpClient;
  let id: number;
  beforeAll(async () => {
    w = await startTestWeb({ config: { sdk: { bases: ['debian:bookworm', 'debian:trixie'], allowRemoteAdd: false } } });
    c = w.client();
    await c.signUp('alice');
    id = await c.createDockerfile('kept', 'ARG SUITE=bookworm\nFROM debian:${SUITE}\nRUN true\n');
  });
  afterAll(async () => {
    await w?.close();
  });

  it('case 39 and case 43 through the page: 422, findings next to their line numbers, text kept, nothing stored', async () => {
    const before = await counts(w);
    const r = await c.postMultipart(
      '/dockerfiles',
      form(await c.token('/dockerfiles/new'), { name: 'hostile', content: HOSTILE }),
    );
    expect(r.status).toBe(422);
    const html = await r.text();
    expect(await counts(w)).toEqual(before);
    expect(html).toContain('The Dockerfile policy refused this Dockerfile, so nothing was saved');
    expect(html).toMatch(
      /<a href="#df-line-3">line 3<\/a>: ADD of a remote URL \(http:\/\/169\.254\.169\.254\/latest\/meta-data\/, written \$U\)/,
    );
    expect(html).toMatch(/<a href="#df-line-5">line 5<\/a>: WORKDIR \/proc\/self\/fd\/7 is not allowed/);
    // The listing: each line with its number, the flagged ones carrying their finding.
    expect(html).toMatch(
      /<tr id="df-line-3" class="flagged">\s*<th scope="row">3<\/th>\s*<td><code>ADD \$U \/x<\/code><p class="finding">ADD of a remote URL/,
    );
    expect(html).toMatch(/<tr id="df-line-4">\s*<th scope="row">4<\/th>/);
    // Kept, and autoescaped like everything the user wrote.
    expect(html).toContain(`value="hostile"`);
    // (multipart sends the pasted lines with CRLF, as browsers do)
    expect(html).toMatch(/WORKDIR \$D\r?\nRUN echo &quot;&lt;b&gt;bold&lt;\/b&gt;&quot; &amp; true\r?\n<\/textarea>/);
    expect(html).not.toContain('<b>bold</b>');
    expect(html).not.toMatch(/<script(?! src=)|style=/);
  });

  it('keeps the text of an uploaded file too, and escapes what the findings quote', async () => {
    const xss = 'FROM debian:bookworm\nCOPY --from=<img/src/onerror=alert(1)> / /\n';
    const before = await counts(w);
    const r = await c.postMultipart('/dockerfiles', form(await c.token('/dockerfiles/new'), { name: 'uploaded' }, xss));
    expect(r.status).toBe(422);
    const html = await r.text();
    expect(await counts(w)).toEqual(before);
    expect(html).toContain('line 2</a>: COPY --from=&lt;img/src/onerror=alert(1)&gt; must name an earlier build stage');
    expect(html).toContain('COPY --from=&lt;img/src/onerror=alert(1)&gt; / /\n</textarea>');
    expect(html).not.toContain('<img');
  });

  it('through the JSON API: 422 policy_violation with the findings, nothing stored', async () => {
    const t = await c.apiToken();
    const before = await counts(w);
    const r = await c.postJson('/api/dockerfiles', { name: 'api-hostile', content: HOSTILE }, { 'x-csrf-token': t });
    expect(r.status).toBe(422);
    const body = (await r.json()) as {
      error: { code: string; message: string; findings: { line: number; message: string }[] };
    };
    expect(body.error.code).toBe('policy_violation');
    expect(body.error.message).toMatch(/^Dockerfile refused by policy:\n {2}line 3: ADD of a remote URL/);
    expect(body.error.findings.map((f) => f.line)).toEqual([3, 5]);
    expect(body.error.findings[1]!.message).toContain('WORKDIR /proc/self/fd/7 is not allowed');
    expect(await counts(w)).toEqual(before);
  });

  it('case 38: an edit that the policy refuses keeps the current version (page and API)', async () => {
    const cur = (await w.db('dockerfiles').where({ id }).first()).current_version_id;
    const before = await counts(w);
    const page = await c.postMultipart(
      `/dockerfiles/${id}`,
      form(await c.token(`/dockerfiles/${id}/edit`), {
        content: '# syntax=evil/frontend:latest\nFROM debian:bookworm\n',
      }),
    );
    expect(page.status).toBe(422);
    const html = await page.text();
    expect(html).toContain('line 1</a>: `# syntax=` directives are not allowed');
    console.log(html);
    expect(html).toMatch(/># syntax=evil\/frontend:latest\r?\nFROM debian:bookworm\r?\n<\/textarea>/);
    const api = await c.postJson(
      `/api/dockerfiles/${id}`,
      { content: 'FROM debian:bookworm AS a\nONBUILD COPY --from=registry.example/x / /\nFROM a\n' },
      { 'x-csrf-token': await c.apiToken() },
    );
    expect(api.status).toBe(422);
    expect(
      ((await api.json()) as { error: { findings: { line: number }[] } }).error.findings.map((f) => f.line),
    ).toEqual([2]);
    expect(await counts(w)).toEqual(before);
    expect((await w.db('dockerfiles').where({ id }).first()).current_version_id).toBe(cur);
  });

  it('stores what passes: an ARG that resolves to an allowed base, variables in COPY and WORKDIR', async () => {
    const ok =
      'ARG SUITE=trixie\nFROM debian:$SUITE\nENV APP=/srv/app\nARG SRC=app\nCOPY $SRC $APP\nWORKDIR $APP\nRUN echo $HOME\n';
    const r = await c.postJson(
      '/api/dockerfiles',
      { name: 'fine', content: ok },
      { 'x-csrf-token': await c.apiToken() },
    );
    expect(r.status).toBe(201);
  });
});
