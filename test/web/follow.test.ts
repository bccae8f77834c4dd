import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainLine } from '../../src/core/builds/log-view.js';
import { insertBuild, updateBuild } from '../../src/db/index.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { htmlText, sseEvents, type SseEvent } from '../helpers/sse.js';
import { until } from '../helpers/wait.js';
import { addUser, startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Events of a build's stream until `stop` says so (or the stream ends), then the connection is dropped. */
async function follow(
  c: HttpClient,
  id: number,
  headers: Record<string, string>,
  stop: (seen: SseEvent[]) => boolean,
): Promise<SseEvent[]> {
  const ac = new AbortController();
  const res = await fetch(`${c.base}/api/builds/${id}/events`, {
    headers: { cookie: c.cookieHeader(), ...headers },
    signal: ac.signal,
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const seen: SseEvent[] = [];
  try {
    for await (const ev of sseEvents(res)) {
      seen.push(ev);
      if (ev.event === 'end' || stop(seen)) break;
    }
  } finally {
    ac.abort();
  }
  return seen;
}
const logLines = (evs: SseEvent[]) =>
  evs.filter((e) => e.event === 'log').flatMap((e) => (JSON.parse(e.data) as { html: string[] }).html);

/** The whole raw log of a build as the glue has it. */
async function rawLog(w: TestWeb, job: number, build: number): Promise<string> {
  let text = '';
  let offset = 0;
  for (;;) {
    const c = await w.glue.call('build.log', [job, build, offset]);
    text += c.text;
    if (!c.more && c.nextOffset === offset) return text;
    if (c.nextOffset === offset) await new Promise((r) => setTimeout(r, 50));
    offset = c.nextOffset;
  }
}

describe('following a build', () => {
  let w: TestWeb & { local: InProcessGlue };
  let a: HttpClient;
  let bob: HttpClient;
  let admin: HttpClient;
  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { livePollMs: 50 } } });
    a = w.client();
    await a.signUp('alice');
    bob = w.client();
    await bob.signUp('bob');
    const root = await addUser(w.db, 'root', 'admin');
    admin = w.client();
    await admin.login(root.username, root.password);
  });
  afterAll(async () => {
    await w?.close();
  });

  it('live log over SSE: a viewer that disconnects mid-log and comes back with Last-Event-ID gets every line exactly once; no machine line, ANSI as classes on escaped text', async () => {
    const df = await a.createDockerfile(
      'followed',
      'FROM debian:bookworm\n# fake: gate follow\n# fake-lines: 40\n# fake-ansi\nRUN true\n',
    );
    const { id } = await a.build(df);
    const first = await follow(a, id, {}, (seen) => logLines(seen).some((l) => l.includes('waiting at gate')));
    const lastId = first.filter((e) => e.id !== undefined).at(-1)!.id!;
    expect(Number(lastId)).toBeGreaterThan(0);
    expect(first.some((e) => e.event === 'progress' && JSON.parse(e.data).stage === 'build')).toBe(true);
    w.local.openGate('follow');
    const row = await w.waitForBuild(id);
    expect(row.state).toBe('succeeded');
    const second = await follow(a, id, { 'last-event-id': lastId }, () => false);
    expect(second.at(-1)!.event).toBe('end');
    const seen = [...logLines(first), ...logLines(second)];
    const expected = (await rawLog(w, df, row.backend_build!))
      .split('\n')
      .slice(0, -1)
      .filter((l) => !l.startsWith('##kiln '))
      .map(plainLine);
    expect(seen.map(htmlText)).toEqual(expected);
    for (const n of [1, 20, 40]) {
      expect(seen.filter((l) => l === `line ${n}`)).toHaveLength(1);
      expect(seen.filter((l) => l === `after ${n}`)).toHaveLength(1);
    }
    expect(seen.join('\n')).not.toContain('##kiln');
    expect(seen.filter((l) => l === '[kiln] build succeeded')).toHaveLength(1);
    expect(seen).toContain('<span class="ansi-fg-1">&lt;script&gt;alert(1)&lt;/script&gt;</span>');
    expect(seen).toContain('link');
    // A later viewer of the finished build from the start gets the same lines.
    const again = logLines(await follow(a, id, {}, () => false));
    expect(again).toEqual(seen);
    // Resuming from an event in the middle gives exactly what came after it.
    const mid = second.filter((e) => e.id !== undefined)[0];
    if (mid) {
      const rest = logLines(await follow(a, id, { 'last-event-id': mid.id! }, () => false));
      expect(rest).toEqual(logLines(second.slice(second.indexOf(mid) + 1)));
    }
  });

  it('a live stream ends when its session does (the user is disabled); coming back is 401', async () => {
    const dave = w.client();
    await dave.signUp('dave');
    const df = await dave.createDockerfile('held', 'FROM debian:bookworm\n# fake: gate held\nRUN true\n');
    const { id } = await dave.build(df);
    const res = await fetch(`${dave.base}/api/builds/${id}/events`, { headers: { cookie: dave.cookieHeader() } });
    expect(res.status).toBe(200);
    const seen: string[] = [];
    const done = (async () => {
      for await (const ev of sseEvents(res)) seen.push(ev.event);
    })();
    await until(() => seen.includes('build'));
    await w.db('users').where({ username: 'dave' }).update({ disabled: true });
    await done; // the server closed the stream
    expect(seen).not.toContain('end');
    expect(
      (
        await fetch(`${dave.base}/api/builds/${id}/events`, {
          headers: { cookie: dave.cookieHeader(), 'last-event-id': '0' },
        })
      ).status,
    ).toBe(401);
    w.local.openGate('held');
    await w.waitForBuild(id);
  });

  it('a user may hold only web.liveStreamsPerUser live streams at once; closing one frees its place', async () => {
    const w2 = await startTestWeb({ config: { web: { livePollMs: 50, liveStreamsPerUser: 2 } } });
    try {
      const eve = w2.client();
      await eve.signUp('eve');
      const df = await eve.createDockerfile('held', 'FROM debian:bookworm\n# fake: gate streams\nRUN true\n');
      const { id } = await eve.build(df);
      const open = () => {
        const ac = new AbortController();
        return {
          ac,
          res: fetch(`${eve.base}/api/builds/${id}/events`, {
            headers: { cookie: eve.cookieHeader() },
            signal: ac.signal,
          }),
        };
      };
      const one = open();
      const two = open();
      expect((await one.res).status).toBe(200);
      expect((await two.res).status).toBe(200);
      const three = await fetch(`${eve.base}/api/builds/${id}/events`, { headers: { cookie: eve.cookieHeader() } });
      expect(three.status).toBe(429);
      expect(three.headers.get('retry-after')).toBeTruthy();
      one.ac.abort();
      await until(async () => {
        const r = await fetch(`${eve.base}/api/builds/${id}/events`, { headers: { cookie: eve.cookieHeader() } });
        if (r.status === 200) {
          await r.body?.cancel();
          return true;
        }
        return false;
      });
      two.ac.abort();
      w2.local.openGate('streams');
      await w2.waitForBuild(id);
    } finally {
      await w2.close();
    }
  });

  it('the finished build page: 100% and "image ready" (not the last stage seen), sizes for people with exact bytes on hover, each boot test with its serial log; the JSON log has no machine lines', async () => {
    const df = await a.createDockerfile('big', 'FROM debian:bookworm\n# fake: big 2\nRUN true\n');
    const { id } = await a.build(df);
    await w.waitForBuild(id);
    // What a refresh caught while it ran: the page must not show it for a succeeded build.
    await w
      .db('builds')
      .where({ id })
      .update({ progress: JSON.stringify({ stage: 'boot', percent: 33, message: 'booting image.raw (uefi)' }) });
    const html = await (await a.get(`/builds/${id}`)).text();
    expect(html).toContain('<progress id="progress" max="100" value="100"></progress>');
    expect(html).toContain('<span id="stage">image ready</span>');
    expect(html).not.toContain('booting image.raw');
    expect(html).toMatch(
      /<a href="\/builds\/\d+\/artifacts\/image.raw" download>image.raw<\/a> <span class="muted size" title="2,097,152 bytes">2.00 MiB<\/span>/,
    );
    expect(html).not.toContain('2097152 bytes');
    expect(html).toMatch(
      /<td>raw <span class="muted">image.raw<\/span><\/td>\s*<td>BIOS<\/td>\s*<td>1.5 s<\/td>\s*<td><span class="state state-succeeded">passed<\/span><\/td>\s*<td><a href="\/builds\/\d+\/boot\/0">serial log<\/a><\/td>/,
    );
    const serial = await a.get(`/builds/${id}/boot/0`);
    expect(serial.status).toBe(200);
    const serialHtml = await serial.text();
    expect(serialHtml).toContain('Debian GNU/Linux 12 kiln ttyS0 &lt;b&gt;x&lt;/b&gt;');
    expect(serialHtml).toContain('kiln login:');
    expect((await a.get(`/builds/${id}/boot/1`)).status).toBe(404);
    const log = (await (await a.get(`/api/builds/${id}/log?offset=0`)).json()) as { text: string };
    expect(log.text).not.toContain('##kiln');
    expect(log.text.match(/\[kiln\] build succeeded/g)).toHaveLength(1);
    const api = (await (await a.get(`/api/builds/${id}`)).json()) as Json;
    expect(api.build.progressView).toEqual({ percent: 100, label: 'image ready' });
    expect(api.build.queue).toBeNull();
  });

  it('a failed build says above the log which Dockerfile line failed, and in which SDK stage', async () => {
    const df = await a.createDockerfile('broken', 'FROM debian:bookworm\n# fake: fail\nRUN true\n');
    const { id } = await a.build(df);
    expect((await w.waitForBuild(id)).state).toBe('failed');
    const html = await (await a.get(`/builds/${id}`)).text();
    const summary = /<section id="failure"[\s\S]*?<\/section>/.exec(html)?.[0] ?? '';
    expect(summary).toContain('Dockerfile line 3 failed: <code>RUN true</code>');
    expect(summary).toContain('RUN step 2 failed: exit 100');
    expect(html.indexOf('id="failure"')).toBeLessThan(html.indexOf('id="log"'));
    const report = (await (await a.get(`/api/builds/${id}/report`)).json()) as Json;
    expect(report.failure).toEqual({
      stage: 'build',
      line: 3,
      instruction: 'RUN true',
      message: 'RUN step 2 failed: exit 100',
    });
    const seen = logLines(await follow(a, id, {}, () => false));
    expect(seen.filter((l) => l.startsWith('[kiln] build failed'))).toHaveLength(1);
  });

  it("a finished build's report is made once and kept (one glue read for many views); one made while the glue failed is not kept", async () => {
    const df = await a.createDockerfile('broken-twice', 'FROM debian:bookworm\n# fake: fail\nRUN true\n');
    const first = await a.build(df);
    const second = await a.build(df);
    for (const b of [first, second]) expect((await w.waitForBuild(b.id)).state).toBe('failed');
    // What the web reads of a build through the glue (documents and the log), by build; `failing` fails log reads.
    const reads: string[] = [];
    let failing = false;
    const down = () => Object.assign(new Error('glue down'), { code: 'backend_unavailable' });
    const { artifact, call } = { artifact: w.glue.artifact.bind(w.glue), call: w.glue.call.bind(w.glue) };
    w.glue.artifact = async (job, build, name, offset) => {
      reads.push(`${build}:${name}`);
      if (failing && name === 'build.log') throw down();
      return artifact(job, build, name, offset);
    };
    w.glue.call = (async (verb: Parameters<typeof call>[0], args: Parameters<typeof call>[1]) => {
      if (verb === 'build.log') {
        reads.push(`${args[1]}:log`);
        if (failing) throw down();
      }
      return call(verb, args);
    }) as typeof call;
    try {
      const line = 'Dockerfile line 3 failed: <code>RUN true</code>';
      const views = await Promise.all(Array.from({ length: 5 }, () => a.get(`/builds/${first.id}`)));
      for (const v of views) expect(await v.text()).toContain(line);
      expect(await (await a.get(`/builds/${first.id}`)).text()).toContain(line);
      const backend = (await w.waitForBuild(first.id)).backend_build;
      expect(reads.filter((r) => r.startsWith(`${backend}:`)).sort()).toEqual([
        `${backend}:log`,
        `${backend}:result.json`,
      ]);

      failing = true;
      const degraded = await a.get(`/builds/${second.id}`);
      expect(degraded.status).toBe(200);
      const html = await degraded.text();
      expect(html).toContain('RUN step 2 failed: exit 100');
      expect(html).not.toContain(line);
      failing = false;
      expect(await (await a.get(`/builds/${second.id}`)).text()).toContain(line);
    } finally {
      Object.assign(w.glue, { artifact, call });
    }
  });

  it('manifest and SBOM pages search the packages; the package diff names what was added, removed and changed since the previous successful build', async () => {
    const df = await a.createDockerfile(
      'pkgs',
      'FROM debian:bookworm\n# fake-packages: libc6=2.36-9 curl=7.88 openssl=3.0.11\nRUN true\n',
    );
    const one = (await a.build(df)).id;
    expect((await w.waitForBuild(one)).state).toBe('succeeded');
    const t = await a.apiToken();
    expect(
      (
        await a.postJson(
          `/api/dockerfiles/${df}`,
          {
            content: 'FROM debian:bookworm\n# fake-packages: libc6=2.36-9+deb12u1 curl=7.88 zlib1g=1.2.13\nRUN true\n',
          },
          { 'x-csrf-token': t },
        )
      ).status,
    ).toBe(200);
    const two = (await a.build(df)).id;
    expect((await w.waitForBuild(two)).state).toBe('succeeded');

    const m = (await (await a.get(`/api/builds/${two}/manifest?q=LIB`)).json()) as Json;
    expect(m).toMatchObject({ available: true, total: 3, query: 'LIB' });
    expect(m.packages.map((p: Json) => p.name)).toEqual(['libc6', 'zlib1g']);
    const page = await (await a.get(`/builds/${two}/manifest?q=${encodeURIComponent('<script>"')}`)).text();
    expect(page).toContain('value="&lt;script&gt;&quot;"');
    expect(page).toContain('0 of 3 packages');
    const all = await (await a.get(`/builds/${two}/manifest`)).text();
    expect(all).toContain('<td>zlib1g</td><td><code>1.2.13</code></td>');
    expect(all).toContain('Debian GNU/Linux 12 (bookworm)');
    const s = (await (await a.get(`/api/builds/${two}/sbom?q=curl`)).json()) as Json;
    expect(s.packages).toEqual([{ name: 'curl', version: '7.88', purl: 'pkg:deb/debian/curl@7.88?arch=amd64' }]);
    expect(await (await a.get(`/builds/${two}/sbom?q=curl`)).text()).toContain(
      '<code>pkg:deb/debian/curl@7.88?arch=amd64</code>',
    );

    const diff = (await (await a.get(`/api/builds/${two}/diff`)).json()) as Json;
    expect(diff).toEqual({
      previous: one,
      available: true,
      unchanged: 1,
      added: [{ name: 'zlib1g', version: '1.2.13', architecture: 'amd64', source: 'zlib1g' }],
      removed: [{ name: 'openssl', version: '3.0.11', architecture: 'amd64', source: 'openssl' }],
      changed: [{ name: 'libc6', architecture: 'amd64', from: '2.36-9', to: '2.36-9+deb12u1' }],
    });
    const diffHtml = await (await a.get(`/builds/${two}/diff`)).text();
    expect(diffHtml).toContain(
      `Compared with <a href="/builds/${one}">build #${one}</a>: 1 added, 1 removed, 1 changed, 1 unchanged.`,
    );
    expect(await (await a.get(`/builds/${one}/diff`)).text()).toContain(
      'No earlier successful build of this Dockerfile',
    );
    // A build without a manifest says so instead of failing.
    const plain = await a.createDockerfile('plain', 'FROM debian:bookworm\nRUN true\n');
    const p = (await a.build(plain)).id;
    await w.waitForBuild(p);
    const none = await a.get(`/builds/${p}/manifest`);
    expect(none.status).toBe(200);
    expect(await none.text()).toContain('This build has no manifest to show');
  });

  it("build lists: per Dockerfile and of all of a user's builds (an admin: everyone's), with state, trigger, duration, filters and pages; another's Dockerfile is 404", async () => {
    const df = await a.createDockerfile('many', 'FROM debian:bookworm\nRUN true\n');
    const version = (await w.db('dockerfiles').where({ id: df }).first()).current_version_id as number;
    const owner = (await w.db('users').where({ username: 'alice' }).first()).id as number;
    for (let i = 0; i < 30; i++) {
      const b = await insertBuild(w.db, {
        dockerfileId: df,
        versionId: version,
        ownerId: owner,
        key: `list-key-${String(i).padStart(4, '0')}`,
      });
      await updateBuild(w.db, b.id, ['requested'], {
        state: i % 3 === 0 ? 'failed' : 'succeeded',
        started_at: '2026-01-01T10:00:00.000Z',
        finished_at: '2026-01-01T10:01:05.000Z',
      });
    }
    const p1 = (await (await a.get(`/api/builds?dockerfile=${df}`)).json()) as Json;
    expect(p1).toMatchObject({ page: 1, pages: 2, total: 30, filter: { dockerfile: df } });
    expect(p1.builds).toHaveLength(25);
    expect(p1.builds[0]).toMatchObject({ dockerfileName: 'many', owner: 'alice', durationSeconds: 65 });
    const p2 = (await (await a.get(`/api/builds?dockerfile=${df}&page=2`)).json()) as Json;
    expect(p2.builds).toHaveLength(5);
    expect(new Set([...p1.builds, ...p2.builds].map((b: Json) => b.id)).size).toBe(30);
    const failed = (await (await a.get(`/api/builds?dockerfile=${df}&state=failed`)).json()) as Json;
    expect(failed.total).toBe(10);
    expect(failed.builds.every((b: Json) => b.state === 'failed')).toBe(true);
    const html = await (await a.get(`/dockerfiles/${df}/builds?state=failed`)).text();
    expect(html).toContain('Builds of many');
    expect(html).toContain('<td>1 min 5 s</td>');
    expect(html).toContain('<td class="trigger">manual</td>');
    expect(html).toContain('<option value="failed" selected>failed</option>');
    const mine = await (await a.get('/builds?page=2')).text();
    expect(mine).toContain('href="/builds"');
    expect(mine).toMatch(/page 2 of \d+/);
    // Another user: none of alice's builds, and her Dockerfile's list is not found.
    const bobs = (await (await bob.get('/api/builds')).json()) as Json;
    expect(bobs.builds.filter((b: Json) => b.owner === 'alice')).toEqual([]);
    expect((await bob.get(`/api/builds?dockerfile=${df}`)).status).toBe(404);
    expect((await bob.get(`/dockerfiles/${df}/builds`)).status).toBe(404);
    // An admin sees everyone's.
    const all = (await (await admin.get(`/api/builds?dockerfile=${df}`)).json()) as Json;
    expect(all.total).toBe(30);
    expect(await (await admin.get('/builds')).text()).toContain('<th>Owner</th>');
    // Nonsense filters are ignored, not errors.
    expect((await a.get('/api/builds?state=bogus&page=-3')).status).toBe(200);
  });
});

describe('a fair queue', () => {
  it("local runner: A queues 10 builds, then B queues 1; B's build starts no later than second, and while it waits it shows its place and an ETA from past durations", async () => {
    const w = await startTestWeb({ glueConcurrency: 1, config: { web: { quotaQueuedBuilds: 20 } } });
    try {
      const a = w.client();
      await a.signUp('alice');
      const b = w.client();
      await b.signUp('bob');
      const bdf = await b.createDockerfile('b-one', 'FROM debian:bookworm\nRUN true\n');
      // A past build, so there is a duration to estimate from.
      await w.waitForBuild((await b.build(bdf)).id);
      const adf = await a.createDockerfile('a-ten', 'FROM debian:bookworm\n# fake: gate fair\nRUN true\n');
      const ids: number[] = [];
      for (let i = 0; i < 10; i++) ids.push((await a.build(adf)).id);
      for (const id of ids) await w.waitForBuild(id, (r) => r.backend_build !== null);
      await w.waitForBuild(ids[0]!, (r) => r.state === 'running');
      const bid = (await b.build(bdf)).id;
      await w.waitForBuild(bid, (r) => r.state === 'queued');
      const place = ((await (await b.get(`/api/builds/${bid}`)).json()) as Json).build.queue;
      expect(place).toMatchObject({ position: 1, waiting: 10 });
      expect(place.etaSeconds).toBeGreaterThanOrEqual(0);
      expect(place.typicalSeconds).toBeGreaterThanOrEqual(0);
      expect(await (await b.get(`/builds/${bid}`)).text()).toContain(
        'Waiting: number 1 of 10 in the queue, expected to start in about',
      );
      w.local.openGate('fair');
      const rows = await Promise.all([...ids, bid].map((id) => w.waitForBuild(id)));
      expect(rows.every((r) => r.state === 'succeeded')).toBe(true);
      const order = [...rows].sort((x, y) => Date.parse(x.started_at!) - Date.parse(y.started_at!)).map((r) => r.id);
      expect(order.indexOf(bid)).toBeLessThanOrEqual(1);
    } finally {
      await w.close();
    }
  });

  it("Jenkins-style cap (worker.userBuildsInFlight = 1): A's ten builds go to the backend one at a time, B's one goes at once (dispatched no later than second)", async () => {
    const w = await startTestWeb({
      glueConcurrency: 1,
      config: { web: { quotaQueuedBuilds: 20 }, worker: { userBuildsInFlight: 1 } },
    });
    try {
      const a = w.client();
      await a.signUp('alice');
      const b = w.client();
      await b.signUp('bob');
      const adf = await a.createDockerfile('a-ten', 'FROM debian:bookworm\n# fake: gate capped\nRUN true\n');
      const ids: number[] = [];
      for (let i = 0; i < 10; i++) ids.push((await a.build(adf)).id);
      await w.waitForBuild(ids[0]!, (r) => r.state === 'running');
      const bdf = await b.createDockerfile('b-one', 'FROM debian:bookworm\nRUN true\n');
      const bid = (await b.build(bdf)).id;
      await w.waitForBuild(bid, (r) => r.backend_build !== null);
      const atBackend = await w.db('builds').whereIn('id', ids).whereNotNull('backend_build').count({ n: '*' });
      expect(Number(atBackend[0]!.n)).toBe(1);
      expect((await w.db('builds').whereIn('id', ids).where({ state: 'requested' })).length).toBe(9);
      w.local.openGate('capped');
      const rows = await Promise.all([...ids, bid].map((id) => w.waitForBuild(id)));
      expect(rows.every((r) => r.state === 'succeeded')).toBe(true);
      const dispatched = [...rows].sort((x, y) => Date.parse(x.queued_at!) - Date.parse(y.queued_at!)).map((r) => r.id);
      expect(dispatched.indexOf(bid)).toBeLessThanOrEqual(1);
      // One at a time: each of A's builds was handed over only after the previous one ended.
      const aRows = rows.filter((r) => r.id !== bid).sort((x, y) => x.id - y.id);
      for (let i = 1; i < aRows.length; i++)
        expect(Date.parse(aRows[i]!.queued_at!)).toBeGreaterThanOrEqual(Date.parse(aRows[i - 1]!.finished_at!) - 1000);
    } finally {
      await w.close();
    }
  });
});
