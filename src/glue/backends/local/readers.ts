/**
 * What the local backend answers about builds without changing anything: status (with the last progress event of
 * the log), log chunks, artifact streams, the queue and the job list. Safe from any process, no lock needed: every
 * record is replaced atomically and the log only grows.
 */
import { constants as fsc, promises as fsp, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  ARTIFACT_NAMES,
  MAX_LOG_CHUNK,
  backendJobName,
  jobIdFromBackendName,
  lastProgress,
  utf8Boundary,
  type ArtifactName,
  type BuildState,
  type BuildStatus,
  type JobInfo,
  type LogChunk,
  type QueueItem,
} from '../../../protocol/index.js';
import { KilnError } from '../../../shared/errors.js';
import { FINAL, type BuildStore, type StoredSpec } from './records.js';
import { readJson } from './store.js';

const ARTIFACTS: ReadonlySet<string> = new Set(ARTIFACT_NAMES);

export async function buildStatus(store: BuildStore, job: number, build: number): Promise<BuildStatus> {
  const rec = await store.mustReadBuild(job, build);
  const st: BuildStatus = { job, build, state: rec.state, queuedAt: rec.queuedAt, artifacts: [] };
  if (rec.reason) st.reason = rec.reason;
  if (rec.startedAt) st.startedAt = rec.startedAt;
  if (rec.finishedAt) st.finishedAt = rec.finishedAt;
  if (rec.state === 'running') {
    const p = lastProgress(await store.logTail(job, build, 64 * 1024));
    if (p) st.progress = p;
  }
  if (FINAL.has(rec.state)) st.artifacts = await store.listArtifacts(job, build);
  return st;
}

/**
 * How often a held wait reads build.json again without being told it changed: the change notice (inotify on the
 * build's directory, where every state change renames a new build.json into place) is what wakes it; this only
 * bounds what a lost notice costs. Without notices (no inotify watch left), it is how the wait sees the change.
 */
const WAIT_LOOK_MS = { notified: 1000, unnotified: 250 } as const;

/**
 * build.wait: the status once the build's state is not `known`, or at `deadline` (ms, Date.now) or on abort. Every
 * writer of a state (the runner here, or a `kiln glue` process: any process on this data directory) replaces
 * build.json by a rename in the build's directory, so a watch on that directory hears each change; it is set up
 * before the first look, so a change between the look and the watch is not missed.
 */
export async function waitForChange(
  store: BuildStore,
  job: number,
  build: number,
  known: BuildState,
  deadline: number,
  signal?: AbortSignal,
): Promise<BuildStatus> {
  let told: boolean;
  let wake: (() => void) | undefined;
  const tell = () => {
    told = true;
    wake?.();
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(store.buildDir(job, build), { persistent: false }, (_event, name) => {
      // The log grows in the same directory: only build.json (or an unnamed event) can be a change of state.
      if (name === null || name === 'build.json') tell();
    });
    watcher.on('error', tell);
  } catch {
    // No such build (the look below says not_found), or no watch to be had: looking often enough does it.
  }
  const lookMs = watcher ? WAIT_LOOK_MS.notified : WAIT_LOOK_MS.unnotified;
  signal?.addEventListener('abort', tell);
  try {
    for (;;) {
      told = false;
      const rec = await store.mustReadBuild(job, build);
      const left = deadline - Date.now();
      if (rec.state !== known || left <= 0 || signal?.aborted) return buildStatus(store, job, build);
      if (told) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(left, lookMs));
        wake = done;
        function done() {
          clearTimeout(t);
          wake = undefined;
          resolve();
        }
      });
    }
  } finally {
    signal?.removeEventListener('abort', tell);
    watcher?.close();
  }
}

export async function readLog(store: BuildStore, job: number, build: number, offset: number): Promise<LogChunk> {
  const rec = await store.mustReadBuild(job, build);
  const more = !FINAL.has(rec.state);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path.join(store.buildDir(job, build), 'log'), fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch {
    return { text: '', offset, nextOffset: offset, more };
  }
  try {
    const size = (await fh.stat()).size;
    if (offset >= size) return { text: '', offset, nextOffset: offset, more };
    const buf = Buffer.alloc(Math.min(MAX_LOG_CHUNK, size - offset));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    // Never split a UTF-8 sequence: a chunk starts and ends at character boundaries (an offset inside a
    // character moves to the next one, reported in `offset`); the rest comes with the next call.
    let skip = 0;
    while (skip < 3 && skip < bytesRead && (buf[skip]! & 0xc0) === 0x80) skip++;
    const end = utf8Boundary(buf.subarray(0, bytesRead), offset + bytesRead >= size);
    const start = Math.min(skip, end);
    return {
      text: buf.subarray(start, end).toString('utf8'),
      offset: offset + start,
      nextOffset: offset + end,
      more: more || offset + end < size,
    };
  } finally {
    await fh.close();
  }
}

export async function openArtifact(
  store: BuildStore,
  job: number,
  build: number,
  name: ArtifactName,
  offset: number,
): Promise<Readable> {
  const rec = await store.mustReadBuild(job, build);
  if (!FINAL.has(rec.state) || !ARTIFACTS.has(name)) throw new KilnError('not_found', 'No such artifact (yet)');
  const archive = path.join(store.buildDir(job, build), 'archive');
  const ast = await fsp.lstat(archive).catch(() => undefined);
  if (!ast?.isDirectory()) throw new KilnError('not_found', 'No such artifact');
  let fh: fsp.FileHandle;
  try {
    // O_NOFOLLOW: a symlink placed by a build (to /etc/shadow, to another job) is refused, not followed.
    fh = await fsp.open(path.join(archive, name), fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    throw new KilnError('not_found', 'No such artifact');
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new KilnError('not_found', 'No such artifact');
  }
  if (offset > st.size) {
    await fh.close();
    throw new KilnError('invalid_input', 'offset is beyond the end of the artifact');
  }
  return fh.createReadStream({ start: offset, autoClose: true });
}

export async function listQueue(store: BuildStore): Promise<QueueItem[]> {
  const items: QueueItem[] = [];
  for (const e of await store.queueEntries()) {
    const rec = await store.readBuild(e.job, e.build);
    if (!rec || rec.state !== 'queued') continue;
    items.push({
      id: e.queueId,
      job: e.job,
      backendName: backendJobName(e.job),
      why: 'Waiting for a free executor',
      since: rec.queuedAt,
    });
  }
  return items;
}

export async function listJobs(store: BuildStore): Promise<JobInfo[]> {
  const out: JobInfo[] = [];
  for (const name of await store.jobNames()) {
    const job = jobIdFromBackendName(name);
    if (job === undefined) {
      out.push({ backendName: name, managed: false, enabled: false });
      continue;
    }
    const spec = await readJson<StoredSpec>(path.join(store.jobDir(job), 'config.json'));
    if (!spec) continue;
    const next = await store.nextBuildNumber(job);
    out.push({
      job,
      backendName: name,
      managed: true,
      enabled: spec.enabled,
      schedule: spec.schedule,
      ...(next > 1 ? { lastBuild: next - 1 } : {}),
    });
  }
  return out.sort((a, b) => (a.job ?? 0) - (b.job ?? 0));
}
