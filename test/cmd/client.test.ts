/**
 * `kiln client` (the compiled bin/kiln) against the real web, worker and glue in this process (local backend, fake
 * SDK), over real HTTP. Where a network or a server must misbehave (a connection cut mid-stream, a flipped byte, a
 * hostile artifact name, another signing key), a small HTTP proxy or server of the test's stands in between; the
 * client is never told it is being tested.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  symlinkSync,
  writeFileSync,
  existsSync,
  chmodSync,
} from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packContext } from '../../src/cmd/client/context.js';
import { defaultIdempotencyKey } from '../../src/cmd/client/ci.js';
import * as S from '../../src/web/api-v1/schemas.js';
import { ciEnv, runKiln, startKiln } from '../helpers/client.js';
import { listTree, tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { ApiClient, addToken, addUser, startTestWeb, type TestWeb } from '../helpers/web.js';

type Build = { id: number; state: string; artifacts: Array<{ name: string; size: number; sha256: string | null }> };

// ------------------------------------------------------------------------------------------------ a test proxy

interface Proxy {
  url: string;
  /** Every request that passed, as `METHOD path` plus the headers the client sent. */
  seen: Array<{ line: string; headers: IncomingMessage['headers'] }>;
  close(): Promise<void>;
}

type Forward = () => Promise<IncomingMessage>;
/** Answers one request: pass it on (`forward`) and relay or alter the answer, or answer itself. */
type Handler = (req: IncomingMessage, res: ServerResponse, forward: Forward) => Promise<void>;

const relay = async (res: ServerResponse, up: IncomingMessage) => {
  res.writeHead(up.statusCode!, up.headers);
  up.pipe(res);
};
const readAll = async (s: IncomingMessage): Promise<Buffer> => {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
};

/** An HTTP proxy to `target` on loopback: every request goes through `handle` (default: passed on unchanged). */
async function startProxy(
  target: string,
  handle: Handler = async (_q, res, f) => relay(res, await f()),
): Promise<Proxy> {
  const t = new URL(target);
  const seen: Proxy['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ line: `${req.method} ${req.url}`, headers: req.headers });
    const forward: Forward = () =>
      new Promise((resolve, reject) => {
        const up = http.request(
          {
            host: t.hostname,
            port: t.port,
            method: req.method,
            path: req.url,
            headers: { ...req.headers, host: t.host },
          },
          resolve,
        );
        up.on('error', reject);
        up.on('response', (m) => m.on('error', () => undefined));
        req.pipe(up);
      });
    res.on('error', () => undefined);
    handle(req, res, forward).catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ----------------------------------------------------------------------------------------------------- fixtures

describe('kiln client against a running Kiln', () => {
  let w: TestWeb & { local: { openGate(n: string): void } };
  let api: ApiClient;
  let env: Record<string, string>;
  let token: string;
  const tmp = tempDir('kiln-client-');
  const file = (name: string, text: string) => {
    const p = path.join(tmp.dir, name);
    writeFileSync(p, text);
    return p;
  };
  const envFor = (url: string, extra: Record<string, string> = {}) =>
    ciEnv({ KILN_URL: url, KILN_TOKEN: token, ...extra });
  /** A fresh directory of the test's (what a job's workspace is). */
  const dir = (name: string) => mkdtempSync(path.join(tmp.dir, `${name}-`));

  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { liveStreamsPerUser: 2 } } });
    await addUser(w.db, 'alice', 'user');
    token = await addToken(w, 'alice', ['build']);
    api = new ApiClient(w.url, token);
    env = envFor(w.url);
  });
  afterAll(async () => {
    await w?.close();
    tmp.cleanup();
  });

  const pkgs = 'FROM debian:bookworm\n# fake-packages: a=1\n';

  // ------------------------------------------------------------------------------------------------ output

  it('--json: stdout is one JSON line, the build record (id, state, trigger, artifacts with sha256); the log goes to stderr', async () => {
    const df = file('json.Dockerfile', `${pkgs}# fake-lines: 2\nRUN true\n`);
    const r = await runKiln(['client', 'build', '--name', 'json', '--dockerfile', df, '--wait', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('');
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    // The API's build record, unchanged: the schema the OpenAPI document publishes for it.
    const b = S.BuildAnswer.shape.build.parse(rec);
    expect(b).toMatchObject({ state: 'succeeded', final: true, trigger: 'api', dockerfile: { name: 'json' } });
    expect(b.artifacts.map((a) => a.name)).toEqual(
      expect.arrayContaining(['image.raw', 'SHA256SUMS', 'SHA256SUMS.sig']),
    );
    for (const a of b.artifacts) expect(a.sha256, a.name).toMatch(/^[0-9a-f]{64}$/);
    expect(r.stderr).toMatch(/^line 1\nline 2\n/m);
    expect(r.stdout).not.toContain('line 1');

    // Without --wait: the build as requested, still one line.
    const again = await runKiln(['client', 'build', '--name', 'json', '--dockerfile', df, '--json'], env);
    expect(again.code).toBe(0);
    expect(again.stdout.trim().split('\n')).toHaveLength(1);
    expect(S.Build.parse(JSON.parse(again.stdout))).toMatchObject({ final: false, trigger: 'api' });

    // A failed build: its record with what failed and where.
    const bad = file('bad.Dockerfile', 'FROM debian:bookworm\n# fake: fail\nRUN true\n');
    const f = await runKiln(['client', 'build', '--name', 'bad', '--dockerfile', bad, '--wait', '--json'], env);
    expect(f.code).toBe(1);
    expect(f.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(f.stdout)).toMatchObject({
      state: 'failed',
      failure: { stage: 'build', line: 3, instruction: 'RUN true', message: 'RUN step 2 failed: exit 100' },
    });

    // Refused before any build: still exactly one line, the API's error with its findings.
    const pol = file('pol.Dockerfile', 'FROM debian:bookworm\nRUN --network=host true\n');
    const p = await runKiln(['client', 'build', '--name', 'pol', '--dockerfile', pol, '--wait', '--json'], env);
    expect(p.code).toBe(4);
    expect(p.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(p.stdout)).toMatchObject({
      error: { code: 'policy_violation', exit: 4, details: { findings: [{ line: 2 }] } },
    });
    expect(p.stderr).toContain('kiln client:   line 2: RUN --network is not allowed');
  });

  it('exit statuses: 0 succeeded, 1 failed, 2 usage, 3 cancelled, 4 Dockerfile refused, 5 refused, 7 token, 8 unreachable', async () => {
    const ok = file('ok.Dockerfile', `${pkgs}RUN true\n`);
    const build = (name: string, df: string, extra: string[] = [], e = env) =>
      runKiln(['client', 'build', '--name', name, '--dockerfile', df, '--wait', ...extra], e);
    expect((await build('ok', ok)).code).toBe(0);
    expect((await build('bad', file('bad2.Dockerfile', 'FROM debian:bookworm\n# fake: fail\nRUN true\n'))).code).toBe(
      1,
    );
    expect((await build('pol', file('pol2.Dockerfile', 'FROM debian:bookworm\nRUN --network=host true\n'))).code).toBe(
      4,
    );

    // 2: usage, told on stderr, nothing sent.
    const usage = [
      await runKiln(['client', 'build', '--dockerfile', ok], env),
      await runKiln(['client', 'build', '--name', 'Not A Name', '--dockerfile', ok], env),
      await build('ok', ok, ['--format', 'vmdk']),
      await build('ok', ok, ['--build-arg', 'NOEQUALS']),
      await build('ok', path.join(tmp.dir, 'missing.Dockerfile')),
      await runKiln(['client', 'status', 'abc'], env),
      await runKiln(['client', 'status', '1', '--bogus'], env),
      await runKiln(['client', 'frobnicate'], env),
      await runKiln(['client', 'status', '1'], ciEnv({ KILN_TOKEN: token })),
      await runKiln(['client', 'status', '1'], ciEnv({ KILN_URL: w.url })),
      await runKiln(['client', 'status', '1'], envFor('ftp://example.org')),
    ];
    for (const r of usage) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/^(kiln client: |usage: )/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    expect((await runKiln(['client', 'status', '1'], ciEnv({ KILN_TOKEN: token }))).stderr).toContain(
      'KILN_URL is not set',
    );

    // 4: the Dockerfile's PUT refused as sent (here --no-context for a Dockerfile that has none yet): nothing stored.
    const fresh = await build('fresh', ok, ['--no-context']);
    expect(fresh.code).toBe(4);
    expect(fresh.stderr).toMatch(/A new Dockerfile has no build context to remove\. \(HTTP 422 invalid_input\)/);
    expect((await api.get('/dockerfiles/fresh')).status).toBe(404);

    // 5: refused otherwise (no such build).
    const missing = await runKiln(['client', 'status', '999999'], env);
    expect(missing.code).toBe(5);
    expect(missing.stderr).toBe('kiln client: Kiln refused: No such build (HTTP 404 not_found)\n');

    // 7: the token (unknown: 401; read-only asked to build: 403).
    const unknown = await runKiln(
      ['client', 'status', '1'],
      ciEnv({ KILN_URL: w.url, KILN_TOKEN: `kiln_${'0'.repeat(16)}_${'A'.repeat(43)}` }),
    );
    expect(unknown.code).toBe(7);
    expect(unknown.stderr).toMatch(/^kiln client: Kiln refused the token: .*\(HTTP 401 unauthenticated\)\n$/);
    const reader = ciEnv({ KILN_URL: w.url, KILN_TOKEN: await addToken(w, 'alice', ['read']) });
    const scoped = await build('ok', ok, [], reader);
    expect(scoped.code).toBe(7);
    expect(scoped.stderr).toMatch(/The token may not do this: .*\(HTTP 403 forbidden\)/);

    // 8: nothing listens there (retried for a second, then given up).
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const down = await runKiln(['client', 'status', '1', '--retry-for', '1'], envFor(`http://127.0.0.1:${port}`));
    expect(down.code).toBe(8);
    expect(down.stderr).toMatch(
      new RegExp(`^kiln client: cannot reach Kiln at http://127.0.0.1:${port}: .*ECONNREFUSED`),
    );

    // 3: cancelled while it ran.
    const gated = file('gated.Dockerfile', 'FROM debian:bookworm\n# fake: gate cancel-me\nRUN true\n');
    const c = startKiln(['client', 'build', '--name', 'gated', '--dockerfile', gated, '--wait'], env);
    const id = Number(await until(() => /build (\d+) requested/.exec(c.out().stderr)?.[1]));
    await w.waitForBuild(id, (b) => b.state === 'running');
    expect((await api.post(`/builds/${id}/cancel`)).status).toBe(200);
    const cancelled = await c.done;
    w.local.openGate('cancel-me');
    expect(cancelled.code, cancelled.stderr).toBe(3);
    expect(cancelled.stderr).toContain(`build ${id} was cancelled`);
  });

  // ------------------------------------------------------------------------------------------------ idempotency

  it('a retried build in the same CI job (same CI variables) is one build; another job, attempt or Dockerfile is another', async () => {
    const df = file('idem.Dockerfile', `${pkgs}RUN true\n`);
    const trigger = async (name: string, ci: Record<string, string>) => {
      const r = await runKiln(['client', 'build', '--name', name, '--dockerfile', df], envFor(w.url, ci));
      expect(r.code, r.stderr).toBe(0);
      return Number(r.stdout);
    };
    const gh = { GITHUB_REPOSITORY: 'acme/app', GITHUB_RUN_ID: '900', GITHUB_RUN_ATTEMPT: '1', GITHUB_JOB: 'image' };
    const first = await trigger('idem', gh);
    expect(await trigger('idem', gh)).toBe(first);
    expect(await trigger('idem', { ...gh, GITHUB_RUN_ATTEMPT: '2' })).not.toBe(first);
    // One job building two Dockerfiles: two builds (not the 422 of a key reused for another Dockerfile).
    expect(await trigger('idem-other', gh)).not.toBe(first);
    const gitlab = await trigger('idem', { CI_JOB_ID: '31337', CI_PROJECT_ID: '4' });
    expect(await trigger('idem', { CI_JOB_ID: '31337', CI_PROJECT_ID: '4' })).toBe(gitlab);
    const jenkins = await trigger('idem', { BUILD_TAG: 'jenkins-app-12' });
    expect(await trigger('idem', { BUILD_TAG: 'jenkins-app-12' })).toBe(jenkins);
    // Outside CI: each run is its own build.
    expect(await trigger('idem', {})).not.toBe(await trigger('idem', {}));
    // --idempotency-key wins over the CI's.
    const r = await runKiln(
      ['client', 'build', '--name', 'idem', '--dockerfile', df, '--idempotency-key', 'release-1.2'],
      envFor(w.url, gh),
    );
    expect(Number(r.stdout)).not.toBe(first);

    expect(defaultIdempotencyKey(gh, 'idem')).toEqual(defaultIdempotencyKey({ ...gh }, 'idem'));
    expect(defaultIdempotencyKey(gh, 'idem').key).toMatch(/^kiln-client-github-[0-9a-f]{40}$/);
    expect(defaultIdempotencyKey({}, 'idem').source).toBe('random');
  });

  // ------------------------------------------------------------------------------------------------ downloads

  /** A succeeded build with an image of `mib` MiB (0: a few bytes). */
  async function succeededBuild(name: string, mib = 0): Promise<Build> {
    const df = file(`${name}.Dockerfile`, `${pkgs}${mib ? `# fake: big ${mib}\n` : ''}RUN true\n`);
    const r = await runKiln(
      ['client', 'build', '--name', name, '--dockerfile', df, '--wait', '--no-log', '--json'],
      env,
    );
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Build;
  }

  it('a download with a flipped byte fails verification (exit 6) and leaves no file in DIR', async () => {
    const b = await succeededBuild('flip');
    const image = `/api/v1/builds/${b.id}/artifacts/image.raw`;
    /** Flips a byte of image.raw on its way; `hide`: also blanks Kiln's digests in the listing (a lying server). */
    const flipper =
      (hide: boolean): Handler =>
      async (req, res, forward) => {
        const up = await forward();
        if (req.url === image) {
          const body = await readAll(up);
          body[3] = body[3]! ^ 0x01;
          res.writeHead(up.statusCode!, up.headers);
          return void res.end(body);
        }
        if (hide && req.url === `/api/v1/builds/${b.id}/artifacts`) {
          const list = JSON.parse((await readAll(up)).toString()) as { artifacts: Array<{ sha256: string | null }> };
          for (const a of list.artifacts) a.sha256 = null;
          const text = JSON.stringify(list);
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
          return void res.end(text);
        }
        await relay(res, up);
      };
    for (const [hide, why] of [
      [false, /image\.raw does not match Kiln's sha256 for it/],
      // Without the listing's digest, the signed SHA256SUMS catches it (kiln verify's own check).
      [true, /the download failed verification: sha256 image\.raw: mismatch/],
    ] as const) {
      const proxy = await startProxy(w.url, flipper(hide));
      try {
        const out = dir('flipped');
        const r = await runKiln(['client', 'download', String(b.id), out], envFor(proxy.url));
        expect(r.code, r.stderr).toBe(6);
        expect(r.stderr).toMatch(why);
        expect(readdirSync(out)).toEqual([]);
      } finally {
        await proxy.close();
      }
    }
    // Straight from Kiln the same build downloads and verifies.
    const good = dir('good');
    const ok = await runKiln(['client', 'download', String(b.id), good], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(readdirSync(good)).toContain('image.raw');
  });

  it('artifact names from a hostile server (../x, a path, twice, unknown) are refused: nothing is written anywhere', async () => {
    for (const names of [
      ['../x'],
      ['image.raw/../../x'],
      ['/tmp/x'],
      ['x\u0000'],
      ['image.raw', 'image.raw'],
      ['evil.sh'],
    ]) {
      const requests: string[] = [];
      const hostile = http.createServer((req, res) => {
        requests.push(req.url!);
        const json = (v: unknown) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(v));
        };
        if (req.url === '/api/v1/builds/7')
          return json({ build: { id: 7, state: 'succeeded', final: true, artifacts: [], queue: null } });
        if (req.url === '/api/v1/builds/7/artifacts')
          return json({
            artifacts: names.map((name) => ({ name, size: 1, sha256: '0'.repeat(64), url: `/${name}` })),
            signingKey: '/.well-known/kiln-signing-key',
          });
        res.writeHead(200);
        res.end('x');
      });
      await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
      const parent = dir('hostile');
      const out = path.join(parent, 'out');
      try {
        const r = await runKiln(
          ['client', 'download', '7', out, '--json'],
          envFor(`http://127.0.0.1:${(hostile.address() as AddressInfo).port}`),
        );
        expect(r.code, r.stderr).toBe(6);
        expect(r.stderr).toMatch(/(is not a name Kiln makes|twice): refused/);
        expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'verification', exit: 6 } });
        expect(listTree(parent)).toEqual([]);
        expect(existsSync(path.join(tmp.dir, 'x'))).toBe(false);
        // Nothing was fetched by the name or the url the server gave.
        expect(requests).toEqual(['/api/v1/builds/7', '/api/v1/builds/7/artifacts']);
      } finally {
        await new Promise((r) => hostile.close(r));
      }
    }
  });

  it('a download cut off mid-way resumes with Range where it stopped, and verifies', async () => {
    const b = await succeededBuild('big', 3);
    const image = `/api/v1/builds/${b.id}/artifacts/image.raw`;
    let cuts = 0;
    const proxy = await startProxy(w.url, async (req, res, forward) => {
      const up = await forward();
      if (req.url !== image || cuts >= 2) return relay(res, up);
      // The first two transfers of the image break off after 1 MiB and a bit: headers and part of the body, then reset.
      cuts++;
      res.writeHead(up.statusCode!, up.headers);
      let sent = 0;
      up.on('data', (c: Buffer) => {
        if (sent > (1 << 20) + 1000) return;
        res.write(c);
        sent += c.length;
        if (sent > (1 << 20) + 1000) {
          up.destroy();
          res.socket?.destroy();
        }
      });
    });
    try {
      const out = dir('resumed');
      const r = await runKiln(['client', 'download', String(b.id), out], envFor(proxy.url));
      expect(r.code, r.stderr).toBe(0);
      const ranges = proxy.seen.filter((s) => s.line === `GET ${image}`).map((s) => s.headers.range ?? 'none');
      expect(ranges).toHaveLength(3);
      expect(ranges[0]).toBe('none');
      expect(ranges[1]).toMatch(/^bytes=[1-9]\d*-$/);
      expect(ranges[2]).toMatch(/^bytes=[1-9]\d*-$/);
      const bytes = readFileSync(path.join(out, 'image.raw'));
      expect(bytes.length).toBe(3 << 20);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(
        b.artifacts.find((a) => a.name === 'image.raw')!.sha256,
      );
    } finally {
      await proxy.close();
    }
  });

  it("the signing key: the site's by default; a pinned one (--key, KILN_SIGNING_KEY_FILE) refuses a server that swapped it", async () => {
    const b = await succeededBuild('keys');
    const real = await (await fetch(`${w.url}/.well-known/kiln-signing-key`)).text();
    const other = path.join(tmp.dir, 'other_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'other', '-f', other]);
    const swapped = await startProxy(w.url, async (req, res, forward) => {
      if (req.url === '/.well-known/kiln-signing-key') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        return void res.end(readFileSync(`${other}.pub`));
      }
      await relay(res, await forward());
    });
    const realKey = file('kiln.pub', real);
    try {
      // Trusting what the server publishes: the swapped key does not verify Kiln's signature.
      const tofu = await runKiln(['client', 'download', String(b.id), dir('swapped')], envFor(swapped.url));
      expect(tofu.code).toBe(6);
      expect(tofu.stderr).toMatch(/signature: invalid/);
      // Pinned to the real key, the published one is not even asked for.
      for (const [args, extra] of [
        [['--key', realKey], {}],
        [[], { KILN_SIGNING_KEY_FILE: realKey }],
        [[], { KILN_SIGNING_KEY: real }],
      ] as const) {
        const seen = swapped.seen.length;
        const out = dir('pinned');
        const r = await runKiln(['client', 'download', String(b.id), out, ...args], envFor(swapped.url, extra));
        expect(r.code, r.stderr).toBe(0);
        expect(swapped.seen.slice(seen).map((s) => s.line)).not.toContain('GET /.well-known/kiln-signing-key');
      }
      // Pinned to the wrong key: refused even from the real server.
      const wrong = await runKiln(['client', 'download', String(b.id), dir('wrong'), '--key', `${other}.pub`], env);
      expect(wrong.code).toBe(6);
    } finally {
      await swapped.close();
    }
  });

  // ------------------------------------------------------------------------------------------------ following the log

  it('the log survives dropped connections (idle, and in the middle of an event): no line lost, none repeated', async () => {
    const df = file('drop.Dockerfile', 'FROM debian:bookworm\n# fake: gate drop\n# fake-lines: 40\nRUN true\n');
    const started = await runKiln(['client', 'build', '--name', 'drop', '--dockerfile', df], env);
    const id = Number(started.stdout);
    const events = `/api/v1/builds/${id}/events`;
    const conns: ServerResponse[] = [];
    let cutMidEvent = true;
    const proxy = await startProxy(w.url, async (req, res, forward) => {
      const up = await forward();
      if (req.url !== events) return relay(res, up);
      const n = conns.push(res);
      res.writeHead(up.statusCode!, up.headers);
      up.on('data', (c: Buffer) => {
        const at = c.indexOf('event: log');
        // The second connection breaks inside its first log event: its id line and half its data arrive.
        if (n === 2 && cutMidEvent && at >= 0) {
          cutMidEvent = false;
          res.write(c.subarray(0, at + 30));
          up.destroy();
          res.socket?.destroy();
          return;
        }
        res.write(c);
      });
      up.on('end', () => res.end());
    });
    try {
      const c = startKiln(['client', 'log', String(id), '--follow'], envFor(proxy.url));
      await until(() => c.out().stdout.includes('line 40\n'));
      // Idle at the gate: the connection drops.
      conns[0]!.socket!.destroy();
      await until(() => conns.length === 2);
      w.local.openGate('drop');
      const r = await c.done;
      expect(r.code, r.stderr).toBe(0);
      // Exactly the log, in order, once: as Kiln has it.
      const full = (await (await api.get(`/builds/${id}/log?offset=0`)).json()) as { text: string };
      expect(r.stdout).toBe(full.text);
      const lines = r.stdout.split('\n');
      for (const l of ['line 1', 'line 40', 'after 1', 'after 40', '[kiln] build succeeded'])
        expect(
          lines.filter((x) => x === l),
          l,
        ).toHaveLength(1);
      // It resumed from where it was: later connections named the last whole event they had.
      const resumes = proxy.seen.filter((s) => s.line === `GET ${events}`).map((s) => s.headers['last-event-id']);
      expect(resumes.length).toBeGreaterThanOrEqual(3);
      expect(resumes[0]).toBeUndefined();
      expect(Number(resumes[1])).toBeGreaterThan(0);
      expect(resumes[2]).toBe(resumes[1]);
    } finally {
      await proxy.close();
    }
  });

  it('every live stream of the user taken (429): the log is read by offset instead, still whole and once', async () => {
    const df = file('busy.Dockerfile', 'FROM debian:bookworm\n# fake: gate busy\n# fake-lines: 5\nRUN true\n');
    const id = Number((await runKiln(['client', 'build', '--name', 'busy', '--dockerfile', df], env)).stdout);
    // The two streams alice may hold (web.liveStreamsPerUser = 2 here), held open by two viewers.
    const held = new AbortController();
    for (let i = 0; i < 2; i++) {
      const res = await api.request(`/builds/${id}/events`, { signal: held.signal });
      expect(res.status).toBe(200);
    }
    try {
      const c = startKiln(['client', 'log', String(id), '--follow'], env);
      await until(() => c.out().stdout.includes('line 5\n'));
      w.local.openGate('busy');
      const r = await c.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('every live stream of this user is taken');
      const full = (await (await api.get(`/builds/${id}/log?offset=0`)).json()) as { text: string };
      expect(r.stdout).toBe(full.text);
    } finally {
      held.abort();
    }
  });

  // ------------------------------------------------------------------------------------------------ the context

  it('--context DIR: .dockerignore applies as the SDK applies it, symlinks are sent as links (never followed), same tree same bytes', async () => {
    const ctx = dir('ctx');
    mkdirSync(path.join(ctx, 'src/keep'), { recursive: true });
    mkdirSync(path.join(ctx, 'node_modules/pkg'), { recursive: true });
    writeFileSync(path.join(ctx, 'src/main.c'), 'int main(void) { return 0; }\n');
    writeFileSync(path.join(ctx, 'src/keep/notes.log'), 'kept by an exception\n');
    writeFileSync(path.join(ctx, 'src/debug.log'), 'ignored\n');
    writeFileSync(path.join(ctx, 'node_modules/pkg/index.js'), 'ignored\n');
    writeFileSync(path.join(ctx, '.dockerignore'), 'node_modules\n**/*.log\n!src/keep/*.log\n');
    chmodSync(path.join(ctx, 'src/main.c'), 0o755);
    // Links out of DIR: sent as links; what they point at is never read.
    symlinkSync('/etc/passwd', path.join(ctx, 'passwd'));
    symlinkSync('/etc', path.join(ctx, 'etc'));
    symlinkSync('../..', path.join(ctx, 'src/up'));

    const a = await packContext(ctx);
    const b = await packContext(ctx);
    expect(a.data.equals(b.data)).toBe(true);
    const entries: Array<{ name: string; type?: string; linkname?: string | null; mode?: number; body: string }> = [];
    const ex = tarStream.extract();
    ex.end(gunzipSync(a.data));
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      entries.push({ ...e.header, body: Buffer.concat(chunks).toString() });
    }
    expect(entries.map((e) => e.name)).toEqual([
      '.dockerignore',
      'etc',
      'passwd',
      'src',
      'src/keep',
      'src/keep/notes.log',
      'src/main.c',
      'src/up',
    ]);
    expect(entries.find((e) => e.name === 'passwd')).toMatchObject({
      type: 'symlink',
      linkname: '/etc/passwd',
      body: '',
    });
    expect(entries.find((e) => e.name === 'etc')).toMatchObject({ type: 'symlink', linkname: '/etc' });
    expect(entries.find((e) => e.name === 'src/main.c')).toMatchObject({ mode: 0o755 });
    expect(entries.map((e) => e.body).join('')).not.toContain('root:');
    expect(a.ignored).toBe(4); // node_modules, node_modules/pkg, its index.js (walked for the exception), src/debug.log

    // What Kiln stores is what the client sent: the same listing.
    const df = file('ctx.Dockerfile', `${pkgs}COPY src /src\n`);
    const r = await runKiln(['client', 'build', '--name', 'ctx', '--dockerfile', df, '--context', ctx], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('build context');
    const stored = (await (await api.get('/dockerfiles/ctx')).json()) as {
      dockerfile: { context: { entries: Array<{ name: string }> } };
    };
    expect(stored.dockerfile.context.entries.map((e) => e.name)).toEqual(entries.map((e) => e.name));

    // Only files, directories and links: a FIFO is named and refused before anything is sent.
    execFileSync('mkfifo', [path.join(ctx, 'pipe')]);
    const fifo = await runKiln(['client', 'build', '--name', 'ctx', '--dockerfile', df, '--context', ctx], env);
    expect(fifo.code).toBe(2);
    expect(fifo.stderr).toMatch(/pipe in the build context is not a file, directory or symlink/);
  });

  it('a --download DIR inside the --context is never uploaded: a job retried after its download sends the same context', async () => {
    const ctx = dir('ws');
    writeFileSync(path.join(ctx, 'app.txt'), 'app\n');
    const df = file('ws.Dockerfile', `${pkgs}COPY app.txt /app.txt\n`);
    const args = ['client', 'build', '--name', 'ws', '--dockerfile', df, '--context', ctx, '--wait', '--no-log'];
    const first = await runKiln(
      [...args, '--download', path.join(ctx, 'kiln-out')],
      envFor(w.url, { CI_JOB_ID: '77' }),
    );
    expect(first.code, first.stderr).toBe(0);
    expect(readdirSync(path.join(ctx, 'kiln-out'))).toContain('image.raw');
    const versions = async () => (await w.db('dockerfile_versions').count({ n: '*' }).first())?.n;
    const before = await versions();
    const retried = await runKiln(
      [...args, '--download', path.join(ctx, 'kiln-out')],
      envFor(w.url, { CI_JOB_ID: '77' }),
    );
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stderr).toContain('build context');
    expect(retried.stderr).toMatch(/build context .*: 1 entry\n/);
    // Same bytes: no new version of the Dockerfile.
    expect(await versions()).toBe(before);
  });
});
