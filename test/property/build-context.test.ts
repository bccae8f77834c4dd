/**
 * Property test of build-context upload parsing (src/web/build-context.ts): random tars (hostile names and types,
 * duplicates, paths below links, garbage, truncations, bit flips) and random file sets are either accepted with
 * the documented invariants of the stored re-pack, or refused with a 4xx-class KilnError. Never anything else.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import tarStream from 'tar-stream';
import { describe, expect, it } from 'vitest';
import {
  MAX_CONTEXT_BYTES,
  MAX_CONTEXT_ENTRIES,
  contextFromFiles,
  contextFromTar,
} from '../../src/core/build-context.js';
import { KilnError } from '../../src/shared/errors.js';
import type { NewContext } from '../../src/db/index.js';

type Kind =
  'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo' | 'contiguous-file';
interface Ent {
  name: string;
  type: Kind;
  linkname: string;
  data: Buffer;
  mode: number;
  uid: number;
}

const BIG = Buffer.alloc(MAX_CONTEXT_BYTES + 1, 0x61);
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

async function tarOf(entries: Ent[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    const h = {
      name: e.name,
      type: e.type,
      mode: e.mode,
      uid: e.uid,
      gid: e.uid,
      uname: 'evil',
      gname: 'evil',
      mtime: new Date(1_700_000_000_000),
    } as tarStream.Header;
    if (e.type === 'symlink' || e.type === 'link') h.linkname = e.linkname;
    if (e.type === 'character-device' || e.type === 'block-device') {
      h.devmajor = 1;
      h.devminor = 3;
    }
    if (e.type === 'file' || e.type === 'contiguous-file') pack.entry(h, e.data);
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function entriesOf(tar: Buffer): Promise<Array<{ h: tarStream.Header; data: Buffer }>> {
  const ex = tarStream.extract();
  ex.end(tar);
  const out: Array<{ h: tarStream.Header; data: Buffer }> = [];
  for await (const e of ex) {
    const chunks: Buffer[] = [];
    for await (const c of e) chunks.push(c as Buffer);
    out.push({ h: e.header, data: Buffer.concat(chunks) });
  }
  return out;
}

/** The stored context's documented invariants (web README, "Build context"). */
async function checkAccepted(ctx: NewContext): Promise<void> {
  expect(ctx.sha256).toBe(createHash('sha256').update(ctx.tar).digest('hex'));
  const stored = await entriesOf(ctx.tar);
  expect(stored.map((e) => e.h.name)).toEqual(ctx.listing.map((l) => l.name));
  expect(stored.length).toBeGreaterThan(0);
  expect(stored.length).toBeLessThanOrEqual(MAX_CONTEXT_ENTRIES);
  const kinds = new Map<string, string>();
  let bytes = 0;
  for (const [i, { h, data }] of stored.entries()) {
    const l = ctx.listing[i]!;
    expect(['file', 'directory', 'symlink']).toContain(h.type);
    expect(l.type).toBe(h.type);
    expect([h.uid, h.gid, h.uname ?? '', h.gname ?? '']).toEqual([0, 0, '', '']);
    expect((h.mode ?? 0) & ~0o777).toBe(0);
    const parts = h.name.split('/');
    expect(h.name.startsWith('/') || parts.some((p) => p === '' || p === '.' || p === '..'), h.name).toBe(false);
    expect(CONTROL.test(h.name) || h.name.includes('\uFFFD'), h.name).toBe(false);
    expect(parts.every((p) => Buffer.byteLength(p) <= 255) && Buffer.byteLength(h.name) <= 4096).toBe(true);
    expect(kinds.has(h.name), `duplicate ${h.name}`).toBe(false);
    for (let j = 1; j < parts.length; j++) {
      const k = kinds.get(parts.slice(0, j).join('/'));
      expect(k === undefined || k === 'directory', `${h.name} below a ${k}`).toBe(true);
    }
    kinds.set(h.name, h.type!);
    if (h.type === 'file') {
      bytes += data.length;
      expect(l.size).toBe(data.length);
    }
    if (h.type === 'symlink') {
      expect(h.linkname && !CONTROL.test(h.linkname)).toBeTruthy();
      expect(l.linkname).toBe(h.linkname);
    }
  }
  expect(bytes).toBeLessThanOrEqual(MAX_CONTEXT_BYTES);
}

/** Resolves with the context, or checks that the refusal is a 4xx-class KilnError. */
async function acceptOrRefuse(p: Promise<NewContext>): Promise<NewContext | undefined> {
  try {
    const ctx = await p;
    await checkAccepted(ctx);
    return ctx;
  } catch (e) {
    if (!(e instanceof KilnError)) throw new Error(`not a KilnError: ${String(e)}`, { cause: e });
    expect(e.httpStatus).toBeGreaterThanOrEqual(400);
    expect(e.httpStatus).toBeLessThan(500);
    return undefined;
  }
}

const component = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'a',
      'b',
      'c',
      'dir',
      'file.txt',
      '..',
      '.',
      '',
      '-rf',
      '~',
      'x'.repeat(256),
      'é',
      '\u202eevil',
      '\ufffd',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }) },
);
const name = fc
  .tuple(
    fc.constantFrom('', '', '', '/', './', '../'),
    fc.array(component, { minLength: 1, maxLength: 4 }),
    fc.constantFrom('', '', '/'),
  )
  .map(([pre, parts, post]) => pre + parts.join('/') + post);
const entry: fc.Arbitrary<Ent> = fc.record({
  name,
  type: fc.constantFrom<Kind>(
    'file',
    'file',
    'file',
    'directory',
    'directory',
    'symlink',
    'link',
    'character-device',
    'block-device',
    'fifo',
    'contiguous-file',
  ),
  linkname: fc.oneof(name, fc.constantFrom('', '/etc/passwd', 'a\nb', 'x'.repeat(5000))),
  data: fc.oneof(
    { weight: 20, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
    { weight: 1, arbitrary: fc.constant(BIG) },
  ),
  mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o7777, 0),
  uid: fc.constantFrom(0, 1000, 4294967294),
});

/** Entries an honest CI checkout has: mostly accepted, so the accepted side's invariants get exercised too. */
const benign: fc.Arbitrary<Ent[]> = fc.uniqueArray(
  fc.record({
    name: fc
      .array(fc.constantFrom('src', 'etc', 'a.conf', 'b', 'run.sh', 'é-ü'), { minLength: 1, maxLength: 3 })
      .map((p) => p.join('/')),
    type: fc.constantFrom<Kind>('file', 'file', 'directory', 'symlink'),
    linkname: fc.constantFrom('a.conf', '../etc', '/usr/bin/env'),
    data: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    mode: fc.constantFrom(0o644, 0o755, 0o4755),
    uid: fc.constantFrom(0, 1000),
  }),
  { minLength: 1, maxLength: 8, selector: (e) => e.name },
);

/** Valid tars, garbage, and valid tars damaged in transit. */
const tarInput = fc.oneof(
  { weight: 4, arbitrary: benign.map((es) => ({ es, damage: 'none' as const })) },
  {
    weight: 6,
    arbitrary: fc.array(entry, { minLength: 1, maxLength: 16 }).map((es) => ({ es, damage: 'none' as const })),
  },
  {
    weight: 1,
    arbitrary: fc
      .uint8Array({ maxLength: 4096 })
      .map((a) => ({ es: [] as Ent[], raw: Buffer.from(a), damage: 'none' as const })),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.array(entry, { minLength: 1, maxLength: 6 }), fc.constantFrom('truncate', 'flip', 'gzip'), fc.nat())
      .map(([es, damage, at]) => ({ es, damage, at })),
  },
  {
    weight: 1,
    arbitrary: fc.constant({
      es: Array.from({ length: MAX_CONTEXT_ENTRIES + 1 }, (_, i) => ({
        name: `f${i}`,
        type: 'file' as Kind,
        linkname: '',
        data: Buffer.alloc(0),
        mode: 0o644,
        uid: 0,
      })),
      damage: 'none' as const,
    }),
  },
);

describe('build context upload parsing (property)', () => {
  it("random tars: accepted with the stored re-pack's invariants and the uploaded bytes, or a 4xx KilnError", async () => {
    const seen = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(tarInput, async (input) => {
        let buf = 'raw' in input && input.raw ? input.raw : await tarOf(input.es);
        if (input.damage === 'truncate') buf = buf.subarray(0, ('at' in input ? input.at! : 0) % buf.length);
        if (input.damage === 'flip') {
          buf = Buffer.from(buf);
          const i = ('at' in input ? input.at! : 0) % buf.length;
          buf[i] = buf[i]! ^ 0xff;
        }
        if (input.damage === 'gzip') buf = Buffer.concat([Buffer.from([0x1f, 0x8b]), buf]);
        const ctx = await acceptOrRefuse(contextFromTar(buf));
        seen[ctx ? 'accepted' : 'refused']++;
        if (ctx && input.damage === 'none' && !('raw' in input)) {
          // What was accepted is what was uploaded: each stored file holds the uploaded bytes of that (normalised) name.
          for (const { h, data } of await entriesOf(ctx.tar)) {
            if (h.type !== 'file') continue;
            const src = input.es.filter(
              (e) =>
                (e.type === 'file' || e.type === 'contiguous-file') &&
                e.name
                  .split('/')
                  .filter((p) => p && p !== '.')
                  .join('/') === h.name,
            );
            expect(src.length, h.name).toBe(1);
            expect(data.equals(src[0]!.data)).toBe(true);
          }
        }
      }),
      { numRuns: 400 },
    );
    // Both outcomes were exercised (a generator that only makes refused tars would prove nothing).
    expect(seen.accepted).toBeGreaterThan(10);
    expect(seen.refused).toBeGreaterThan(10);
  });

  it('random file sets: flat names accepted as given, anything else a 4xx KilnError', async () => {
    const file = fc.record({
      name: fc.oneof(component, fc.string({ unit: 'binary', maxLength: 300 }), name),
      data: fc.oneof(
        { weight: 30, arbitrary: fc.uint8Array({ maxLength: 32 }).map((a) => Buffer.from(a)) },
        { weight: 1, arbitrary: fc.constant(BIG) },
      ),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(file, { maxLength: 8 }), async (files) => {
        const ctx = await acceptOrRefuse(contextFromFiles(files));
        if (!ctx) return;
        expect(ctx.listing.map((l) => l.name)).toEqual(files.map((f) => f.name));
        for (const l of ctx.listing) expect(l.name.includes('/') || l.name === '.' || l.name === '..').toBe(false);
      }),
      { numRuns: 400 },
    );
  });
});
