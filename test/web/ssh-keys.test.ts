/**
 * The account page's SSH keys over real HTTP: listed with the fingerprint `ssh-keygen -lf` prints, added with the
 * CSRF token, refused with a clear message (never a 500, and a pasted private key is not sent back), deleted by
 * their owner only.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addKeyOnPage, sshKeygen, type KeygenKey } from '../helpers/ssh-door.js';
import { tempDir } from '../helpers/tmp.js';
import { startTestWeb, type HttpClient, type TestWeb } from '../helpers/web.js';

let w: TestWeb;
let tmp: ReturnType<typeof tempDir>;
let ann: HttpClient;
let ben: HttpClient;
/** Made before any HTTP request: a slow keygen between two requests would outlast the server's keep-alive. */
let rsa4096: KeygenKey;
const rows = () => w.db('user_ssh_keys').count<{ n: number }[]>({ n: '*' });

beforeAll(async () => {
  w = await startTestWeb({ config: { sshDoor: { port: 2299 } } });
  tmp = tempDir('kiln-web-keys-');
  rsa4096 = sshKeygen(tmp.dir, 'ann-rsa', 'rsa', 4096);
  ann = w.client();
  await ann.signUp('ann');
  ben = w.client();
  await ben.signUp('ben');
});
afterAll(async () => {
  await w?.close();
  tmp?.cleanup();
});

describe('SSH keys on the account page', () => {
  it('lists added keys with name, type, the fingerprint ssh-keygen prints, added and last-used times', async () => {
    const page0 = await (await ann.get('/account')).text();
    expect(page0).toContain('No SSH keys yet.');
    expect(page0).toContain('ssh -p 2299 kiln@HOST build NAME &lt; Dockerfile');
    expect(page0).toContain('An admin has not switched the SSH door on yet.');
    const ed = sshKeygen(tmp.dir, 'ann-ed', 'ed25519', undefined, 'ann@laptop');
    const rsa = rsa4096;
    expect((await addKeyOnPage(ann, ed.pub)).headers.get('location')).toBe('/account?key=added');
    expect((await addKeyOnPage(ann, `${rsa.pub}\n`, '<b>work</b> "rsa"')).status).toBe(303);
    const page = await (await ann.get('/account?key=added')).text();
    expect(page).toContain('SSH key added.');
    expect(page).toMatch(/<td>ann@laptop<\/td>\s*<td>ED25519<\/td>/);
    expect(page).toContain(`<code class="fingerprint">${ed.fingerprint}</code>`);
    expect(page).toMatch(/<td>&lt;b&gt;work&lt;\/b&gt; &quot;rsa&quot;<\/td>\s*<td>RSA 4096<\/td>/);
    expect(page).toContain(`<code class="fingerprint">${rsa.fingerprint}</code>`);
    expect(page).toMatch(
      /<td><time>\d{4}-\d\d-\d\d \d\d:\d\d<\/time><\/td>\s*<td><span class="muted">never<\/span><\/td>/,
    );
    // Ben sees none of Ann's keys.
    expect(await (await ben.get('/account')).text()).toContain('No SSH keys yet.');
  });

  it('refuses bad keys with the reason on the page (422/409, no 500), keeping the text but never a private key', async () => {
    const before = await rows();
    const ecdsa = sshKeygen(tmp.dir, 'ann-ecdsa', 'ecdsa');
    const r1 = await addKeyOnPage(ann, ecdsa.pub, 'old one');
    expect(r1.status).toBe(422);
    const html1 = await r1.text();
    expect(html1).toContain('ECDSA keys are not accepted');
    expect(html1).toContain(ecdsa.pub.split(' ')[1]!);
    expect(html1).toContain('value="old one"');
    const priv = readFileSync(sshKeygen(tmp.dir, 'ann-secret', 'ed25519').file, 'utf8');
    const r2 = await addKeyOnPage(ann, priv);
    expect(r2.status).toBe(422);
    const html2 = await r2.text();
    expect(html2).toContain('That is a private key');
    expect(html2).not.toContain(priv.split('\n')[1]!.slice(0, 30));
    for (const junk of ['hello', 'ssh-rsa AAAA', '\u0000\u0001', 'x'.repeat(15_000)]) {
      const r = await addKeyOnPage(ann, junk);
      expect(r.status, junk.slice(0, 10)).toBe(422);
    }
    const ed = sshKeygen(tmp.dir, 'twice', 'ed25519');
    expect((await addKeyOnPage(ann, ed.pub)).status).toBe(303);
    const again = await addKeyOnPage(ben, ed.pub);
    expect(again.status).toBe(409);
    expect(await again.text()).toContain('This key belongs to another account');
    expect(await rows()).toEqual([{ n: Number(before[0]!.n) + 1 }]);
  });

  it('case 10: adding or deleting without the CSRF token changes nothing', async () => {
    const before = await rows();
    const k = sshKeygen(tmp.dir, 'nocsrf', 'ed25519');
    const r = await ann.postForm('/account/ssh-keys', { key: k.pub, name: 'x' });
    expect(r.status).toBe(403);
    const id = (await w.db('user_ssh_keys').first<{ id: number }>('id'))!.id;
    expect((await ann.postForm(`/account/ssh-keys/${id}/delete`, {})).status).toBe(403);
    expect(await rows()).toEqual(before);
  });

  it("case 12: deleting another user's key is 404 and keeps it; the owner's delete removes it", async () => {
    const k = sshKeygen(tmp.dir, 'ann-del', 'ed25519');
    await addKeyOnPage(ann, k.pub, 'to delete');
    const { id } = (await w.db('user_ssh_keys').where({ fingerprint: k.fingerprint }).first<{ id: number }>('id'))!;
    const theirs = await ben.postForm(`/account/ssh-keys/${id}/delete`, { _csrf: await ben.token('/account') });
    expect(theirs.status).toBe(404);
    expect(await w.db('user_ssh_keys').where({ id }).first()).toBeDefined();
    const mine = await ann.postForm(`/account/ssh-keys/${id}/delete`, { _csrf: await ann.token('/account') });
    expect(mine.headers.get('location')).toBe('/account?key=deleted');
    expect(await w.db('user_ssh_keys').where({ id }).first()).toBeUndefined();
    expect(await (await ann.get('/account?key=deleted')).text()).toContain('it no longer opens Kiln');
  });
});
