import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDb,
  findBuild,
  findBuildByKey,
  findDockerfile,
  findUserByName,
  getOrCreateSetting,
  getVersion,
  insertBuild,
  insertDockerfile,
  insertUser,
  isUniqueViolation,
  listBuildsToReconcile,
  listDockerfiles,
  migrateLatest,
  getThrottleBucket,
  setUserDisabled,
  updateBuild,
  updateDockerfileContent,
  countActiveBuilds,
  sha256Hex,
  completeAttestation,
  findAttestation,
  listBuildsToAttest,
  putBaseName,
  listBaseNames,
  deleteBaseName,
  listBuildsBefore,
  findBuildsByIds,
  advanceFollowed,
  findSourcesByMatchKey,
  getGitSource,
  hasBuildOfCommit,
  insertDockerfileRow,
  listSourcesToPoll,
  putFetchedVersion,
  putGitSource,
  recordFetch,
  takeScheduleSlot,
  listBuildSummaries,
  listBuildsInStates,
  findBuildWithDockerfile,
} from '../../src/db/index.js';
import { loadConfig } from '../../src/config/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { createDockerfile } from '../../src/core/dockerfiles.js';
import { requestBuild } from '../../src/core/builds/index.js';
import { PasswordHasher } from '../../src/core/passwords.js';
import { DEFAULT_LOGIN_LIMITS, type CoreDeps } from '../../src/core/deps.js';
import { userActor } from '../../src/core/actor.js';
import {
  accountBucket,
  pruneLoginThrottle,
  reserveLoginAttempt,
  settleLoginSuccess,
  type LoginReservation,
} from '../../src/core/login-throttle.js';
import type { GluePort } from '../../src/core/ports.js';
import { freshDb, type TestDb } from './engines.js';

const refuse = () => Promise.reject(new Error('a request reached the glue'));
const unreachable: GluePort = { call: refuse, wait: refuse, artifact: refuse, close: async () => undefined };

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`store on ${engine}`, () => {
    let t: TestDb;
    beforeAll(async () => {
      t = await freshDb(engine);
    });
    afterAll(async () => {
      await t?.drop();
    });

    it('migrations are idempotent', async () => {
      expect(await migrateLatest(t.db)).toEqual([]);
      for (const table of [
        'users',
        'sessions',
        'settings',
        'login_throttle',
        'dockerfiles',
        'dockerfile_versions',
        'dockerfile_contexts',
        'builds',
        'build_attestations',
        'base_names',
        'git_sources',
      ]) {
        expect(await t.db.schema.hasTable(table), table).toBe(true);
      }
    });

    it('users: insert, find, unique name, disable bumps the session epoch', async () => {
      const u = await insertUser(t.db, { username: 'alice', passwordHash: 'h', role: 'user' });
      expect(u).toMatchObject({ username: 'alice', role: 'user', disabled: false, session_epoch: 0 });
      const err = await insertUser(t.db, { username: 'alice', passwordHash: 'h', role: 'user' }).catch(
        (e: unknown) => e,
      );
      expect(isUniqueViolation(err)).toBe(true);
      await setUserDisabled(t.db, u.id, true);
      expect(await findUserByName(t.db, 'alice')).toMatchObject({ disabled: true, session_epoch: 1 });
      await setUserDisabled(t.db, u.id, false);
    });

    it('dockerfiles: owner-scoped reads, versions with sha256, unique name per owner', async () => {
      const a = (await findUserByName(t.db, 'alice'))!;
      const b = await insertUser(t.db, { username: 'bob', passwordHash: 'h', role: 'user' });
      const { dockerfile, version } = await t.db.transaction((trx) =>
        insertDockerfile(trx, { ownerId: a.id, name: 'web', content: 'FROM x\n' }),
      );
      expect(version.sha256).toBe(sha256Hex('FROM x\n'));
      expect(version.size).toBe(7);
      expect(await findDockerfile(t.db, dockerfile.id, a.id)).toMatchObject({
        name: 'web',
        current_version_id: version.id,
      });
      expect(await findDockerfile(t.db, dockerfile.id, b.id)).toBeUndefined();
      expect(await findDockerfile(t.db, dockerfile.id, null)).toBeDefined();
      const dup = await insertDockerfile(t.db, { ownerId: a.id, name: 'web', content: 'FROM y\n' }).catch(
        (e: unknown) => e,
      );
      expect(isUniqueViolation(dup)).toBe(true);
      await insertDockerfile(t.db, { ownerId: b.id, name: 'web', content: 'FROM y\n' });
      const same = await updateDockerfileContent(t.db, dockerfile.id, 'FROM x\n');
      expect(same.id).toBe(version.id);
      const v2 = await updateDockerfileContent(t.db, dockerfile.id, 'FROM z\n');
      expect(v2.id).not.toBe(version.id);
      expect((await getVersion(t.db, version.id))!.content).toBe('FROM x\n');
      const listA = await listDockerfiles(t.db, a.id);
      expect(listA.map((d) => [d.name, d.owner, d.size])).toEqual([['web', 'alice', 7]]);
      expect((await listDockerfiles(t.db, null)).length).toBe(2);
    });

    it('builds: unique idempotency key, guarded state updates, JSON fields round-trip', async () => {
      const a = (await findUserByName(t.db, 'alice'))!;
      const df = (await listDockerfiles(t.db, a.id))[0]!;
      const b1 = await insertBuild(t.db, {
        dockerfileId: df.id,
        versionId: df.current_version_id!,
        ownerId: a.id,
        key: 'key-0000001',
      });
      expect(b1).toMatchObject({ state: 'requested', backend_build: null, artifacts: [], progress: null });
      const dup = await insertBuild(t.db, {
        dockerfileId: df.id,
        versionId: df.current_version_id!,
        ownerId: a.id,
        key: 'key-0000001',
      }).catch((e: unknown) => e);
      expect(isUniqueViolation(dup)).toBe(true);
      expect((await findBuildByKey(t.db, 'key-0000001'))!.id).toBe(b1.id);
      expect(await updateBuild(t.db, b1.id, ['requested'], { state: 'queued', backend_build: 7 })).toBe(true);
      expect(await updateBuild(t.db, b1.id, ['requested'], { state: 'queued', backend_build: 8 })).toBe(false);
      await updateBuild(t.db, b1.id, ['queued'], {
        state: 'succeeded',
        artifacts: [{ name: 'image.raw', size: 5 }],
        progress: { stage: 'done', percent: 100 },
      });
      expect(await updateBuild(t.db, b1.id, ['requested', 'queued', 'running'], { state: 'running' })).toBe(false);
      expect(await findBuild(t.db, b1.id, a.id)).toMatchObject({
        state: 'succeeded',
        backend_build: 7,
        artifacts: [{ name: 'image.raw', size: 5 }],
        progress: { stage: 'done', percent: 100 },
      });
      const bob = (await findUserByName(t.db, 'bob'))!;
      expect(await findBuild(t.db, b1.id, bob.id)).toBeUndefined();
      await insertBuild(t.db, {
        dockerfileId: df.id,
        versionId: df.current_version_id!,
        ownerId: a.id,
        key: 'key-0000002',
      });
      expect(await countActiveBuilds(t.db, a.id)).toBe(1);
      expect((await listBuildsToReconcile(t.db)).map((b) => b.idempotency_key)).toEqual(['key-0000002']);
    });

    it('login throttle: concurrent reservations count every attempt; a success gives its count back', async () => {
      const limits = { ...DEFAULT_LOGIN_LIMITS, clientFreeFailures: 3, accountFailures: 7 };
      const now = 1_000_000;
      // 40 attempts at once from 40 addresses: the account bucket admits exactly 7, whatever the interleaving.
      const rs = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          reserveLoginAttempt(t.db, limits, now, 'someone', { kind: 'ip', ip: `10.0.0.${i}` }),
        ),
      );
      expect(rs.filter((r) => r.status === 'fulfilled').length).toBe(7);
      expect(
        rs
          .filter((r) => r.status === 'rejected')
          .every((r) => (r as PromiseRejectedResult).reason.code === 'rate_limited'),
      ).toBe(true);
      expect((await accountBucket(t.db, 'someone'))!.failures).toBe(7);
      await settleLoginSuccess(t.db, (rs[0] as PromiseFulfilledResult<LoginReservation>).value);
      expect((await accountBucket(t.db, 'someone'))!.failures).toBe(6);
      // one client: 3 free, then it waits; the device of the owner has its own bucket
      const one = await Promise.allSettled(
        Array.from({ length: 10 }, () =>
          reserveLoginAttempt(t.db, limits, now, 'other', { kind: 'ip', ip: '10.1.1.1' }),
        ),
      );
      expect(one.filter((r) => r.status === 'fulfilled').length).toBe(3);
      await expect(
        reserveLoginAttempt(t.db, limits, now, 'other', { kind: 'device', id: 'd'.repeat(22) }),
      ).resolves.toBeDefined();
      expect(
        await pruneLoginThrottle(
          t.db,
          limits,
          now + limits.accountWindowMs + limits.clientForgetMs + limits.clientMaxDelayMs,
        ),
      ).toBeGreaterThan(0);
      expect(await accountBucket(t.db, 'someone')).toBeUndefined();
      expect(await getThrottleBucket(t.db, 'nothing')).toBeUndefined();
    });

    it('settings: first writer wins', async () => {
      const v1 = await getOrCreateSetting(t.db, 's', () => 'one');
      const v2 = await getOrCreateSetting(t.db, 's', () => 'two');
      expect([v1, v2]).toEqual(['one', 'one']);
    });

    it('base names: one row per name, replaced in place, never past the limit under concurrent admins', async () => {
      const by = (await findUserByName(t.db, 'alice'))!.id;
      const first = await putBaseName(t.db, { name: 'corp/debian:12', base: 'debian:bookworm', by }, 3);
      expect(first).toMatchObject({
        created: true,
        row: { name: 'corp/debian:12', base: 'debian:bookworm', updated_by: by },
      });
      expect(await putBaseName(t.db, { name: 'corp/debian:12', base: 'debian:trixie', by }, 3)).toMatchObject({
        created: false,
        row: { base: 'debian:trixie' },
      });
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          putBaseName(t.db, { name: `corp/n${i}:1`, base: 'debian:bookworm', by }, 3),
        ),
      );
      expect(results.filter((r) => r !== 'over')).toHaveLength(2);
      expect(await listBaseNames(t.db)).toHaveLength(3);
      const id = (first as { row: { id: number } }).row.id;
      expect(await deleteBaseName(t.db, id)).toBe(true);
      expect(await deleteBaseName(t.db, id)).toBe(false);
      await t.db('base_names').del();
    });

    it('foreign keys are enforced', async () => {
      const err = await insertBuild(t.db, {
        dockerfileId: 999999,
        versionId: 999999,
        ownerId: 999999,
        key: 'key-fk-00001',
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(await findBuildByKey(t.db, 'key-fk-00001')).toBeUndefined();
    });

    it('case 20: quotas hold under 20 parallel requests (Dockerfiles and queued builds)', async () => {
      const config = loadConfig({}, { web: { quotaDockerfiles: 4, quotaQueuedBuilds: 3 } });
      // Requesting a build records it and enqueues its dispatch: it never reaches the glue.
      const s: CoreDeps = {
        config,
        db: t.db,
        glue: unreachable,
        logger: silentLogger,
        hasher: new PasswordHasher(1),
        limits: DEFAULT_LOGIN_LIMITS,
      };
      const u = await insertUser(t.db, { username: 'racer', passwordHash: 'h', role: 'user' });
      const actor = userActor(u);
      const dfs = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          createDockerfile(s, actor, { name: `df${i}`, content: 'FROM debian:bookworm\n' }),
        ),
      );
      expect(dfs.filter((r) => r.status === 'fulfilled').length).toBe(4);
      expect(
        dfs
          .filter((r) => r.status === 'rejected')
          .every((r) => (r as PromiseRejectedResult).reason.code === 'conflict'),
      ).toBe(true);
      const df = (await listDockerfiles(t.db, u.id))[0]!;
      const builds = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          requestBuild(s, actor, { dockerfileId: String(df.id), key: `race-key-${i}-abc` }),
        ),
      );
      const accepted = builds.flatMap((r) => (r.status === 'fulfilled' ? [r.value.build] : []));
      expect(accepted.length).toBe(3);
      expect(await countActiveBuilds(t.db, u.id)).toBe(3);
      // the same key twenty times at once: one build
      const key = accepted[0]!.idempotency_key;
      const same = await Promise.all(
        Array.from({ length: 20 }, () => requestBuild(s, { ...actor }, { dockerfileId: String(df.id), key })),
      );
      expect(new Set(same.map((r) => r.build.id))).toEqual(new Set([accepted[0]!.id]));
    });

    it('keyset pages (the REST API): every Dockerfile and build once, in the full listing order, whatever the collation', async () => {
      const u = await insertUser(t.db, { username: 'pager', passwordHash: 'h', role: 'user' });
      // Names whose order differs between byte order and a locale's collation ('-', '.', '_' and digits).
      const names = ['ab', 'a-b', 'a.b', 'a_b', 'a0', 'b', 'a-c', 'aa'];
      for (const name of names)
        await t.db.transaction((trx) => insertDockerfile(trx, { ownerId: u.id, name, content: 'FROM x\n' }));
      const all = (await listDockerfiles(t.db, u.id)).map((d) => d.name);
      const paged: string[] = [];
      let after: { name: string; id: number } | undefined;
      for (;;) {
        const page = await listDockerfiles(t.db, u.id, { ...(after ? { after } : {}), limit: 3 });
        paged.push(...page.map((d) => d.name));
        if (page.length < 3) break;
        after = { name: page[2]!.name, id: page[2]!.id };
      }
      expect(paged).toEqual(all);
      expect(new Set(paged).size).toBe(names.length);

      const df = (await listDockerfiles(t.db, u.id))[0]!;
      const ids: number[] = [];
      for (let i = 0; i < 7; i++)
        ids.push(
          (
            await insertBuild(t.db, {
              dockerfileId: df.id,
              versionId: df.current_version_id!,
              ownerId: u.id,
              key: `page-key-${i}`,
            })
          ).id,
        );
      const seen: number[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await listBuildsBefore(t.db, { ownerId: u.id, ...(before ? { beforeId: before } : {}), limit: 3 });
        seen.push(...page.map((b) => b.id));
        if (page.length < 3) break;
        before = page[2]!.id;
      }
      expect(seen).toEqual([...ids].reverse());
      expect([...(await findBuildsByIds(t.db, [ids[0]!, ids[3]!, 999_999])).keys()].sort()).toEqual(
        [ids[0]!, ids[3]!].sort(),
      );
    });

    it('git sources: one per Dockerfile, found by match key, guarded moves of following and the schedule slot, one version per fetched source, a build pinned to its commit; gone with its Dockerfile', async () => {
      const u = await insertUser(t.db, { username: 'gitter', passwordHash: 'h', role: 'user' });
      const df = await t.db.transaction((trx) => insertDockerfileRow(trx, { ownerId: u.id, name: 'from-git' }));
      const fields = {
        url: 'https://git.example.com/team/images.git',
        match_key: 'git.example.com/team/images',
        ref: 'main',
        dockerfile_path: 'Dockerfile',
        context_dir: '',
        follow: true,
      };
      const g = await putGitSource(t.db, df.id, fields, () => 'secret-1');
      expect(g).toMatchObject({
        ...fields,
        webhook_secret: 'secret-1',
        revision: 1,
        fetched_revision: 0,
        follow: true,
      });
      expect((await findSourcesByMatchKey(t.db, fields.match_key)).map((x) => x.dockerfile_id)).toEqual([df.id]);
      expect(await listSourcesToPoll(t.db, '9999')).toHaveLength(1);
      const c1 = 'a'.repeat(40);
      expect(await advanceFollowed(t.db, df.id, null, c1)).toBe(true);
      expect(await advanceFollowed(t.db, df.id, null, 'b'.repeat(40))).toBe(false); // someone moved it first
      expect(await takeScheduleSlot(t.db, df.id, null, '2031-01-01T03:00:00.000Z', 'daily@-@3')).toBe(true);
      expect(await takeScheduleSlot(t.db, df.id, null, '2031-01-01T03:00:00.000Z', 'daily@-@3')).toBe(false);
      const source = {
        type: 'git' as const,
        url: fields.url,
        ref: 'main',
        commit: c1,
        path: 'Dockerfile',
        context: '',
      };
      const v1 = await t.db.transaction((trx) =>
        putFetchedVersion(trx, df.id, { content: 'FROM debian:bookworm\n', source }),
      );
      const again = await t.db.transaction((trx) =>
        putFetchedVersion(trx, df.id, { content: 'FROM debian:bookworm\n', source }),
      );
      expect(again).toMatchObject({ created: false, version: { id: v1.version.id } });
      const v2 = await t.db.transaction((trx) =>
        putFetchedVersion(trx, df.id, {
          content: 'FROM debian:bookworm\n',
          source: { ...source, commit: 'c'.repeat(40) },
        }),
      );
      expect(v2.created).toBe(true);
      expect((await getVersion(t.db, v1.version.id))!.source).toEqual(source);
      expect((await findDockerfile(t.db, df.id, null))!.current_version_id).toBe(v2.version.id);
      expect(await recordFetch(t.db, df.id, 1, { commit: 'c'.repeat(40) })).toBe(true);
      expect(await recordFetch(t.db, df.id, 7, { error: 'stale revision' })).toBe(false);
      const b = await insertBuild(t.db, {
        dockerfileId: df.id,
        versionId: v2.version.id,
        ownerId: u.id,
        key: 'git-build-key-1',
        trigger: 'push',
        gitCommit: 'c'.repeat(40),
      });
      expect(b).toMatchObject({ trigger: 'push', git_commit: 'c'.repeat(40) });
      expect(await hasBuildOfCommit(t.db, df.id, 'c'.repeat(40))).toBe(true);
      expect(await updateBuild(t.db, b.id, ['requested'], { state: 'skipped', reason: 'unchanged' })).toBe(true);
      expect(await updateBuild(t.db, b.id, ['requested'], { state: 'queued' })).toBe(false);
      await t.db('builds').where({ id: b.id }).delete();
      await t.db('dockerfile_versions').where({ dockerfile_id: df.id }).delete();
      await t.db('dockerfiles').where({ id: df.id }).delete();
      expect(await getGitSource(t.db, df.id)).toBeUndefined();
    });

    it("attestation: verifying -> succeeded with the web's digests and the attestation row in one transaction, once", async () => {
      const u = await insertUser(t.db, { username: 'attester', passwordHash: 'h', role: 'user' });
      const { dockerfile, version } = await t.db.transaction((trx) =>
        insertDockerfile(trx, { ownerId: u.id, name: 'att', content: 'FROM x\n' }),
      );
      const b = await insertBuild(t.db, {
        dockerfileId: dockerfile.id,
        versionId: version.id,
        ownerId: u.id,
        key: 'attest-key-1',
      });
      await updateBuild(t.db, b.id, ['requested'], {
        state: 'verifying',
        backend_build: 3,
        artifacts: [{ name: 'image.raw', size: 9 }],
      });
      expect((await listBuildsToAttest(t.db)).map((x) => x.id)).toEqual([b.id]);
      const att = {
        artifacts: [{ name: 'image.raw', size: 9, sha256: 'a'.repeat(64) }],
        imageSha256: 'a'.repeat(64),
        sums: 'sums\n',
        signature: 'sig\n',
        publicKey: 'ssh-ed25519 AAAA k',
      };
      const results = await Promise.all([
        completeAttestation(t.db, b.id, att),
        completeAttestation(t.db, b.id, { ...att, sums: 'other\n' }),
      ]);
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await findBuild(t.db, b.id, null)).toMatchObject({
        state: 'succeeded',
        image_sha256: 'a'.repeat(64),
        artifacts: att.artifacts,
      });
      expect(await findAttestation(t.db, b.id)).toMatchObject({
        build_id: b.id,
        sums: results[0] ? 'sums\n' : 'other\n',
        signature: 'sig\n',
        public_key: 'ssh-ed25519 AAAA k',
      });
      expect(await listBuildsToAttest(t.db)).toEqual([]);
      expect(await completeAttestation(t.db, b.id, att)).toBe(false);
    });

    it('the lists and the build page read by plain SQL: owner scope, order, keyset pages, one joined build row', async () => {
      const carol = await insertUser(t.db, { username: 'carol', passwordHash: 'h', role: 'user' });
      const dave = await insertUser(t.db, { username: 'dave', passwordHash: 'h', role: 'user' });
      const mk = async (ownerId: number, name: string) =>
        (await t.db.transaction((trx) => insertDockerfile(trx, { ownerId, name, content: `FROM ${name}\n` })))
          .dockerfile;
      const zeta = await mk(carol.id, 'zeta');
      const alpha = await mk(carol.id, 'alpha');
      const other = await mk(dave.id, 'other');
      const ids: number[] = [];
      for (const [df, owner] of [
        [zeta, carol],
        [alpha, carol],
        [zeta, carol],
        [other, dave],
      ] as const) {
        const b = await insertBuild(t.db, {
          dockerfileId: df.id,
          versionId: df.current_version_id!,
          ownerId: owner.id,
          key: `sql-${ids.length}`,
        });
        ids.push(b.id);
      }
      const mine = await listDockerfiles(t.db, carol.id);
      expect(mine.map((d) => [d.name, d.owner, d.size, d.builds])).toEqual([
        ['alpha', 'carol', 11, 1],
        ['zeta', 'carol', 10, 2],
      ]);
      expect(mine[0]).toEqual({
        ...(await findDockerfile(t.db, alpha.id, carol.id)),
        owner: 'carol',
        size: 11,
        builds: 1,
      });
      expect(
        (await listDockerfiles(t.db, carol.id, { after: { name: 'alpha', id: alpha.id }, limit: 5 })).map(
          (d) => d.name,
        ),
      ).toEqual(['zeta']);
      // Everyone's (other tests' too): ours among them, and a page is the head of the same order.
      const everyone = await listDockerfiles(t.db, null);
      expect(everyone.map((d) => d.id)).toEqual(expect.arrayContaining([zeta.id, alpha.id, other.id]));
      expect(await listDockerfiles(t.db, null, { limit: 2 })).toEqual(everyone.slice(0, 2));
      const recent = await listBuildSummaries(t.db, carol.id, 20);
      expect(recent.map((b) => b.id)).toEqual([ids[2], ids[1], ids[0]]);
      expect(recent[2]).toEqual({
        id: ids[0],
        dockerfile_id: zeta.id,
        dockerfile_name: 'zeta',
        owner_id: carol.id,
        owner: 'carol',
        state: 'requested',
        reason: null,
        trigger: 'manual',
        requested_at: (await findBuild(t.db, ids[0]!, null))!.requested_at,
        started_at: null,
        finished_at: null,
      });
      expect((await listBuildSummaries(t.db, null, 2)).map((b) => b.id)).toEqual([ids[3], ids[2]]);
      expect((await listBuildsInStates(t.db, ['requested'])).map((b) => b.id).filter((id) => ids.includes(id))).toEqual(
        ids,
      );

      const page = await findBuildWithDockerfile(t.db, ids[1]!, carol.id);
      expect(page).toEqual({
        build: await findBuild(t.db, ids[1]!, carol.id),
        // every column the Dockerfile row has, as findDockerfile reads it
        dockerfile: await findDockerfile(t.db, alpha.id, carol.id),
        versionSha: sha256Hex('FROM alpha\n'),
      });
      expect(await findBuildWithDockerfile(t.db, ids[1]!, dave.id)).toBeUndefined();
      expect((await findBuildWithDockerfile(t.db, ids[1]!, null))?.build.id).toBe(ids[1]);
    });
  });
}

describe('SQLite connection settings', () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await freshDb('sqlite');
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('case 48: every pooled connection has WAL, synchronous=FULL, busy_timeout and foreign keys', async () => {
    const others = [
      createDb({ client: 'sqlite', filename: t.filename! }),
      createDb({ client: 'sqlite', filename: t.filename! }),
    ];
    try {
      for (const db of [t.db, ...others]) {
        expect((await db.raw('PRAGMA journal_mode'))[0].journal_mode).toBe('wal');
        expect((await db.raw('PRAGMA synchronous'))[0].synchronous).toBe(2);
        expect((await db.raw('PRAGMA busy_timeout'))[0].timeout).toBeGreaterThan(0);
        expect((await db.raw('PRAGMA foreign_keys'))[0].foreign_keys).toBe(1);
      }
    } finally {
      await Promise.all(others.map((d) => d.destroy()));
    }
  });

  it('case 48: 50 concurrent writers (one pool, like the web) plus a second process-like connection: no SQLITE_BUSY', async () => {
    // One pooled connection per process is the design (see knex.ts); a second pool stands in for `kiln user add`
    // running beside the server, which busy_timeout makes wait instead of failing.
    const other = createDb({ client: 'sqlite', filename: t.filename! });
    try {
      const u = await insertUser(t.db, { username: 'writer', passwordHash: 'h', role: 'user' });
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) =>
          (i % 5 === 0 ? other : t.db).transaction(async (trx) => {
            await insertDockerfile(trx, { ownerId: u.id, name: `w${i}`, content: `FROM x\n# ${i}\n` });
          }),
        ),
      );
      const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      expect(failed.map((f) => String(f.reason))).toEqual([]);
      expect((await listDockerfiles(t.db, u.id)).length).toBe(50);
    } finally {
      await other.destroy();
    }
  });
});
