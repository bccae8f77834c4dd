/**
 * Property test of the SDK's extraction of an untrusted root filesystem (src/sdk/extract.ts): random hostile tars
 * (`..`, absolute names, symlink chains, links through symlinks, hard links, devices, FIFOs, replaced entries)
 * never create, change or link anything outside the target directory, and leave no device or FIFO inside it.
 */
import { promises as fsp, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import tarStream from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { extractRootfs } from '../../src/sdk/extract.js';
import { tempDir } from '../helpers/tmp.js';

type Kind = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
interface Ent {
  name: string;
  type: Kind;
  linkname?: string;
  data?: string;
  mode: number;
  uid: number;
}

// The target sits deep in the test's own directory, so even a chain of `..` links a buggy extractor followed would
// land in a directory this test snapshots (never in the real /tmp or /).
const NEST = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8'];

/** Everything under dir except `skip`: path -> what it is (type, mode, size, link count, content or link target). */
function snapshot(dir: string, skip: string, rel = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of readdirSync(path.join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${e}` : e;
    const abs = path.join(dir, r);
    if (abs === skip) continue;
    const st = lstatSync(abs);
    const what = st.isSymbolicLink()
      ? `link:${readlinkSync(abs)}`
      : st.isFile()
        ? `file:${readFileSync(abs, 'utf8')}`
        : st.isDirectory()
          ? 'dir'
          : 'other';
    out.set(
      r,
      `${what} mode=${(st.mode & 0o7777).toString(8)} nlink=${st.isDirectory() ? '-' : st.nlink} uid=${st.uid}`,
    );
    if (st.isDirectory()) for (const [k, v] of snapshot(dir, skip, r)) out.set(k, v);
  }
  return out;
}

/** Walks the extracted tree without following links; returns what a host must never find there. */
function problemsInside(root: string, outsideInodes: Set<number>): string[] {
  const problems: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(root, rel))) {
      const r = rel ? `${rel}/${e}` : e;
      const st = lstatSync(path.join(root, r));
      if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO() || st.isSocket())
        problems.push(`${r}: a device, FIFO or socket`);
      if (st.isFile() && outsideInodes.has(st.ino)) problems.push(`${r}: a hard link to a file outside`);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return problems;
}

async function tarOf(entries: Ent[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    const h = {
      name: e.name,
      type: e.type,
      mode: e.mode,
      uid: e.uid,
      gid: e.uid,
      mtime: new Date(1_700_000_000_000),
    } as tarStream.Header;
    if (e.type === 'symlink' || e.type === 'link') h.linkname = e.linkname ?? '';
    if (e.type === 'character-device' || e.type === 'block-device') {
      h.devmajor = 1;
      h.devminor = 3;
    }
    if (e.type === 'file') pack.entry(h, e.data ?? '');
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('tar extraction (property): nothing is written outside the target', () => {
  const tmp = tempDir('kiln-prop-extract-');
  const base = path.join(tmp.dir, ...NEST);
  const outside = path.join(base, 'outside');
  afterAll(() => tmp.cleanup());

  const component = fc.constantFrom('a', 'b', 'c', 'etc', 'passwd', '..', '.', '', 'x'.repeat(200));
  const name = fc
    .tuple(
      fc.constantFrom('', '', '/', './', '../'),
      fc.array(component, { minLength: 1, maxLength: 4 }),
      fc.constantFrom('', '', '/'),
    )
    .map(([pre, parts, post]) => pre + parts.join('/') + post);
  const target = fc.oneof(
    name,
    fc
      .constantFrom(
        'outside',
        '../outside',
        '../../outside',
        '../../outside/secret',
        '..',
        '../..',
        '.',
        'a/../..',
        'b/../../outside',
      )
      .map((t) => t),
    fc
      .constantFrom(
        () => outside,
        () => path.join(outside, 'secret'),
        () => path.join(outside, 'dir'),
        () => path.join(outside, 'dir', 'new'),
      )
      .map((f) => f()),
  );
  const entry: fc.Arbitrary<Ent> = fc.record({
    name,
    type: fc.constantFrom<Kind>(
      'file',
      'file',
      'directory',
      'symlink',
      'symlink',
      'link',
      'character-device',
      'block-device',
      'fifo',
    ),
    linkname: target,
    data: fc.constantFrom('', 'planted', 'x'.repeat(5000)),
    mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o000, 0o777, 0o1777),
    uid: fc.constantFrom(0, 1000, 65534),
  });

  it('random hostile tars: outside unchanged, no host file linked in, no device or FIFO inside', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 24 }), async (entries) => {
        const work = path.join(base, `w${run++}`);
        const stage = path.join(work, 'stage');
        const root = path.join(stage, 'root');
        await fsp.rm(outside, { recursive: true, force: true });
        await fsp.mkdir(path.join(outside, 'dir'), { recursive: true });
        await fsp.writeFile(path.join(outside, 'secret'), 'host secret\n', { mode: 0o600 });
        await fsp.mkdir(stage, { recursive: true, mode: 0o700 });
        const before = snapshot(tmp.dir, root);
        const outsideInodes = new Set([lstatSync(path.join(outside, 'secret')).ino]);
        const tar = await tarOf(entries);
        let failure: unknown;
        try {
          await extractRootfs(Readable.from([tar]), root);
        } catch (e) {
          failure = e;
        }
        // Whatever happened (even a refusal half-way), the host side is as it was and the tree holds nothing unsafe.
        const after = snapshot(tmp.dir, root);
        after.delete(path.relative(tmp.dir, root));
        before.delete(path.relative(tmp.dir, root));
        expect(
          [...after].filter(([k, v]) => before.get(k) !== v),
          `changed outside (extraction ${failure ? `threw ${String(failure)}` : 'succeeded'})`,
        ).toEqual([]);
        expect(
          [...before.keys()].filter((k) => !after.has(k)),
          'removed outside',
        ).toEqual([]);
        if (lstatSync(root, { throwIfNoEntry: false })?.isDirectory()) {
          await fsp.chmod(root, 0o755);
          expect(problemsInside(root, outsideInodes)).toEqual([]);
        }
        await fsp.rm(work, { recursive: true, force: true });
      }),
      { numRuns: 300 },
    );
  });
});
