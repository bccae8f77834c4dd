/**
 * Users' SSH keys: the key-line parser against the real `ssh-keygen` (fingerprints and sizes must be the ones it
 * prints, for keys it makes and for lines fast-check makes), the refusals, and the use cases on SQLite and
 * PostgreSQL (a key opens one account, even when two users add it at the same moment; a disabled user's key opens
 * nothing; "last used" is written once a minute).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CLI, createUsers, userActor } from '../../src/core/index.js';
import {
  MAX_SSH_KEYS,
  addKey,
  keyLogin,
  keyUsed,
  listKeys,
  parsePublicKey,
  removeKey,
} from '../../src/core/ssh-keys.js';
import { insertSshKey, insertUser, type Db, type UserRow } from '../../src/db/index.js';
import { isKilnError } from '../../src/shared/errors.js';
import { freshDb, secondPool, type TestDb } from '../db/engines.js';
import { dbOnlyDeps } from '../helpers/core.js';
import { sshKeygen } from '../helpers/ssh-door.js';
import { tempDir } from '../helpers/tmp.js';

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('kiln-ssh-keys-');
});
afterAll(() => tmp?.cleanup());

/** What `ssh-keygen -l` says of a key line: `{bits, fingerprint}`, or undefined when it refuses the line. */
function keygenSays(line: string): { bits: number; fingerprint: string } | undefined {
  const f = path.join(tmp.dir, 'probe.pub');
  writeFileSync(f, `${line}\n`);
  const r = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', f], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const [bits, fingerprint] = r.stdout.split(' ');
  return { bits: Number(bits), fingerprint: fingerprint! };
}

const wire = (...parts: Buffer[]) =>
  Buffer.concat(parts.flatMap((p) => [Buffer.from([0, 0, 0, 0].map((_, i) => (p.length >>> (24 - 8 * i)) & 255)), p]));

describe('parsing a pasted public key', () => {
  it.each([
    ['ed25519', undefined],
    ['rsa', 2048],
    ['rsa', 3072],
    ['rsa', 4096],
  ] as const)('a %s key (%s bits) made by ssh-keygen: the fingerprint and size ssh-keygen -lf prints', (type, bits) => {
    const k = sshKeygen(tmp.dir, `made-${type}-${bits ?? 0}`, type, bits, 'me@laptop');
    const p = parsePublicKey(k.pub);
    expect(p.fingerprint).toBe(k.fingerprint);
    expect(p.bits).toBe(k.bits);
    expect(p.algorithm).toBe(`ssh-${type}`);
    expect(p.comment).toBe('me@laptop');
  });

  it('agrees with ssh-keygen on every line fast-check makes that it accepts (random keys, comments, spacing)', () => {
    const ed25519 = fc
      .uint8Array({ minLength: 32, maxLength: 32 })
      .map((pk) => wire(Buffer.from('ssh-ed25519'), Buffer.from(pk)));
    const rsa = fc
      .tuple(
        fc.integer({ min: 2048, max: 4096 }),
        fc.uint8Array({ minLength: 512, maxLength: 512 }),
        fc.constantFrom(3, 65537, 17),
      )
      .map(([bits, rnd, e]) => {
        // An odd modulus of exactly `bits` bits.
        const n = Buffer.from(rnd.subarray(0, Math.ceil(bits / 8)));
        const top = bits - 8 * (n.length - 1);
        n[0] = (n[0]! & ((1 << top) - 1)) | (1 << (top - 1));
        n[n.length - 1] = n.at(-1)! | 1;
        const mp = (b: Buffer) => ((b[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), b]) : b);
        const eb = Buffer.alloc(4);
        eb.writeUInt32BE(e);
        return wire(Buffer.from('ssh-rsa'), mp(eb.subarray(eb.findIndex((x) => x !== 0))), mp(n));
      });
    const line = fc.tuple(
      fc.oneof(ed25519, rsa),
      fc.constantFrom(' ', '  ', '\t', ' \t '),
      fc.stringMatching(/^[ -~]{0,40}$/),
      fc.constantFrom('', '\n', '\r\n', '\n\n# a comment line\n'),
    );
    fc.assert(
      fc.property(line, ([blob, sep, comment, end]) => {
        const type = blob.subarray(4, 4 + blob.readUInt32BE(0)).toString();
        const text = `${type}${sep}${blob.toString('base64')}${comment ? ` ${comment}` : ''}${end}`;
        const ours = parsePublicKey(text);
        const theirs = keygenSays(text.split('\n')[0]!.replace(/\r$/, ''));
        expect(theirs).toEqual({ bits: ours.bits, fingerprint: ours.fingerprint });
      }),
      { numRuns: 60 },
    );
  });

  it('never fails other than with a clear invalid_input, whatever is pasted', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.base64String()), (s) => {
        try {
          parsePublicKey(`ssh-ed25519 ${s}`);
          parsePublicKey(s);
        } catch (e) {
          expect(isKilnError(e, 'invalid_input')).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('refuses DSA, ECDSA, RSA under 2048 bits, certificates and security keys, each saying why', () => {
    const dsa = sshKeygen(tmp.dir, 'dsa', 'dsa');
    const ecdsa = sshKeygen(tmp.dir, 'ecdsa', 'ecdsa');
    const small = sshKeygen(tmp.dir, 'small', 'rsa', 1024);
    const ca = sshKeygen(tmp.dir, 'ca', 'ed25519');
    const user = sshKeygen(tmp.dir, 'certified', 'ed25519');
    execFileSync('ssh-keygen', ['-q', '-s', ca.file, '-I', 'someone', `${user.file}.pub`]);
    const cert = readFileSync(`${user.file}-cert.pub`, 'utf8');
    const refusal = (text: string) => {
      try {
        parsePublicKey(text);
      } catch (e) {
        if (isKilnError(e, 'invalid_input')) return e.message;
        throw e;
      }
      throw new Error(`accepted: ${text.slice(0, 40)}`);
    };
    expect(refusal(dsa.pub)).toMatch(/^DSA keys are refused/);
    expect(refusal(ecdsa.pub)).toMatch(/^ECDSA keys are not accepted/);
    expect(refusal(small.pub)).toMatch(/at least 2048 bits; this one has 1024/);
    expect(refusal(cert)).toMatch(/^Certificates are not accepted/);
    expect(refusal(`sk-ssh-ed25519@openssh.com ${user.pub.split(' ')[1]} x`)).toMatch(/^Security-key/);
  });

  it('refuses a private key (without repeating it), other formats, options, several keys and malformed blobs', () => {
    const k = sshKeygen(tmp.dir, 'shapes', 'ed25519');
    const rsa = sshKeygen(tmp.dir, 'shapes-rsa', 'rsa', 2048);
    const blob = Buffer.from(k.pub.split(' ')[1]!, 'base64');
    const rsaBlob = Buffer.from(rsa.pub.split(' ')[1]!, 'base64');
    const msg = (text: string) => {
      try {
        parsePublicKey(text);
        return 'accepted';
      } catch (e) {
        return (e as Error).message;
      }
    };
    const priv = readFileSync(k.file, 'utf8');
    expect(msg(priv)).toMatch(/^That is a private key/);
    expect(msg(priv)).not.toContain(priv.split('\n')[1]!.slice(0, 20));
    expect(msg(execFileSync('ssh-keygen', ['-e', '-f', `${k.file}.pub`], { encoding: 'utf8' }))).toMatch(/RFC 4716/);
    expect(msg(`restrict,command="id" ${k.pub}`)).toMatch(/Key options/);
    expect(msg(`${k.pub}\n${rsa.pub}\n`)).toMatch(/one key at a time/);
    expect(msg('ssh-ed25519 AAAA!!!!')).toMatch(/not valid base64/);
    expect(msg(`ssh-ed25519 ${rsaBlob.toString('base64')}`)).toMatch(/the key inside is not ssh-ed25519/);
    expect(msg(`ssh-ed25519 ${Buffer.concat([blob, Buffer.from([0])]).toString('base64')}`)).toMatch(/32 bytes/);
    // RSA: the modulus with a needless leading zero (ssh-keygen would print another fingerprint), an even exponent.
    const r = (e: Buffer, n: Buffer) => `ssh-rsa ${wire(Buffer.from('ssh-rsa'), e, n).toString('base64')}`;
    const e = rsaBlob.subarray(15, 15 + rsaBlob.readUInt32BE(11));
    const nAt = 15 + e.length;
    const n = rsaBlob.subarray(nAt + 4, nAt + 4 + rsaBlob.readUInt32BE(nAt));
    expect(msg(r(e, n))).toBe('accepted');
    expect(msg(r(e, Buffer.concat([Buffer.from([0]), n])))).toMatch(/malformed/);
    expect(msg(r(Buffer.from([4]), n))).toMatch(/not those of a key/);
    expect(msg('')).toMatch(/Paste a public key/);
    expect(msg('x'.repeat(20_000))).toMatch(/too long/);
  });
});

const deps = (db: Db, now?: () => number) => dbOnlyDeps(db, { who: 'a key use case', ...(now ? { now } : {}) });

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`SSH key use cases on ${engine}`, () => {
    let t: TestDb;
    let ann: UserRow;
    let ben: UserRow;
    beforeAll(async () => {
      t = await freshDb(engine);
    });
    afterAll(async () => {
      await t?.drop();
    });
    beforeEach(async () => {
      await t.db('user_ssh_keys').delete();
      await t.db('users').delete();
      ann = await insertUser(t.db, { username: 'ann', passwordHash: 'x', role: 'user' });
      ben = await insertUser(t.db, { username: 'ben', passwordHash: 'x', role: 'user' });
    });

    it('adds, lists, logs in with, and revokes a key; another user cannot revoke it (not found)', async () => {
      const d = deps(t.db);
      const k = sshKeygen(tmp.dir, `uc-${engine}`, 'ed25519', undefined, 'ann@laptop');
      const added = await addKey(d, userActor(ann), { key: k.pub, name: '' });
      expect(added).toMatchObject({
        name: 'ann@laptop',
        algorithm: 'ssh-ed25519',
        bits: 256,
        fingerprint: k.fingerprint,
      });
      expect(await listKeys(d, userActor(ben))).toEqual([]);
      expect((await keyLogin(d, k.fingerprint))?.actor).toMatchObject({ id: ann.id, username: 'ann', via: 'ssh' });
      await expect(removeKey(d, userActor(ben), String(added.id))).rejects.toMatchObject({ code: 'not_found' });
      await removeKey(d, userActor(ann), String(added.id));
      expect(await keyLogin(d, k.fingerprint)).toBeUndefined();
      await expect(listKeys(d, CLI)).rejects.toMatchObject({ code: 'forbidden' });
    });

    it('a key opens one account: the same key again, here or on another account, is a conflict with a clear message', async () => {
      const d = deps(t.db);
      const k = sshKeygen(tmp.dir, `one-${engine}`, 'ed25519');
      await addKey(d, userActor(ann), { key: k.pub, name: 'laptop' });
      await expect(addKey(d, userActor(ann), { key: k.pub })).rejects.toMatchObject({
        code: 'conflict',
        message: 'You have added this key already (as "laptop").',
      });
      await expect(addKey(d, userActor(ben), { key: k.pub })).rejects.toMatchObject({
        code: 'conflict',
        message: expect.stringMatching(/belongs to another account/),
      });
      // At the same moment from two processes, eight times over: one wins, the other is told (no 500, one row).
      const other = secondPool(t);
      try {
        for (let round = 0; round < 8; round++) {
          const k2 = sshKeygen(tmp.dir, `race-${engine}-${round}`, 'ed25519');
          const results = await Promise.allSettled([
            addKey(d, userActor(ann), { key: k2.pub }),
            addKey(deps(other), userActor(ben), { key: k2.pub }),
          ]);
          expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
          const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
          expect(lost.reason).toMatchObject({ code: 'conflict' });
          expect(await t.db('user_ssh_keys').where({ fingerprint: k2.fingerprint }).count({ n: '*' })).toEqual([
            { n: engine === 'pg' ? '1' : 1 },
          ]);
        }
      } finally {
        await other.destroy();
      }
    });

    it('an account holds at most MAX_SSH_KEYS keys; one more is a conflict and stores nothing', async () => {
      for (let i = 0; i < MAX_SSH_KEYS; i++)
        await insertSshKey(t.db, {
          user_id: ann.id,
          name: `k${i}`,
          algorithm: 'ssh-ed25519',
          public_key: 'x',
          bits: 256,
          fingerprint: `SHA256:filler-${i}`,
        });
      const k = sshKeygen(tmp.dir, `cap-${engine}`, 'ed25519');
      await expect(addKey(deps(t.db), userActor(ann), { key: k.pub })).rejects.toMatchObject({
        code: 'conflict',
        message: expect.stringMatching(/the most an account may have/),
      });
      expect(await listKeys(deps(t.db), userActor(ann))).toHaveLength(MAX_SSH_KEYS);
      await addKey(deps(t.db), userActor(ben), { key: k.pub });
    });

    it("a disabled or unapproved user's key opens nothing, and opens again once enabled", async () => {
      const d = deps(t.db);
      const k = sshKeygen(tmp.dir, `dis-${engine}`, 'ed25519');
      await addKey(d, userActor(ann), { key: k.pub });
      const users = createUsers(d);
      await users.setDisabled(CLI, { username: 'ann', disabled: true });
      expect(await keyLogin(d, k.fingerprint)).toBeUndefined();
      await users.setDisabled(CLI, { username: 'ann', disabled: false });
      expect(await keyLogin(d, k.fingerprint)).toBeDefined();
      await t.db('users').where({ id: ann.id }).update({ approved: false });
      expect(await keyLogin(d, k.fingerprint)).toBeUndefined();
    });

    it('records the last use at most once a minute, and bad names are refused', async () => {
      let now = Date.parse('2026-01-01T10:00:00.000Z');
      const d = deps(t.db, () => now);
      const k = sshKeygen(tmp.dir, `used-${engine}`, 'ed25519');
      const { id } = await addKey(d, userActor(ann), { key: k.pub, name: 'x' });
      const lastUsed = async () => (await listKeys(d, userActor(ann)))[0]!.lastUsedAt;
      expect(await lastUsed()).toBeNull();
      await keyUsed(d, id);
      expect(await lastUsed()).toBe('2026-01-01T10:00:00.000Z');
      now += 30_000;
      await keyUsed(d, id);
      expect(await lastUsed()).toBe('2026-01-01T10:00:00.000Z');
      now += 31_000;
      await keyUsed(d, id);
      expect(await lastUsed()).toBe('2026-01-01T10:01:01.000Z');
      const k2 = sshKeygen(tmp.dir, `named-${engine}`, 'ed25519');
      for (const name of ['evil\u202eexe.txt', 'a\nb', 'x'.repeat(101)])
        await expect(addKey(d, userActor(ann), { key: k2.pub, name })).rejects.toMatchObject({ code: 'invalid_input' });
      expect(await listKeys(d, userActor(ann))).toHaveLength(1);
    });
  });
}
