/**
 * API tokens on both engines, against the database and the core alone: stored hashed, found by their public id,
 * refused with the reason once revoked, expired (on a clock the test moves) or their account disabled; and the one
 * policy refusing a token's action beyond its scopes in the use cases themselves, not only at a door.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import {
  CLI,
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  createCore,
  userActor,
  type CoreDeps,
  type UserActor,
} from '../../src/core/index.js';
import { ownerScope } from '../../src/core/policy.js';
import type { GluePort } from '../../src/core/ports.js';
import { insertDockerfile, insertUser, type Db } from '../../src/db/index.js';
import { KilnError } from '../../src/shared/errors.js';
import { silentLogger } from '../../src/shared/logger.js';
import { freshDb, secondPool, type TestDb } from '../db/engines.js';

const refuse = () => Promise.reject(new Error('a token use case reached the glue'));
const noGlue: GluePort = { call: refuse, wait: refuse, artifact: refuse, close: async () => undefined };

/** The error a promise rejects with (code and message), or 'ok'. */
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof KilnError ? `${e.code}: ${e.message}` : `other: ${String(e)}`),
  );

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`API tokens on ${engine}`, () => {
    let t: TestDb;
    let clock = Date.parse('2026-11-26T12:00:00Z');
    const core = (db: Db, tokensPerUser = 50) =>
      createCore({
        config: loadConfig({}, { api: { tokensPerUser } }),
        db,
        glue: noGlue,
        logger: silentLogger,
        hasher: new PasswordHasher(1),
        limits: DEFAULT_LOGIN_LIMITS,
        now: () => clock,
      } satisfies CoreDeps);
    let alice: UserActor;
    let root: UserActor;
    beforeAll(async () => {
      t = await freshDb(engine);
    });
    afterAll(async () => {
      await t?.drop();
    });
    beforeEach(async () => {
      await t.db('api_tokens').delete();
      await t.db('dockerfiles').delete();
      await t.db('audit_log').delete();
      await t.db('users').delete();
      alice = userActor(await insertUser(t.db, { username: 'alice', passwordHash: 'x', role: 'user' }));
      root = userActor(await insertUser(t.db, { username: 'root', passwordHash: 'x', role: 'admin' }));
    });

    it('a token is shown once and stored only as its hash; it is found by its public id and checked in full', async () => {
      const c = core(t.db);
      const { token, row } = await c.tokens.create(alice, { name: 'gitlab-ci', scopes: ['build'] });
      expect(token).toMatch(/^kiln_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
      const stored = await t.db('api_tokens').where({ id: row.id }).first();
      expect(JSON.stringify(stored)).not.toContain(token.slice(22));
      expect(stored.public_id).toBe(token.slice(5, 21));
      const a = await c.tokens.actor(`Bearer ${token}`, '10.0.0.1');
      expect(a).toMatchObject({ kind: 'user', id: alice.id, via: 'token', scopes: ['build'], tokenId: row.id });
      // The right public id with a wrong secret, an unknown id, garbage: one answer, 401.
      const wrong = `${token.slice(0, 22)}${'A'.repeat(43)}`;
      const unknown = `kiln_${'0'.repeat(16)}_${token.slice(22)}`;
      for (const h of [`Bearer ${wrong}`, `Bearer ${unknown}`, 'Bearer nope', token, undefined]) {
        expect(await outcome(c.tokens.actor(h))).toMatch(
          /^unauthenticated: The API token is missing, malformed or unknown/,
        );
      }
    });

    it('expiry on the clock; the last use is written at most once a minute', async () => {
      const c = core(t.db);
      const start = clock;
      const { token, row } = await c.tokens.create(alice, { name: 'short', scopes: ['read'], expires: '1d' });
      expect(row.expires_at).toBe(new Date(start + 86_400_000).toISOString());
      await c.tokens.actor(`Bearer ${token}`);
      const used = (await t.db('api_tokens').where({ id: row.id }).first()).last_used_at;
      expect(used).toBe(new Date(start).toISOString());
      clock = start + 30_000;
      await c.tokens.actor(`Bearer ${token}`);
      expect((await t.db('api_tokens').where({ id: row.id }).first()).last_used_at).toBe(used);
      clock = start + 61_000;
      await c.tokens.actor(`Bearer ${token}`);
      expect((await t.db('api_tokens').where({ id: row.id }).first()).last_used_at).toBe(new Date(clock).toISOString());
      clock = start + 86_400_000;
      expect(await outcome(c.tokens.actor(`Bearer ${token}`))).toMatch(/^unauthenticated: This API token expired at/);
      // Expired tokens no longer count against the limit of live tokens.
      const few = core(t.db, 1);
      expect(await outcome(few.tokens.create(alice, { name: 'next', scopes: ['read'] }))).toBe('ok');
      expect(await outcome(few.tokens.create(alice, { name: 'one more', scopes: ['read'] }))).toMatch(/^conflict: /);
      clock = start;
    });

    it('tokens issued (kiln user token) while another process writes: none fails with SQLITE_BUSY', async () => {
      // What `kiln user token` meets on the machine where `kiln serve` runs: the server's worker commits all the time.
      const other = secondPool(t);
      let writing = true;
      const writer = (async () => {
        while (writing) await other('users').where({ id: root.id }).update({ username: 'root' });
      })();
      const results: string[] = [];
      try {
        const c = core(t.db, 1000);
        for (let i = 0; i < 60; i++)
          results.push(await outcome(c.tokens.create(CLI, { username: 'alice', name: `ci-${i}`, scopes: ['read'] })));
      } finally {
        writing = false;
        await writer;
        await other.destroy();
      }
      expect(results.filter((r) => r !== 'ok')).toEqual([]);
    });

    it('revoked by its owner: refused at once; another user cannot revoke it (404)', async () => {
      const c = core(t.db);
      const { token, row } = await c.tokens.create(alice, { name: 'ci', scopes: ['read'] });
      expect(await outcome(c.tokens.revoke(root, String(row.id)))).toMatch(/^not_found/);
      expect(await c.tokens.revoke(alice, String(row.id))).toEqual({ revoked: true });
      expect(await c.tokens.revoke(alice, String(row.id))).toEqual({ revoked: false });
      expect(await outcome(c.tokens.actor(`Bearer ${token}`))).toBe('unauthenticated: This API token was revoked.');
    });

    it('disabling the account revokes its tokens in the same transaction; enabling it does not bring them back', async () => {
      const c = core(t.db);
      const { token } = await c.tokens.create(alice, { name: 'ci', scopes: ['build'] });
      await c.users.setDisabled(root, { id: String(alice.id), disabled: true });
      expect(await outcome(c.tokens.actor(`Bearer ${token}`))).toMatch(/revoked when its account was disabled/);
      const audit = await t.db('audit_log').where({ action: 'user.disable' }).first();
      expect(JSON.parse(audit.detail)).toMatchObject({ tokensRevoked: 1 });
      await c.users.setDisabled(root, { id: String(alice.id), disabled: false });
      expect(await outcome(c.tokens.actor(`Bearer ${token}`))).toMatch(/revoked when its account was disabled/);
    });

    it('scopes: admin only for admins; `kiln user token` (the system) issues for a named user, audited; a token cannot make or list tokens', async () => {
      const c = core(t.db);
      expect(await outcome(c.tokens.create(alice, { name: 'x', scopes: ['admin'] }))).toMatch(
        /^invalid_input: Only an admin can have a token with the admin scope/,
      );
      expect(await outcome(c.tokens.create(alice, { name: 'x', scopes: ['write'] }))).toMatch(/^invalid_input: /);
      expect(await outcome(c.tokens.create(alice, { name: '', scopes: ['read'] }))).toMatch(/^invalid_input: /);
      expect(await outcome(c.tokens.create(alice, { name: 'x', scopes: ['read'], expires: '0d' }))).toMatch(
        /^invalid_input: /,
      );
      const issued = await c.tokens.create(CLI, {
        username: 'root',
        name: 'ops',
        scopes: 'read,admin',
        expires: 'never',
      });
      expect(issued.row).toMatchObject({ user_id: root.id, scopes: ['read', 'admin'], expires_at: null });
      expect(await t.db('audit_log').where({ action: 'token.issue', actor: 'system:cli' }).first()).toBeTruthy();
      const viaToken = await c.tokens.actor(`Bearer ${issued.token}`);
      expect(await outcome(c.tokens.create(viaToken, { name: 'more', scopes: ['read'] }))).toMatch(/^forbidden: /);
      expect(await outcome(c.tokens.list(viaToken))).toMatch(/^forbidden: /);
      expect(await outcome(c.tokens.create(viaToken, { username: 'alice', name: 'x', scopes: ['read'] }))).toMatch(
        /^forbidden: /,
      );
      // An admin's own session may not issue for others through this door either: `kiln user token` is the system's.
      expect(await outcome(c.tokens.create(CLI, { username: 'nobody', name: 'x', scopes: ['read'] }))).toMatch(
        /^not_found/,
      );
    });

    it('the policy refuses a token beyond its scopes in the use cases themselves; an admin is one only with the admin scope', async () => {
      const c = core(t.db);
      const { dockerfile } = await t.db.transaction((trx) =>
        insertDockerfile(trx, { ownerId: alice.id, name: 'mine', content: 'FROM debian:bookworm\n' }),
      );
      const as = async (user: UserActor, scopes: string[]) =>
        c.tokens.actor(`Bearer ${(await c.tokens.create(CLI, { username: user.username, name: 't', scopes })).token}`);
      const read = await as(alice, ['read']);
      expect(await outcome(c.dockerfiles.get(read, String(dockerfile.id)))).toBe('ok');
      expect(await outcome(c.builds.request(read, { dockerfileId: String(dockerfile.id), clientKey: 'k1' }))).toMatch(
        /^forbidden: This API token's scopes \(read\) do not allow this: it needs the build scope/,
      );
      expect(await outcome(c.jobs.setEnabled(read, String(dockerfile.id), { enabled: false }))).toMatch(/^forbidden/);
      expect(await outcome(c.users.list(await as(alice, ['build'])))).toMatch(/^forbidden/);
      expect(await outcome(c.users.changePassword(read, { current: 'x', password: 'y', ip: '' }))).toMatch(
        /^forbidden/,
      );

      const rootBuild = await as(root, ['build']);
      expect(ownerScope(rootBuild)).toBe(root.id);
      expect(await outcome(c.dockerfiles.get(rootBuild, String(dockerfile.id)))).toMatch(/^not_found/);
      expect(await outcome(c.users.list(rootBuild))).toMatch(/^forbidden: This API token's scopes/);
      const adminToken = (await c.tokens.create(CLI, { username: 'root', name: 'ops', scopes: ['admin'] })).token;
      const rootAdmin = await c.tokens.actor(`Bearer ${adminToken}`);
      expect(ownerScope(rootAdmin)).toBeNull();
      expect(await outcome(c.users.list(rootAdmin))).toBe('ok');
      expect(await outcome(c.dockerfiles.get(rootAdmin, String(dockerfile.id)))).toBe('ok');
      // Demoted: the role is read with the token at each request, so the admin scope no longer makes an admin.
      await t.db('users').where({ id: root.id }).update({ role: 'user' });
      const demoted = await c.tokens.actor(`Bearer ${adminToken}`);
      expect(await outcome(c.users.list(demoted))).toMatch(/^forbidden: Only an admin/);
      expect(await outcome(c.dockerfiles.get(demoted, String(dockerfile.id)))).toMatch(/^not_found/);
    });
  });
}
