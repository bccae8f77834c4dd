import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBase } from '../../src/sdk/base.js';
import { dockerBuild } from '../../src/sdk/docker-build.js';
import {
  engineLockFile,
  enterEngine,
  listCache,
  lockDir,
  lockEngine,
  planPrune,
  pruneCache,
  type CacheImage,
  type CacheSelector,
} from '../../src/sdk/engine-cache.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Finding 3, the engine's part: the layer cache (kiln-build images, a failed build's steps) stays bounded, least
 * recently used out first, and never under a build in flight. Only images this test made are pruned: they carry a
 * label and a repository of its own, given to the prune as its selector.
 */
const repo = path.resolve(import.meta.dirname, '../..');
const docker = new Dockerode({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
const t = tempDir('kiln-sdk-cache-');
const nonce = randomBytes(4).toString('hex');
const sel: CacheSelector = {
  repo: `kiln-cache-test-${nonce}`,
  taggedLabel: `io.kiln.test.cache=${nonce}`,
  danglingLabel: `io.kiln.test.cache=${nonce}`,
};
const MB = 10 ** 6;
const quiet = () => new Reporter(undefined, 1 << 22, () => undefined);

/** An image of ~`mb` MB of its own (random bytes) on the test's label, tagged `sel.repo:tag`; returns its id. */
async function image(tag: string, mb: number, salt = ''): Promise<string> {
  const text = `FROM debian:bookworm\nLABEL io.kiln.test.cache=${nonce}\nRUN head -c ${mb * MB} /dev/urandom > /blob-${tag}${salt}\n`;
  return (
    await dockerBuild(
      docker,
      { dockerfileText: text, buildArgs: {} },
      `${sel.repo}:${tag}`,
      { network: 'none', memoryMb: 512, cpus: 1, timeoutSeconds: 300 },
      quiet(),
    )
  ).id;
}
const exists = (ref: string) =>
  docker
    .getImage(ref)
    .inspect()
    .then(
      () => true,
      () => false,
    );

afterAll(async () => {
  for (const im of await listCache(docker, sel))
    for (const n of im.tags.length ? im.tags : [im.id])
      await docker
        .getImage(n)
        .remove({ force: true })
        .catch(() => undefined);
  t.cleanup();
});

describe('what to prune (pure)', () => {
  const im = (id: string, lastUsed: number, layers: [string, number][]): CacheImage => ({
    id,
    tags: [],
    lastUsed,
    layers: layers.map(([key, size]) => ({ key, size })),
  });

  it('removes what is unused for too long, then the least recently used until the rest fits; shared layers count once', () => {
    const a = im('a', 100, [
      ['a', 10],
      ['shared', 50],
    ]);
    const b = im('b', 200, [
      ['b', 10],
      ['shared', 50],
    ]);
    const c = im('c', 300, [['c', 30]]);
    expect(planPrune([c, b, a], 1000, 1000, 400)).toMatchObject({ remove: [], totalBytes: 100, keptBytes: 100 });
    // Over budget: a goes first, but its shared layer stays with b.
    expect(planPrune([c, b, a], 95, 1000, 400)).toMatchObject({ remove: [a], keptBytes: 90 });
    expect(planPrune([c, b, a], 40, 1000, 400)).toMatchObject({ remove: [a, b], keptBytes: 30 });
    // Too old, whatever the budget.
    expect(planPrune([c, b, a], 1000, 150, 400).remove.map((x) => x.id)).toEqual(['a', 'b']);
    expect(planPrune([c, b, a], 0, 1000, 400).remove.map((x) => x.id)).toEqual(['a', 'b', 'c']);
  });
});

describe("the engine's cache (real engine, this test's images only)", () => {
  let ids: { one: string; two: string; old3: string; three: string };

  beforeAll(async () => {
    await ensureBase(docker, 'debian:bookworm', { mirror: 'http://deb.debian.org/debian' }, t.dir, quiet());
    // Built in this order, so their last use is in this order; `three` is then rebuilt with other content: the old
    // one is left untagged (dangling), as when a rebuild replaces an image or a build fails after some steps.
    const one = await image('one', 2);
    const two = await image('two', 2);
    const old3 = await image('three', 2);
    ids = { one, two, old3, three: await image('three', 2, '-again') };
  }, 600_000);

  it('lists the tagged images and the dangling one, each with its own layers', async () => {
    const cache = await listCache(docker, sel);
    expect(cache.map((c) => c.id).sort()).toEqual(Object.values(ids).sort());
    expect(cache.find((c) => c.id === ids.old3)!.tags).toEqual([]);
    expect(cache.find((c) => c.id === ids.one)!.tags).toEqual([`${sel.repo}:one`]);
    // Each has its 2 MB layer; the base below is not the cache's.
    for (const c of cache) expect(c.layers.reduce((n, l) => n + l.size, 0)).toBeGreaterThanOrEqual(2 * MB);
    for (const c of cache) expect(c.layers.reduce((n, l) => n + l.size, 0)).toBeLessThan(3 * MB);
  });

  it('a build in flight holds the engine: the prune waits for another time and removes nothing', async () => {
    const dir = path.join(t.dir, 'locks');
    const info = (await docker.info()) as { ID: string };
    const building = await lockEngine(engineLockFile(info.ID, dir), 'shared', true);
    try {
      const r = await enterEngine(docker, { budgetBytes: 0, maxAgeMs: 0, selector: sel }, dir);
      expect(r.note).toBe('engine cache: not pruned now, other builds are using the engine');
      await r.lock.release();
      for (const id of Object.values(ids)) expect(await exists(id)).toBe(true);
    } finally {
      await building!.release();
    }
  });

  it("over the budget: the least recently used go first, by tag, and only this test's images", async () => {
    // Room for about two of the four.
    const r = await pruneCache(docker, { budgetBytes: 5 * MB, maxAgeMs: 3_600_000, selector: sel });
    expect(r.images).toBe(4);
    expect(r.removed).toEqual([ids.one, ids.two]);
    expect(r.failed).toEqual([]);
    expect(r.keptBytes).toBeLessThanOrEqual(5 * MB);
    expect(await exists(`${sel.repo}:one`)).toBe(false);
    expect(await exists(ids.one)).toBe(false);
    expect(await exists(ids.two)).toBe(false);
    expect(await exists(ids.old3)).toBe(true);
    expect(await exists(`${sel.repo}:three`)).toBe(true);
    // The base under them is not the cache's.
    expect(await exists('debian:bookworm')).toBe(true);
  });

  it('unused for longer than the limit: removed whatever the budget, with the dangling one; then nothing is left to do', async () => {
    const r = await pruneCache(docker, {
      budgetBytes: 10 ** 12,
      maxAgeMs: 3_600_000,
      selector: sel,
      now: Date.now() + 2 * 3_600_000,
    });
    expect(r.removed.sort()).toEqual([ids.old3, ids.three].sort());
    expect(await listCache(docker, sel)).toEqual([]);
    expect((await pruneCache(docker, { budgetBytes: 0, maxAgeMs: 0, selector: sel })).removed).toEqual([]);
  });

  it('kiln sdk build holds the engine while it builds: a prune started meanwhile removes nothing', async () => {
    const keep = await image('kept', 1);
    const df = path.join(t.dir, 'Dockerfile.slow');
    await fsp.writeFile(df, `FROM debian:bookworm\nRUN echo kiln-cache-inflight-${nonce} && sleep 60\n`);
    const p = spawn(
      path.join(repo, 'bin/kiln'),
      ['sdk', 'build', '--dockerfile', df, '--out', path.join(t.dir, 'out'), '--format', 'raw'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let seen = '';
    const exited = new Promise((r) => p.once('close', r));
    await new Promise<void>((resolve) =>
      p.stdout.on('data', (c: Buffer) => {
        seen += c.toString();
        if (seen.includes(`kiln-cache-inflight-${nonce}`)) resolve();
      }),
    );
    try {
      expect(seen).toMatch(/\[kiln\] engine cache: /);
      const r = await enterEngine(docker, { budgetBytes: 0, maxAgeMs: 0, selector: sel }, lockDir());
      await r.lock.release();
      expect(r.note).toContain('not pruned now');
      expect(await exists(keep)).toBe(true);
    } finally {
      p.kill('SIGTERM');
      await exited;
    }
    // The build is over: the next one prunes.
    const after = await enterEngine(docker, { budgetBytes: 0, maxAgeMs: 0, selector: sel }, lockDir());
    await after.lock.release();
    expect(after.note).toMatch(/removed 1/);
    expect(await exists(keep)).toBe(false);
  }, 300_000);
});
