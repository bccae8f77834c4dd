import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';
import { BASE_LABEL } from './base.js';
import { BUILD_LABEL, BUILD_REPO } from './docker-build.js';

/**
 * The engine's layer cache, kept useful but bounded. Every build leaves `kiln-build:<hash>` images and, when a step
 * fails, untagged ("dangling") images of the steps before it; both are the cache a rebuild starts from, and both
 * fill the engine's disk if nothing removes them. Before a build the SDK removes the cache images not used for
 * `sdk.imageCacheHours`, then the least recently used ones until the rest fits `sdk.imageCacheMb`. Bases
 * (`debian:*`) and images that are not Kiln's are never touched.
 *
 * A build in flight uses cache images the SDK cannot name (the engine picks them step by step), so pruning and
 * building exclude each other through a lock per engine: every build holds it shared from its first engine call to
 * its end; the prune takes it exclusive and only when it is free at once (it is skipped, and says so, while other
 * builds run). The lock is flock(1) on a file in /run/kiln (root; another user's SDK uses ~/.cache/kiln, so SDKs of
 * different users on one engine do not see each other's builds), held by a child process that lives as long as our
 * stdin: whatever way the SDK ends, the kernel releases it.
 */

export function lockDir(): string {
  return process.getuid?.() === 0 ? '/run/kiln' : path.join(os.homedir(), '.cache', 'kiln');
}

export interface EngineLock {
  release(): Promise<void>;
}

/** The lock file of one engine (by its id: several engines may serve one host). */
export function engineLockFile(engineId: string, dir = lockDir()): string {
  return path.join(dir, `engine-${createHash('sha256').update(engineId).digest('hex').slice(0, 16)}.lock`);
}

const BUSY = 75;

/**
 * Takes the lock. `wait: false` resolves undefined at once when it is taken the other way; `wait: true` waits up to
 * `timeoutMs`, then also resolves undefined. Throws when the lock cannot be made (no flock, no writable /run/kiln).
 */
export async function lockEngine(
  file: string,
  mode: 'shared' | 'exclusive',
  wait: boolean,
  timeoutMs = 10 * 60_000,
): Promise<EngineLock | undefined> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o755 }).catch((e: Error) => {
    throw new KilnError(
      'backend_unavailable',
      `Cannot make the engine lock's directory ${path.dirname(file)}: ${e.message}`,
    );
  });
  // Not run(): that waits for the child to end, and this child must live exactly as long as the lock is held.
  const args = [
    `--${mode}`,
    ...(wait ? ['--timeout', String(Math.ceil(timeoutMs / 1000))] : ['--nonblock']),
    '--conflict-exit-code',
    String(BUSY),
    file,
    'cat',
  ];
  const child = spawn('flock', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  child.stdin.on('error', () => undefined);
  // cat echoes this byte only once flock holds the lock and has started it.
  child.stdin.write('k');
  const held = await new Promise<boolean>((resolve, reject) => {
    child.stdout.once('data', () => resolve(true));
    child.once('error', (e) =>
      reject(new KilnError('backend_unavailable', `Cannot lock the engine (flock from util-linux): ${e.message}`)),
    );
    void exited.then((code) => {
      if (code === BUSY) resolve(false);
      else
        reject(
          new KilnError(
            'backend_unavailable',
            `Cannot lock the engine (${file}): flock exit ${code}: ${stderr.trim().slice(0, 300)}`,
          ),
        );
    });
  });
  if (!held) return undefined;
  return {
    release: async () => {
      child.stdin.end();
      await exited;
    },
  };
}

/** Which images are the cache: tags of `repo` with `taggedLabel`, and untagged images with `danglingLabel`. */
export interface CacheSelector {
  repo: string;
  taggedLabel: string;
  danglingLabel: string;
}

/**
 * Kiln's: the builds' tags, and untagged images built on a Kiln base (every image built FROM one inherits its label;
 * an untagged image with it is a failed build's last step or an image a rebuild replaced).
 */
export const KILN_CACHE: CacheSelector = {
  repo: BUILD_REPO,
  taggedLabel: `${BUILD_LABEL}=1`,
  danglingLabel: `${BASE_LABEL}=1`,
};

export interface CacheImage {
  id: string;
  /** The cache's tags of this image (none: a dangling image). */
  tags: string[];
  /** Last time a build made or reused it (ms): its last tagging, or its creation. */
  lastUsed: number;
  /** The layers that are the cache's: from the image down to the first one something else holds (a base). */
  layers: { key: string; size: number }[];
}

function bytesOf(images: readonly CacheImage[]): number {
  const seen = new Map<string, number>();
  for (const im of images) for (const l of im.layers) seen.set(l.key, l.size);
  let n = 0;
  for (const s of seen.values()) n += s;
  return n;
}

/** What to remove: unused for longer than maxAgeMs, then least recently used first until the rest fits. Pure. */
export function planPrune(
  images: readonly CacheImage[],
  budgetBytes: number,
  maxAgeMs: number,
  now: number,
): { remove: CacheImage[]; totalBytes: number; keptBytes: number } {
  const byAge = [...images].sort((a, b) => a.lastUsed - b.lastUsed);
  const remove = byAge.filter((im) => now - im.lastUsed > maxAgeMs);
  const kept = byAge.filter((im) => !remove.includes(im));
  while (kept.length && bytesOf(kept) > budgetBytes) remove.push(kept.shift()!);
  return { remove, totalBytes: bytesOf(images), keptBytes: bytesOf(kept) };
}

interface HistoryEntry {
  Id: string;
  Size: number;
  Tags: string[] | null;
}

async function layersOf(docker: Dockerode, id: string, repo: string): Promise<CacheImage['layers']> {
  const history = (await docker.getImage(id).history()) as HistoryEntry[];
  const layers: CacheImage['layers'] = [];
  for (const [i, h] of history.entries()) {
    if (i > 0 && (h.Tags ?? []).some((t) => !t.startsWith(`${repo}:`))) break;
    layers.push({ key: h.Id && h.Id !== '<missing>' ? h.Id : `${id}#${i}`, size: h.Size });
  }
  return layers;
}

const notFound = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;

/** When a build last made or reused the image (ms): the later of its creation and its last tagging. */
async function lastUsed(docker: Dockerode, id: string): Promise<number> {
  // Inspect, not the list: the list's Created has whole seconds, too coarse to order builds a second apart.
  const info = (await docker.getImage(id).inspect()) as unknown as {
    Created?: string;
    Metadata?: { LastTagTime?: string };
  };
  return Math.max(Date.parse(info.Created ?? '') || 0, Date.parse(info.Metadata?.LastTagTime ?? '') || 0);
}

/** The cache images of the engine, as the selector names them. An image that vanishes meanwhile is left out. */
export async function listCache(docker: Dockerode, sel: CacheSelector): Promise<CacheImage[]> {
  const out: CacheImage[] = [];
  const tagged = await docker.listImages({ filters: { label: [sel.taggedLabel] } } as Dockerode.ListImagesOptions);
  for (const im of tagged) {
    const tags = (im.RepoTags ?? []).filter((t) => t.startsWith(`${sel.repo}:`));
    // Also tagged as something else: someone else holds it, and removing our tags would free nothing.
    if (!tags.length || tags.length !== (im.RepoTags ?? []).length) continue;
    try {
      out.push({
        id: im.Id,
        tags,
        lastUsed: await lastUsed(docker, im.Id),
        layers: await layersOf(docker, im.Id, sel.repo),
      });
    } catch (e) {
      if (!notFound(e)) throw e;
    }
  }
  const dangling = await docker.listImages({
    filters: { dangling: ['true'], label: [sel.danglingLabel] },
  } as Dockerode.ListImagesOptions);
  for (const im of dangling) {
    if ((im.RepoTags ?? []).some((t) => t !== '<none>:<none>')) continue;
    try {
      out.push({
        id: im.Id,
        tags: [],
        lastUsed: await lastUsed(docker, im.Id),
        layers: await layersOf(docker, im.Id, sel.repo),
      });
    } catch (e) {
      if (!notFound(e)) throw e;
    }
  }
  return out;
}

export interface PruneSettings {
  budgetBytes: number;
  maxAgeMs: number;
  selector: CacheSelector;
  now?: number;
}
export interface PruneReport {
  images: number;
  totalBytes: number;
  removed: string[];
  keptBytes: number;
  failed: string[];
}

/**
 * Removes what planPrune picks. Call it only under the exclusive lock. An image the engine refuses to remove (a
 * container uses it, an image outside the cache is built on it) is left and reported.
 */
export async function pruneCache(docker: Dockerode, s: PruneSettings): Promise<PruneReport> {
  const images = await listCache(docker, s.selector);
  const plan = planPrune(images, s.budgetBytes, s.maxAgeMs, s.now ?? Date.now());
  const removed: string[] = [];
  const failed: string[] = [];
  for (const im of plan.remove) {
    try {
      // By tag, so only our names go; the engine then deletes the image and the untagged parents no other image needs.
      for (const name of im.tags.length ? im.tags : [im.id])
        await docker
          .getImage(name)
          .remove()
          .catch((e: unknown) => {
            if (!notFound(e)) throw e;
          });
      removed.push(im.id);
    } catch {
      failed.push(im.id);
    }
  }
  return { images: images.length, totalBytes: plan.totalBytes, removed, keptBytes: plan.keptBytes, failed };
}

const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;

/**
 * Before a build: prunes the cache when no other build is in flight, then takes the engine's lock shared for this
 * build. Returns the lock (release it when the build no longer uses the engine) and a line for the build log.
 */
export async function enterEngine(
  docker: Dockerode,
  s: Omit<PruneSettings, 'now'>,
  dir = lockDir(),
): Promise<{ lock: EngineLock; note: string }> {
  const info = (await docker.info()) as { ID?: string };
  const file = engineLockFile(info.ID ?? 'unknown', dir);
  let note: string;
  const exclusive = await lockEngine(file, 'exclusive', false);
  if (exclusive) {
    try {
      const t0 = Date.now();
      const r = await pruneCache(docker, s);
      note =
        `engine cache: ${r.images} images, ${mib(r.totalBytes)} (limits ${mib(s.budgetBytes)}, unused ${Math.round(s.maxAgeMs / 3_600_000)} h): ` +
        `${r.removed.length ? `removed ${r.removed.length}, ${mib(r.keptBytes)} left` : 'nothing to remove'}${r.failed.length ? `, ${r.failed.length} could not be removed` : ''} (${Date.now() - t0} ms)`;
    } finally {
      await exclusive.release();
    }
  } else {
    note = 'engine cache: not pruned now, other builds are using the engine';
  }
  const lock = await lockEngine(file, 'shared', true);
  if (!lock)
    throw new KilnError(
      'backend_unavailable',
      'The Docker engine stayed locked for 10 minutes (a cache prune did not finish)',
    );
  return { lock, note };
}
