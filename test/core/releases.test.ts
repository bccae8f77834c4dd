/**
 * Releases and retention through the core's use cases, on SQLite and PostgreSQL, with the real glue and local
 * backend in-process (fake SDK) and a worker the test drains on a clock it moves (no sleeps for days):
 * promotion (names, idempotency, the 409 for a taken name), the copy into the release store (atomic: a copy cut
 * off leaves nothing; checked against the build's signed SHA256SUMS; signed by the web), retention (N and D,
 * never a release, a pinned build or the latest success; files and rows move together), pins within their limit.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import {
  CLI,
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  createCore,
  createUsers,
  createWorker,
  signingKey,
  userActor,
  type Core,
} from '../../src/core/index.js';
import { buildsToDiscard } from '../../src/core/retention.js';
import { enqueue } from '../../src/core/tasks/queue.js';
import { findBuild, findUserByName, listTasksOf, storageUsedBy, type RetentionBuild } from '../../src/db/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { verifyDir } from '../../src/sdk/verify.js';
import { freshDb, type TestDb } from '../db/engines.js';
import { startInProcessGlue, type InProcessGlue } from '../helpers/in-process-glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { TEST_WORKER } from '../helpers/web.js';

const DAY = 86_400_000;
const DOCKERFILE = 'FROM debian:bookworm\n# fake-packages: a=1 b=2\nRUN true\n';

describe('the retention rule (pure)', () => {
  const now = Date.parse('2030-01-31T00:00:00Z');
  const b = (id: number, o: Partial<RetentionBuild> = {}): RetentionBuild => ({
    id,
    state: 'succeeded',
    backend_build: id,
    pinned: false,
    started: new Date(now - id * DAY).toISOString(),
    releasing: false,
    ...o,
  });
  it('drops beyond the newest N or older than D days, never a pinned, running, releasing build or the latest success', () => {
    // Newest first: 1 day old ... 8 days old.
    const builds = [b(1, { state: 'failed' }), b(2), b(3), b(4, { pinned: true }), b(5, { releasing: true }), b(6)];
    expect(buildsToDiscard(builds, { keepBuilds: 2, keepDays: 0 }, now)).toEqual([3, 6]);
    expect(buildsToDiscard(builds, { keepBuilds: 0, keepDays: 2 }, now)).toEqual([3, 6]);
    expect(buildsToDiscard(builds, { keepBuilds: 0, keepDays: 0 }, now)).toEqual([]);
    // The latest success is kept however old; a build still running is never touched.
    expect(buildsToDiscard([b(7, { state: 'running' }), b(8), b(9)], { keepBuilds: 0, keepDays: 1 }, now)).toEqual([9]);
  });
});

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`releases and retention on ${engine}`, () => {
    const tmp = tempDir('kiln-releases-');
    let t: TestDb;
    let glue: InProcessGlue;
    let core: Core;
    let shift = 0;
    const now = () => Date.now() + shift;
    let alice: ReturnType<typeof userActor>;
    let bob: ReturnType<typeof userActor>;
    let root: ReturnType<typeof userActor>;
    const config = loadConfig(
      {},
      {
        dataDir: tmp.dir,
        sdk: { formats: ['raw'] },
        worker: TEST_WORKER,
        retention: { keepBuilds: 2, keepDays: 30, pinsPerUser: 1 },
      },
    );
    const store = path.join(tmp.dir, 'releases');
    const drain = () => createWorker({ config, db: t.db, glue: glue.client, logger: silentLogger, now }).drain();
    let seq = 0;
    const newDockerfile = async () =>
      (await core.dockerfiles.create(alice, { name: `df${++seq}`, content: DOCKERFILE })).id;
    const build = async (df: number): Promise<number> => {
      const { build: b } = await core.builds.request(alice, {
        dockerfileId: `${df}`,
        key: `k-${engine}-${++seq}-build`,
      });
      await until(async () => {
        await drain();
        return (await findBuild(t.db, b.id, null))?.state === 'succeeded';
      });
      return b.id;
    };
    const release = (id: number) => core.releases.get(CLI, `${id}`);
    /** The backend's archive of a build (local backend). */
    const archive = async (buildId: number) => {
      const b = (await findBuild(t.db, buildId, null))!;
      return glue.archive(b.dockerfile_id, b.backend_build!);
    };

    beforeAll(async () => {
      t = await freshDb(engine);
      glue = await startInProcessGlue({ dataDir: path.join(tmp.dir, 'glue-data') });
      core = createCore({
        config,
        db: t.db,
        glue: glue.client,
        logger: silentLogger,
        hasher: new PasswordHasher(1),
        limits: DEFAULT_LOGIN_LIMITS,
        now,
      });
      const users = createUsers({ db: t.db, hasher: new PasswordHasher(1), logger: silentLogger });
      for (const name of ['alice', 'bob']) await users.create(CLI, { username: name, role: 'user' });
      await users.create(CLI, { username: 'root', role: 'admin' });
      alice = userActor((await findUserByName(t.db, 'alice'))!);
      bob = userActor((await findUserByName(t.db, 'bob'))!);
      root = userActor((await findUserByName(t.db, 'root'))!);
    }, 120_000);
    afterAll(async () => {
      await glue?.close();
      await t?.drop();
      tmp.cleanup();
    });

    it('promote: a signed copy in the release store that kiln verify accepts; the same build and name again is the same release; another build under a taken name is 409; names are checked', async () => {
      const df = await newDockerfile();
      const b1 = await build(df);
      const b2 = await build(df);
      const first = await core.releases.promote(alice, { build: `${b1}`, name: 'v1.2' });
      expect(first).toMatchObject({ created: true, release: { state: 'pending', name: 'v1.2', build_id: b1 } });
      await drain();
      const r = await release(first.release.id);
      expect(r.state).toBe('ready');
      expect(r.files.map((f) => f.name).sort()).toEqual([
        'SHA256SUMS',
        'SHA256SUMS.sig',
        'image.raw',
        'manifest.json',
        'release.json',
        'sbom.spdx.json',
      ]);
      const dir = path.join(store, String(r.id));
      expect(readdirSync(store)).toEqual([String(r.id)]);
      const key = await signingKey(config);
      const report = await verifyDir(dir, { publicKey: key.publicKey, requireSignature: true, sbom: false });
      expect(report.checks.filter((c) => !c.ok)).toEqual([]);
      expect(report.ok).toBe(true);
      const provenance = JSON.parse(readFileSync(path.join(dir, 'release.json'), 'utf8')) as Record<string, unknown>;
      expect(provenance).toMatchObject({
        type: 'https://kiln.dev/release/v1',
        name: 'v1.2',
        dockerfile: { id: df, owner: 'alice' },
        build: { id: b1, signedBy: key.publicKey },
        promotedBy: 'alice',
      });
      expect(readFileSync(path.join(dir, 'image.raw'), 'utf8')).toBe('RAW-IMAGE-BYTES');

      const again = await core.releases.promote(alice, { build: `${b1}`, name: 'v1.2' });
      expect(again).toMatchObject({ created: false, release: { id: r.id, state: 'ready' } });
      await expect(core.releases.promote(alice, { build: `${b2}`, name: 'v1.2' })).rejects.toMatchObject({
        code: 'conflict',
        message: expect.stringMatching(/already has a release v1\.2 \(build \d+\).*another name/),
      });
      for (const bad of ['', '.', '..', 'a/b', '../x', '-rc', 'v 1', 'x'.repeat(65), 'v1\n', 'é'])
        await expect(core.releases.promote(alice, { build: `${b2}`, name: bad }), bad).rejects.toMatchObject({
          code: 'invalid_input',
        });
      // Not alice's: bob sees no such build; the admin may promote it.
      await expect(core.releases.promote(bob, { build: `${b2}`, name: 'bobs' })).rejects.toMatchObject({
        code: 'not_found',
      });
      await expect(core.releases.get(bob, `${r.id}`)).rejects.toMatchObject({ code: 'not_found' });
      const byAdmin = await core.releases.promote(root, { build: `${b2}`, name: '2030.01_rc-1' });
      expect(byAdmin.created).toBe(true);
      await drain();
      expect((await release(byAdmin.release.id)).state).toBe('ready');
      // The copy counts in the owner's storage.
      expect((await storageUsedBy(t.db, alice.id)).releases).toBeGreaterThan(0);
    }, 120_000);

    it('a copy cut off mid-way leaves no half release (no directory, no temp), stays pending and is made whole on the retry', async () => {
      const df = await newDockerfile();
      const b = await build(df);
      glue.cutStream('image.raw', 5);
      const { release: r } = await core.releases.promote(alice, { build: `${b}`, name: 'cut' });
      await drain();
      expect((await release(r.id)).state).toBe('pending');
      expect(existsSync(path.join(store, String(r.id)))).toBe(false);
      expect(readdirSync(store).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
      const task = (await listTasksOf(t.db, `release:${r.id}`)).find((x) => x.kind === 'release.make');
      expect(task).toMatchObject({ state: 'pending', last_error: expect.stringMatching(/lost/) });
      // A file is never served while the release is pending.
      await expect(core.releases.file(alice, `${r.id}`, 'image.raw')).rejects.toMatchObject({ code: 'not_found' });
      shift += 60_000; // past the retry's backoff
      await drain();
      expect((await release(r.id)).state).toBe('ready');
      const got = await core.releases.file(alice, `${r.id}`, 'image.raw');
      const chunks: Buffer[] = [];
      for await (const c of got.stream) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe('RAW-IMAGE-BYTES');
    }, 120_000);

    it('a file changed at the build service after it was signed fails the release with the reason; nothing lands in the store', async () => {
      const df = await newDockerfile();
      const b = await build(df);
      writeFileSync(path.join(await archive(b), 'image.raw'), 'TAMPERED-BYTES!');
      const { release: r } = await core.releases.promote(alice, { build: `${b}`, name: 'tampered' });
      await drain();
      expect(await release(r.id)).toMatchObject({
        state: 'failed',
        reason: expect.stringMatching(
          /image\.raw at the build service no longer matches build \d+'s signed SHA256SUMS/,
        ),
      });
      expect(existsSync(path.join(store, String(r.id)))).toBe(false);
      expect(readdirSync(store).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    }, 120_000);

    it('retention keeps the newest N, drops older than D days, never a release, a pinned build or the latest success; rows and files together; pins within their limit', async () => {
      const df = await newDockerfile();
      const [b1, b2, b3, b4, b5] = [
        await build(df),
        await build(df),
        await build(df),
        await build(df),
        await build(df),
      ];
      const { release: r } = await core.releases.promote(alice, { build: `${b1}`, name: 'keep-me' });
      await drain();
      expect((await release(r.id)).state).toBe('ready');
      // Pins: only a user's own builds (or an admin), at most retention.pinsPerUser.
      await expect(core.builds.pin(bob, `${b2}`)).rejects.toMatchObject({ code: 'not_found' });
      expect((await core.builds.pin(alice, `${b2}`)).pinned).toBe(true);
      expect((await core.builds.pin(alice, `${b2}`)).pinned).toBe(true);
      await expect(core.builds.pin(root, `${b4}`)).rejects.toMatchObject({
        code: 'quota_exceeded',
        message: expect.stringMatching(/1 builds are pinned already.*retention\.pinsPerUser = 1.*unpin one first/),
      });
      const usedBefore = (await storageUsedBy(t.db, alice.id)).artifacts;

      // The glue is away when the discards run: rows are marked (downloads refuse), files stay until it is back.
      glue.down = true;
      await enqueue(t.db, { config, now }, 'retention', '');
      await drain();
      const expiredNow = async () =>
        (await Promise.all([b1, b2, b3, b4, b5].map((id) => findBuild(t.db, id, null))))
          .filter((b) => b!.artifacts_expired_at)
          .map((b) => b!.id);
      expect(await expiredNow()).toEqual([b1, b3]);
      for (const id of [b1, b3]) expect(existsSync(path.join(await archive(id), 'image.raw'))).toBe(true);
      await expect(core.builds.artifact(alice, `${b3}`, 'image.raw')).rejects.toMatchObject({
        code: 'not_found',
        message: expect.stringMatching(/artifacts of build \d+ expired on .*retention/),
      });
      expect((await storageUsedBy(t.db, alice.id)).artifacts).toBeLessThan(usedBefore);
      glue.down = false;
      shift += 60_000;
      await drain();
      for (const id of [b1, b3]) expect(existsSync(await archive(id))).toBe(false);
      for (const id of [b2, b4, b5]) expect(existsSync(path.join(await archive(id), 'image.raw'))).toBe(true);
      // The release of the expired b1 lives on in its own store, whole and verifiable.
      const key = await signingKey(config);
      expect((await verifyDir(path.join(store, String(r.id)), { publicKey: key.publicKey, sbom: false })).ok).toBe(
        true,
      );
      // An expired build can be neither pinned nor released.
      await expect(core.builds.pin(alice, `${b3}`)).rejects.toMatchObject({ code: 'not_found' });
      await expect(core.releases.promote(alice, { build: `${b3}`, name: 'late' })).rejects.toMatchObject({
        code: 'not_found',
      });

      // 40 days on: b4 is older than D; b5 is the latest success and b2 is pinned, so both stay.
      shift += 40 * DAY;
      await enqueue(t.db, { config, now }, 'retention', '');
      await drain();
      expect(await expiredNow()).toEqual([b1, b3, b4]);
      expect(existsSync(await archive(b4))).toBe(false);
      expect(existsSync(path.join(await archive(b2), 'image.raw'))).toBe(true);
      expect(existsSync(path.join(await archive(b5), 'image.raw'))).toBe(true);

      // Unpinned, b2 goes at once (its Dockerfile's retention runs with the unpin).
      expect((await core.builds.unpin(alice, `${b2}`)).pinned).toBe(false);
      await drain();
      expect(await expiredNow()).toEqual([b1, b2, b3, b4]);
      expect(existsSync(await archive(b2))).toBe(false);
      expect(readdirSync(path.join(store, String(r.id)))).toContain('image.raw');
    }, 180_000);

    it('the backend itself refuses to discard a kept (pinned) build', async () => {
      const df = await newDockerfile();
      const b = await build(df);
      const row = (await findBuild(t.db, b, null))!;
      await glue.client.call('build.keep', [df, row.backend_build!, 'on']);
      await expect(glue.client.call('build.discard', [df, row.backend_build!])).rejects.toMatchObject({
        code: 'conflict',
      });
      await glue.client.call('build.keep', [df, row.backend_build!, 'off']);
      expect(await glue.client.call('build.discard', [df, row.backend_build!])).toMatchObject({ discarded: true });
      expect(await glue.client.call('build.discard', [df, row.backend_build!])).toMatchObject({ discarded: false });
    }, 120_000);

    it('deleting the Dockerfile removes its releases, files and rows', async () => {
      const df = await newDockerfile();
      const b = await build(df);
      const { release: r } = await core.releases.promote(alice, { build: `${b}`, name: 'gone-soon' });
      await drain();
      expect(existsSync(path.join(store, String(r.id)))).toBe(true);
      const { dockerfile } = await core.dockerfiles.get(alice, `${df}`);
      await core.dockerfiles.remove(alice, { id: `${df}`, confirm: dockerfile.name });
      await until(async () => {
        await drain();
        return !existsSync(path.join(store, String(r.id)));
      });
      await until(async () => (await core.releases.list(CLI, { buildId: b })).length === 0);
    }, 120_000);
  });
}
