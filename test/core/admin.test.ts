/**
 * The admin use cases on both engines, against the database alone: the site never loses its last admin, even when
 * two admins demote or disable each other at the same moment from two processes (two pools on one database), and an
 * admin action and its audit entry commit together or not at all.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { createUsers, userActor, type CoreDeps } from '../../src/core/index.js';
import { listAuditLog } from '../../src/core/audit.js';
import {
  QUEUE_STATES,
  countBuildsByState,
  findUserByName,
  insertBuild,
  insertDockerfile,
  insertUser,
  listBuildsInStates,
  listUsers,
  queueStats,
  updateBuild,
  type Db,
} from '../../src/db/index.js';
import { metricsText } from '../../src/core/admin.js';
import { isKilnError } from '../../src/shared/errors.js';
import { freshDb, secondPool, type TestDb } from '../db/engines.js';
import { dbOnlyDeps } from '../helpers/core.js';

const deps = (db: Db): CoreDeps => dbOnlyDeps(db, { who: 'an admin use case' });

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`admin use cases on ${engine}`, () => {
    let t: TestDb;
    let other: Db;
    beforeAll(async () => {
      t = await freshDb(engine);
      other = secondPool(t);
    });
    afterAll(async () => {
      await other?.destroy();
      await t?.drop();
    });
    beforeEach(async () => {
      await t.db('audit_log').delete();
      await t.db('users').delete();
    });

    const admins = async () =>
      (await listUsers(t.db)).filter((u) => u.role === 'admin' && !u.disabled).map((u) => u.username);
    async function twoAdmins() {
      const a = await insertUser(t.db, { username: 'ann', passwordHash: 'x', role: 'admin' });
      const b = await insertUser(t.db, { username: 'ben', passwordHash: 'x', role: 'admin' });
      return { a, b, asA: userActor(a, 'session', '10.0.0.1'), asB: userActor(b, 'session', '10.0.0.2') };
    }
    const outcome = (r: PromiseSettledResult<unknown>) =>
      r.status === 'fulfilled' ? 'ok' : isKilnError(r.reason) ? r.reason.code : String(r.reason);

    it('two admins demoting each other at once from two processes: one wins, one admin is left', async () => {
      for (let round = 0; round < 5; round++) {
        await t.db('users').delete();
        const { a, b, asA, asB } = await twoAdmins();
        const r = await Promise.allSettled([
          createUsers(deps(t.db)).setRole(asA, { id: String(b.id), role: 'user' }),
          createUsers(deps(other)).setRole(asB, { id: String(a.id), role: 'user' }),
        ]);
        expect(r.map(outcome).sort()).toEqual(['conflict', 'ok']);
        expect(await admins()).toHaveLength(1);
      }
    });

    it('two admins disabling each other at once: one wins, one admin is left', async () => {
      const { a, b, asA, asB } = await twoAdmins();
      const r = await Promise.allSettled([
        createUsers(deps(t.db)).setDisabled(asA, { id: String(b.id), disabled: true }),
        createUsers(deps(other)).setDisabled(asB, { id: String(a.id), disabled: true }),
      ]);
      expect(r.map(outcome).sort()).toEqual(['conflict', 'ok']);
      expect(await admins()).toHaveLength(1);
      // the refused one left no audit entry; the winner's is there, with who and from where
      const log = await listAuditLog({ db: t.db }, asA, {});
      expect(log).toHaveLength(1);
      expect(log[0]).toMatchObject({ action: 'user.disable', address: expect.stringMatching(/^10\.0\.0\.[12]$/) });
    });

    it('the queue and the metrics read the same numbers from the database', async () => {
      const u = await insertUser(t.db, { username: 'owner', passwordHash: 'x', role: 'user' });
      const { dockerfile, version } = await insertDockerfile(t.db, {
        ownerId: u.id,
        name: 'web',
        content: 'FROM debian:bookworm\n',
      });
      const mk = (key: string) =>
        insertBuild(t.db, { dockerfileId: dockerfile.id, versionId: version.id, ownerId: u.id, key });
      const a = await mk('queue-key-aaaa');
      const b = await mk('queue-key-bbbb');
      const c = await mk('queue-key-cccc');
      await updateBuild(t.db, b.id, ['requested'], { state: 'running', started_at: new Date().toISOString() });
      await updateBuild(t.db, c.id, ['requested'], { state: 'cancelled', finished_at: new Date().toISOString() });
      const counts = await countBuildsByState(t.db);
      expect(counts).toMatchObject({ requested: 1, running: 1, cancelled: 1, succeeded: 0 });
      expect(await queueStats(t.db)).toEqual({ depth: 1, oldestRequestedAt: a.requested_at });
      expect((await listBuildsInStates(t.db, QUEUE_STATES)).map((r) => [r.id, r.owner, r.dockerfile_name])).toEqual([
        [a.id, 'owner', 'web'],
        [b.id, 'owner', 'web'],
      ]);
      const admin = userActor(await insertUser(t.db, { username: 'boss', passwordHash: 'x', role: 'admin' }));
      const text = await metricsText(deps(t.db), admin, undefined);
      expect(text).toMatch(/^kiln_builds\{state="running"\} 1$/m);
      expect(text).toMatch(/^kiln_queue_depth 1$/m);
      await t.db('builds').delete();
      await t.db('dockerfiles').delete();
    });

    it('approval is idempotent and audited once; a disabled admin does not count as the remaining one', async () => {
      const { a, b, asA } = await twoAdmins();
      const pending = await insertUser(t.db, { username: 'newbie', passwordHash: 'x', role: 'user', approved: false });
      const users = createUsers(deps(t.db));
      expect((await users.approve(asA, { id: String(pending.id) })).approved).toBe(true);
      expect((await users.approve(asA, { id: String(pending.id) })).approved).toBe(true);
      expect((await listAuditLog({ db: t.db }, asA)).filter((e) => e.action === 'user.approve')).toHaveLength(1);
      await users.setDisabled(asA, { id: String(b.id), disabled: true });
      await expect(users.setRole(asA, { id: String(a.id), role: 'user' })).rejects.toMatchObject({ code: 'conflict' });
      expect((await findUserByName(t.db, 'ann'))?.role).toBe('admin');
      // a plain user may do none of it
      const plain = userActor(pending, 'session');
      await expect(users.approve(plain, { id: String(pending.id) })).rejects.toMatchObject({ code: 'forbidden' });
      await expect(listAuditLog({ db: t.db }, plain)).rejects.toMatchObject({ code: 'forbidden' });
    });
  });
}

describe('who may read the metrics', () => {
  it('admins always; anyone else only from an address in web.metricsAllow (IPv4, IPv6, prefixes, IPv4-mapped)', async () => {
    const { mayReadMetrics } = await import('../../src/core/policy.js');
    const { ANONYMOUS } = await import('../../src/core/actor.js');
    const allow = loadConfig({ KILN_WEB_METRICS_ALLOW: '10.9.0.0/16,fd00::/64,192.0.2.7' }).web.metricsAllow;
    const admin = userActor({ id: 1, username: 'root', role: 'admin' });
    const user = userActor({ id: 2, username: 'bob', role: 'user' });
    expect(mayReadMetrics(admin, '203.0.113.1', [])).toBe(true);
    expect(mayReadMetrics(user, '203.0.113.1', allow)).toBe(false);
    expect(mayReadMetrics(ANONYMOUS, '10.9.200.1', allow)).toBe(true);
    expect(mayReadMetrics(ANONYMOUS, '::ffff:10.9.0.1', allow)).toBe(true);
    expect(mayReadMetrics(ANONYMOUS, '10.10.0.1', allow)).toBe(false);
    expect(mayReadMetrics(ANONYMOUS, 'fd00::42', allow)).toBe(true);
    expect(mayReadMetrics(ANONYMOUS, 'fd01::42', allow)).toBe(false);
    expect(mayReadMetrics(ANONYMOUS, '192.0.2.7', allow)).toBe(true);
    expect(mayReadMetrics(ANONYMOUS, undefined, allow)).toBe(false);
    expect(mayReadMetrics(ANONYMOUS, 'not-an-address', allow)).toBe(false);
    expect(() => loadConfig({ KILN_WEB_METRICS_ALLOW: '10.0.0.0/33' })).toThrow(/KILN_WEB_METRICS_ALLOW/);
    expect(() => loadConfig({ KILN_WEB_METRICS_ALLOW: 'prometheus.example' })).toThrow(/an IP address/);
  });
});
