/**
 * An HTTP fuzzer over every route of the web (app.locals.routeTable), as anonymous, a user and an admin with real
 * sessions, a real SQLite database and the real glue (built-in SSH door, local backend, fake SDK). Each case is
 * drawn from its own seed (derived from the run's seed), so any case can be replayed alone. It sends random
 * methods, headers (Content-Type, lying Content-Length, chunked, Origin/Sec-Fetch-Site, Range, huge or odd
 * cookies), bodies (JSON, deep nesting, huge numbers, multipart, urlencoded, garbage) and ids (0, -1, 1e309,
 * 2^53, %00, ..%2f, unicode). The invariant: no answer of 500 or above, and the process stays up and healthy.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { ARTIFACT_NAMES } from '../../src/protocol/index.js';
import type { Db } from '../../src/db/index.js';
import { Prng } from '../helpers/prng.js';
import { waitForBuild } from '../helpers/serve.js';
import { ApiClient, HttpClient, addToken, addUser, startTestWeb } from '../helpers/web.js';
import { sendRaw, type RawRequest, type RawResponse } from './raw-http.js';

export interface FuzzOptions {
  seed: number;
  cases: number;
  /** Requests in flight at once. */
  concurrency?: number;
  /** Replay exactly these cases (their seeds, as a report prints them) instead of drawing `cases` new ones. */
  replay?: number[];
  progress?: (line: string) => void;
}

export interface FuzzFinding {
  caseSeed: number;
  request: string;
  status?: number;
  body: string;
  logs: string[];
}

export interface FuzzReport {
  seed: number;
  cases: number;
  /** Answers by status; `none` = no answer before the connection ended (a lying length the server gave up on). */
  statuses: Record<string, number>;
  fiveXX: FuzzFinding[];
  /** Uncaught exceptions or unhandled rejections in this process while fuzzing (the web runs in it). */
  crashes: string[];
  /** Health probes that failed (GET /login not 200, or the server not answering). */
  unhealthy: string[];
  routes: number;
  /** Cases that took more than 3 s (a server waiting for bytes that never come), for the report. */
  slow: string[];
  /** Whole, well-framed requests that got no answer at all (a lying length may rightly get none). */
  unanswered: string[];
}

type Role = 'anon' | 'user' | 'admin';
const ROLES: readonly Role[] = ['anon', 'user', 'admin'];

/** Ids and names as an attacker writes them into a path (already as they appear on the request line). */
const HOSTILE_IDS = [
  '0',
  '-1',
  '1e309',
  '9007199254740992',
  '9007199254740993',
  '%00',
  '1%00',
  '..%2f',
  '..%2F..%2Fetc%2Fpasswd',
  '%2e%2e',
  '%C3%A9',
  '%F0%9F%A6%8A',
  '%',
  '%zz',
  '%E0%A4%A',
  '9'.repeat(400),
  '%20',
  '1;2',
  '1.0',
  '0x10',
  '+1',
  '1e3',
  'NaN',
  'Infinity',
  '__proto__',
  'constructor',
  'toString',
  '1/2',
  '01',
  '１',
  '%EF%BC%91',
  '999999999999',
  '1000000000000',
];
const HOSTILE_NAMES = [
  '..%2fimage.raw',
  'image.raw%00',
  'image.raw%00.txt',
  '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  'IMAGE.RAW',
  'argv.txt',
  'build.json',
  '.',
  '..',
  '%2e',
  'image.raw%2F',
  'a'.repeat(300),
  '%E2%80%AEwar.raw',
];
const EXTRA_ROUTES = [
  'GET /static/build.js',
  'GET /static/%2e%2e/%2e%2e/package.json',
  'GET /static/..%2f..%2fpackage.json',
  'GET /favicon.ico',
  'GET /nope',
  'POST /api/nope',
  'GET /dockerfiles/1/../../../etc/passwd',
  'GET //api//builds//1',
  'GET /api/builds/:id/log',
  'GET /builds/:id/artifacts/:name',
  'OPTIONS *',
  'GET http://evil.example/api/me',
];
const METHODS = [
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'HEAD',
  'OPTIONS',
  'TRACE',
  'PROPFIND',
  'CONNECT',
  'FOO',
  'get',
];
const FIELDS = [
  'name',
  'content',
  'contentBase64',
  'contextTarBase64',
  'contextFiles',
  'removeContext',
  'key',
  'username',
  'password',
  'password2',
  'current',
  'next',
  'offset',
  '_csrf',
  'file',
  'context',
  'role',
  'admin',
  'id',
  'owner_id',
  'dockerfile',
  'settings',
  'confirm',
];
const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=utf-16',
  'application/json; charset=ucs-2',
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=utf-7',
  'multipart/form-data',
  'multipart/form-data; boundary=',
  'multipart/form-data; boundary="a b"',
  'text/plain',
  'application/octet-stream',
  'a/b',
  '*/*',
  'application/vnd.api+json',
  'application/json, text/html',
  '',
  'application/json\u00e9',
];
const RANGES = [
  'bytes=0-',
  'bytes=0-0',
  'bytes=-5',
  'bytes=5-1',
  'bytes=0-1,2-3',
  'bytes=99999999999999999999-',
  'bytes=1e3-',
  'items=0-1',
  'bytes=',
  'bytes=-',
  'bytes=0-9007199254740993',
  'bytes=18446744073709551615-',
];
const ORIGINS = [
  'same',
  'same',
  'null',
  'http://evil.example',
  'http://127.0.0.1',
  'https://127.0.0.1:1',
  'garbage\u00ff',
];
const SITES = ['same-origin', 'none', 'cross-site', 'same-site', '', 'SAME-ORIGIN'];
const DOCKERFILES = [
  'FROM debian:bookworm\nRUN true\n',
  'FROM debian:bookworm\n# fake: fail\n',
  '',
  '\u0000',
  'FROM x\r\nRUN y\r',
  'FROM debian:bookworm\n' + 'RUN true\n'.repeat(10_000),
  '\ufeffFROM debian:bookworm\n',
  'FROM scratch\nADD http://10.0.0.1/x /\n',
];

/** A JSON value, or raw JSON text no serializer writes (1e309, -0, deep nesting, a BOM, broken text). */
const jsonValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    2 ** 53,
    -1,
    0,
    1e308,
    -1e308,
    Number.MAX_SAFE_INTEGER + 2,
    '',
    'x'.repeat(70_000),
    [],
    {},
    null,
    true,
  ),
  fc.constantFrom(...DOCKERFILES),
  fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a).toString('base64')),
  fc.array(
    fc.record({
      name: fc.oneof(fc.string(), fc.constantFrom('../x', 'a/b', '.', '\u0000')),
      contentBase64: fc.oneof(fc.string(), fc.constant('AAAA')),
    }),
    { maxLength: 4 },
  ),
);
const RAW_JSON = (() => {
  const deep = (n: number, open: string, close: string) => open.repeat(n) + close.repeat(n);
  return [
    '{"key": 1e309}',
    '{"offset": 123456789012345678901234567890}',
    '{"key": -0}',
    '{"name": 1e-400, "content": 1.7976931348623157e309}',
    deep(100_000, '[', ']'),
    deep(20_000, '{"a":', '}').replace(/\{"a":\}/, '{"a":1}'),
    `{"content":${deep(5000, '[', ']')}}`,
    '{"__proto__": {"role": "admin"}, "name": "x", "content": "FROM debian:bookworm\\n"}',
    '{"constructor": {"prototype": {"admin": true}}}',
    '\ufeff{}',
    '{',
    '{"a":"\\ud800"}',
    '{"a":"\\u0000"}',
    'null',
    '"just a string"',
    '[]',
    '1',
    '{"key":' + '"k'.repeat(1) + 'x'.repeat(60) + '"}',
  ];
})();

interface Case {
  role: Role;
  route: number;
  method: string | null;
  params: string[];
  query: string;
  contentType: string | null;
  body: { type: string | null; body: Buffer | null };
  framing: RawRequest['framing'];
  csrf: 'valid' | 'missing' | 'wrong' | 'other';
  origin: string | null;
  site: string | null;
  range: string | null;
  cookie: 'session' | 'none' | 'huge' | 'odd' | 'tampered' | 'twice';
  host: 'ok' | 'evil' | 'missing';
  extra: Array<[string, string]>;
}

function multipart(
  fields: Array<[string, string, string | null]>,
  broken: 'no' | 'no-end' | 'bad-boundary' | 'lf',
): { type: string; body: Buffer } {
  const boundary = `----kilnfuzz${randomBytes(6).toString('hex')}`;
  let text =
    fields
      .map(
        ([n, v, filename]) =>
          `--${boundary}\r\nContent-Disposition: form-data; name="${n}"${filename !== null ? `; filename="${filename}"` : ''}\r\n` +
          `${filename !== null ? 'Content-Type: application/octet-stream\r\n' : ''}\r\n${v}\r\n`,
      )
      .join('') + (broken === 'no-end' ? '' : `--${boundary}--\r\n`);
  if (broken === 'lf') text = text.replaceAll('\r\n', '\n');
  return {
    type: `multipart/form-data; boundary=${broken === 'bad-boundary' ? 'other' : boundary}`,
    body: Buffer.from(text, 'latin1'),
  };
}

const bodyArb: fc.Arbitrary<{ type: string | null; body: Buffer | null }> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ type: null, body: null }) },
  {
    weight: 4,
    arbitrary: fc
      .dictionary(fc.constantFrom(...FIELDS), jsonValue, { maxKeys: 5 })
      .map((o) => ({ type: 'application/json', body: Buffer.from(JSON.stringify(o)) })),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(...RAW_JSON).map((t) => ({ type: 'application/json', body: Buffer.from(t) })),
  },
  {
    weight: 1,
    arbitrary: fc
      .jsonValue({ maxDepth: 5 })
      .map((v) => ({ type: 'application/json', body: Buffer.from(JSON.stringify(v) ?? 'null') })),
  },
  {
    weight: 3,
    arbitrary: fc
      .array(
        fc.tuple(
          fc.oneof(fc.constantFrom(...FIELDS, 'a[b]', 'a[b][c]', '__proto__[x]', 'key[]'), fc.string({ maxLength: 8 })),
          fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom(...DOCKERFILES.slice(0, 5))),
        ),
        { maxLength: 30 },
      )
      .map((pairs) => ({
        type: 'application/x-www-form-urlencoded',
        body: Buffer.from(pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')),
      })),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.array(
          fc.tuple(
            fc.constantFrom(...FIELDS, 'x'),
            fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom(...DOCKERFILES.slice(0, 5))),
            fc.option(
              fc.constantFrom(
                'Dockerfile',
                'ctx.tar',
                '../../etc/passwd',
                'a/b',
                '',
                '\u202eexe.txt',
                'x'.repeat(300),
                'é.txt',
                '.',
              ),
              { nil: null },
            ),
          ),
          { maxLength: 6 },
        ),
        fc.constantFrom<'no' | 'no-end' | 'bad-boundary' | 'lf'>('no', 'no', 'no-end', 'bad-boundary', 'lf'),
      )
      .map(([f, broken]) => multipart(f, broken)),
  },
  {
    weight: 2,
    arbitrary: fc
      .uint8Array({ maxLength: 4096 })
      .map((a) => ({ type: 'application/octet-stream', body: Buffer.from(a) })),
  },
  {
    weight: 1,
    arbitrary: fc.constant(null).map(() => ({ type: 'application/json', body: Buffer.alloc(1_500_000, 0x20) })),
  },
);

/** Mostly well-formed requests (so handlers, not only the front door, see hostile values), some of everything else. */
const often = <T>(usual: fc.Arbitrary<T>, rare: fc.Arbitrary<T>, usualWeight = 4): fc.Arbitrary<T> =>
  fc.oneof({ weight: usualWeight, arbitrary: usual }, { weight: 1, arbitrary: rare });

const caseArb = (routes: number): fc.Arbitrary<Case> =>
  fc.record({
    role: fc.constantFrom(...ROLES),
    route: fc.nat({ max: routes - 1 }),
    method: often(fc.constant(null), fc.constantFrom(...METHODS), 6),
    params: fc.array(
      fc.oneof(
        {
          weight: 6,
          arbitrary: fc.constantFrom('$own-df', '$own-build', '$other-df', '$other-build', '$running-build', '$name'),
        },
        { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_IDS, ...HOSTILE_NAMES) },
        { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }).map((s) => encodeURIComponent(s)) },
      ),
      { minLength: 2, maxLength: 2 },
    ),
    query: fc.oneof(
      { weight: 5, arbitrary: fc.constant('') },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          '?offset=0',
          '?offset=-1',
          '?offset=1e309',
          '?offset[]=1',
          '?offset[a]=b',
          '?offset=0&offset=1',
          '?next=//evil.example',
          '?next=https://evil.example',
          '?next=/%0d%0aSet-Cookie:x',
          '?changed=1',
          '?%00=%00',
          `?${'a=1&'.repeat(2000)}`,
          '?offset=9007199254740993',
        ),
      },
      {
        weight: 1,
        arbitrary: fc
          .dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 10 }), { maxKeys: 4 })
          .map((d) => `?${new URLSearchParams(d).toString()}`),
      },
    ),
    contentType: often(fc.constant(null), fc.constantFrom(...CONTENT_TYPES)),
    body: bodyArb,
    framing: often(
      fc.constant<RawRequest['framing']>('length'),
      fc.constantFrom<RawRequest['framing']>('chunked', 'chunked', 'chunked-broken', 'cl-short', 'cl-long', 'none'),
      3,
    ),
    csrf: often(fc.constant<Case['csrf']>('valid'), fc.constantFrom<Case['csrf']>('missing', 'wrong', 'other')),
    origin: often(fc.constant(null), fc.constantFrom(...ORIGINS), 3),
    site: often(fc.constant(null), fc.constantFrom(...SITES), 3),
    range: often(fc.constant(null), fc.constantFrom(...RANGES)),
    cookie: often(
      fc.constant<Case['cookie']>('session'),
      fc.constantFrom<Case['cookie']>('none', 'huge', 'odd', 'tampered', 'twice'),
    ),
    host: often(fc.constant<Case['host']>('ok'), fc.constantFrom<Case['host']>('evil', 'missing'), 8),
    extra: often(
      fc.constant([]),
      fc.array(
        fc.tuple(
          fc.constantFrom(
            'Accept',
            'Accept-Encoding',
            'X-Forwarded-For',
            'X-Forwarded-Proto',
            'X-HTTP-Method-Override',
            'Expect',
            'If-None-Match',
            'Accept-Language',
            'Authorization',
          ),
          fc.oneof(
            fc.string({ maxLength: 30 }).map((s) => s.replace(/[\r\n]/g, '')),
            fc.constantFrom(
              'application/json',
              'text/html',
              '100-continue',
              'DELETE',
              '*',
              'gzip, br',
              '1.2.3.4, 5.6.7.8',
              'Basic YTpi',
            ),
          ),
        ),
        { minLength: 1, maxLength: 3 },
      ),
      3,
    ),
  });

interface Session {
  client: HttpClient;
  token: string;
  cookie: string;
  /** The role's API token (the REST API's credential), when it has an account. */
  bearer?: string;
}

/** Runs the fuzzer against a fresh web (real SQLite, sessions and glue); returns counts and every 5xx. */
export async function runHttpFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  if (opts.replay) opts = { ...opts, concurrency: 1 };
  const say = opts.progress ?? (() => undefined);
  const logs: Array<{ t: number; line: string }> = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      const s = String(chunk);
      if (/"level":(50|60)/.test(s)) logs.push({ t: Date.now(), line: s.slice(0, 4000) });
      cb();
    },
  });
  const crashes: string[] = [];
  const onCrash = (e: unknown) => {
    crashes.push(e instanceof Error ? (e.stack ?? e.message) : String(e));
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);

  const w = await startTestWeb({
    // Two runners: one build sleeps for the whole run (cancel and log of a running build), the other runs the rest.
    realGlue: { concurrency: 2 },
    logger: pino({ level: 'warn' }, sink),
    // The fuzzer re-logs in its sessions; the per-address login budget is not what it tests.
    limits: { ipAttempts: 1_000_000 },
    config: { web: { quotaQueuedBuilds: 3, quotaDockerfiles: 20 } },
  });
  const port = Number(new URL(w.url).port);
  const report: FuzzReport = {
    seed: opts.seed,
    cases: 0,
    statuses: {},
    fiveXX: [],
    crashes,
    unhealthy: [],
    routes: 0,
    slow: [],
    unanswered: [],
  };
  try {
    const table = w.routes().map((r) => `${r.method} ${r.path}`);
    const routes = [...table, ...EXTRA_ROUTES];
    report.routes = table.length;

    // Users and objects: alice (the fuzzed user), bob (owns what alice must not reach), root (admin).
    const password = 'correct horse battery staple';
    const alice = w.client();
    await alice.signUp('alice', password);
    const bob = w.client();
    await bob.signUp('bob', password);
    const root = await addUser(w.db, 'root', 'admin');
    const admin = w.client();
    if ((await admin.login(root.username, root.password)).status !== 303) throw new Error('admin login failed');
    const anon = w.client();
    const ids: Record<string, string> = {};
    ids['own-df'] = String(await alice.createDockerfile('fuzz-mine', 'FROM debian:bookworm\nRUN true\n'));
    ids['own-build'] = String((await alice.build(Number(ids['own-df']))).id);
    await waitForBuild(alice, Number(ids['own-build']));
    ids['other-df'] = String(await bob.createDockerfile('fuzz-bobs', 'FROM debian:bookworm\nRUN true\n'));
    ids['other-build'] = String((await bob.build(Number(ids['other-df']))).id);
    await waitForBuild(bob, Number(ids['other-build']));
    ids['running-df'] = String(
      await alice.createDockerfile('fuzz-slow', 'FROM debian:bookworm\n# fake: sleep 3600\nRUN true\n'),
    );
    ids['running-build'] = String((await alice.build(Number(ids['running-df']))).id);

    const sessions = {} as Record<Role, Session>;
    const credentials: Record<Role, [string, string] | null> = {
      anon: null,
      user: ['alice', password],
      admin: [root.username, root.password],
    };
    const clients: Record<Role, HttpClient> = { anon, user: alice, admin };
    const refresh = async (role: Role) => {
      const c = clients[role];
      const cred = credentials[role];
      if (cred && (await c.get('/api/me')).status !== 200) {
        c.jar.clear();
        const r = await c.login(cred[0], cred[1]);
        if (r.status !== 303) report.unhealthy.push(`re-login of ${role} answered ${r.status}`);
      }
      // An API token of the role's user; a fuzzed disable revokes it for good, so a new one is made then.
      let bearer = sessions[role]?.bearer;
      if (cred && (!bearer || (await new ApiClient(w.url, bearer).get('/me')).status !== 200))
        bearer = await addToken(w, cred[0], role === 'admin' ? ['read', 'build', 'admin'] : ['read', 'build']);
      sessions[role] = {
        client: c,
        token: await c.apiToken(),
        cookie: c.cookieHeader(),
        ...(bearer ? { bearer } : {}),
      };
    };
    for (const r of ROLES) await refresh(r);

    const master = new Prng(opts.seed);
    const arb = caseArb(routes.length);
    const concurrency = opts.concurrency ?? 4;
    let next = 0;
    const sendOne = async (caseSeed: number) => {
      const c = fc.sample(arb, { seed: caseSeed, numRuns: 1 })[0]!;
      const req = toRequest(c, routes[c.route]!, sessions, ids, port);
      if (opts.replay)
        say(`case ${caseSeed}: ${JSON.stringify({ ...req, body: req.body?.subarray(0, 2000).toString('latin1') })}`);
      const res: RawResponse = await sendRaw(
        port,
        req,
        req.framing === 'cl-long' || req.framing === 'chunked-broken' ? 5000 : 60_000,
      );
      const key = res.status === undefined ? 'none' : String(res.status);
      report.statuses[key] = (report.statuses[key] ?? 0) + 1;
      report.cases++;
      // Whole requests must be answered. Not counted: a lying or missing length (the rest of the body reads as a
      // broken next request, and Node ends the connection), and CONNECT (Node drops it: the app has no tunnel).
      const whole = req.framing === 'length' || req.framing === 'chunked' || (req.framing === 'none' && !req.body);
      if (res.status === undefined && whole && req.method !== 'CONNECT') {
        report.unanswered.push(
          `case seed ${caseSeed}: ${req.method} ${req.target.slice(0, 120)} [${req.framing}] ${res.error ?? 'connection closed'}`,
        );
      }
      if (res.ms > 3000)
        report.slow.push(
          `${res.ms} ms ${key} ${req.method} ${req.target.slice(0, 80)} [${req.framing}] ${res.error ?? ''}`,
        );
      if (res.status !== undefined && res.status >= 500) {
        const since = Date.now() - res.ms - 1000;
        report.fiveXX.push({
          caseSeed,
          status: res.status,
          body: res.body.slice(0, 500),
          logs: logs.filter((l) => l.t >= since).map((l) => l.line),
          request: `${req.method} ${req.target.slice(0, 300)} [${req.framing}] ${JSON.stringify(req.headers).slice(0, 600)} body ${req.body ? JSON.stringify(req.body.subarray(0, 300).toString('latin1')) : '-'}`,
        });
      }
    };
    const total = opts.replay?.length ?? opts.cases;
    while (next < total) {
      const batch = Math.min(100, total - next);
      const seeds = opts.replay
        ? opts.replay.slice(next, next + batch)
        : Array.from({ length: batch }, () => Math.floor(master.next() * 2 ** 31));
      next += batch;
      for (let i = 0; i < seeds.length; i += concurrency)
        await Promise.all(seeds.slice(i, i + concurrency).map(sendOne));
      // Health between batches: the site answers, and each role still has its session (a fuzzed logout ends one).
      const health = await sendRaw(port, {
        method: 'GET',
        target: '/login',
        headers: [['Host', `127.0.0.1:${port}`]],
        framing: 'none',
      });
      if (health.status !== 200)
        report.unhealthy.push(`after ${report.cases} cases GET /login answered ${health.status ?? health.error}`);
      // The admin's fuzzed requests may disable, demote or promote the fuzz's own accounts (the admin console:
      // a right answer, not a failure); put them back before the sessions are checked.
      await restoreAccounts(w.db, root.username);
      for (const r of ROLES) await refresh(r);
      if (next % 1000 === 0) say(`fuzz: ${report.cases} cases, ${report.fiveXX.length} 5xx so far`);
    }
  } finally {
    await w.close();
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
  }
  return report;
}

async function restoreAccounts(db: Db, admin: string): Promise<void> {
  await db('users').whereIn('username', ['alice', 'bob']).update({ role: 'user', disabled: false, approved: true });
  await db('users').where({ username: admin }).update({ role: 'admin', disabled: false, approved: true });
}

function toRequest(
  c: Case,
  route: string,
  sessions: Record<Role, Session>,
  ids: Record<string, string>,
  port: number,
): RawRequest {
  const [routeMethod, pattern] = route.split(' ') as [string, string];
  let n = 0;
  const target =
    pattern.replace(/:(id|name)/g, (_m, kind: string) => {
      const p = c.params[n++] ?? '$own-df';
      if (p === '$name') return ARTIFACT_NAMES[c.route % ARTIFACT_NAMES.length]!;
      if (p.startsWith('$') && kind === 'name' && pattern.startsWith('/api/v1/dockerfiles/'))
        return p.startsWith('$other') ? 'fuzz-bobs' : 'fuzz-mine';
      if (p.startsWith('$')) {
        const want =
          kind === 'name'
            ? 'name'
            : pattern.startsWith('/api/dockerfiles') || pattern.startsWith('/dockerfiles')
              ? p.replace('build', 'df')
              : p.replace('-df', '-build');
        return want === 'name' ? 'image.raw' : (ids[want.slice(1)] ?? ids['own-df']!);
      }
      return p;
    }) + c.query;
  const s = sessions[c.role];
  const headers: Array<[string, string]> = [];
  if (c.host === 'ok') headers.push(['Host', `127.0.0.1:${port}`]);
  else if (c.host === 'evil') headers.push(['Host', 'evil.example']);
  const cookie = {
    session: s.cookie,
    none: '',
    huge: `${s.cookie}; junk=${'x'.repeat(12_000)}`,
    odd: 'kiln.sid=%; kiln.sid=s%3A; =; ;;; a=b=c; \u00ff=\u00fe',
    tampered: s.cookie.replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A')),
    twice: `${s.cookie}; ${sessions[c.role === 'admin' ? 'user' : 'admin'].cookie}`,
  }[c.cookie];
  if (cookie) headers.push(['Cookie', cookie]);
  const token = {
    valid: s.token,
    missing: '',
    wrong: 'x'.repeat(40),
    other: sessions[c.role === 'user' ? 'admin' : 'user'].token,
  }[c.csrf];
  if (token) headers.push(['X-CSRF-Token', token]);
  // The REST API's credential takes the place of the CSRF token's variants there: own, none, garbage, another's.
  if (pattern.startsWith('/api/v1/')) {
    const bearer = {
      valid: s.bearer,
      missing: undefined,
      wrong: `kiln_${'0'.repeat(16)}_${'x'.repeat(43)}`,
      other: sessions[c.role === 'user' ? 'admin' : 'user'].bearer,
    }[c.csrf];
    if (bearer) headers.push(['Authorization', `Bearer ${bearer}`]);
  }
  if (c.origin) headers.push(['Origin', c.origin === 'same' ? `http://127.0.0.1:${port}` : c.origin]);
  if (c.site !== null) headers.push(['Sec-Fetch-Site', c.site]);
  if (c.range) headers.push(['Range', c.range]);
  const body = c.body;
  const type = c.contentType ?? body.type;
  if (type !== null) headers.push(['Content-Type', type]);
  headers.push(...c.extra);
  return {
    method: c.method ?? routeMethod,
    target,
    headers,
    body: body.body ?? undefined,
    framing: body.body ? c.framing : 'none',
  };
}

/** One line for logs and bench/RESULTS-chaos.md. */
export function summary(r: FuzzReport): string {
  const st = Object.entries(r.statuses)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}:${v}`)
    .join(' ');
  return `fuzz: ${r.cases} cases over ${r.routes} routes, ${r.fiveXX.length} 5xx, ${r.crashes.length} crashes, ${r.unhealthy.length} unhealthy, ${r.unanswered.length} unanswered (seed ${r.seed}) [${st}]`;
}
