import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import tarStream from 'tar-stream';
import { KilnError } from '../shared/errors.js';
import { safeComponents } from './extract.js';
import { leftOut, parseDockerignore, type IgnoreRule } from './dockerignore.js';
import { makeBuildCgroup, type BuildCgroup, type EngineCgroupInfo } from './cgroup.js';
import { watchDiskGrowth } from './disk-guard.js';
import { followStream, imageInfo } from './docker-util.js';
import { ensureBuildNetwork, type EgressOptions } from './egress.js';
import type { Reporter } from './reporter.js';

export interface BuildSettings {
  network: 'filtered' | 'host' | 'none';
  /** For `filtered`: the subnet, mirrors and allowances of the build network (egress.ts). */
  egress?: EgressOptions;
  memoryMb: number;
  cpus: number;
  timeoutSeconds: number;
  /** Most processes the build's RUN steps may have at once (a fork bomb stops there). */
  pidsMax?: number;
  /** Most bytes the engine's disk may lose while the build runs. */
  maxDiskBytes?: number;
  /**
   * The engine's predefined proxy args (sdk.buildProxy, build-proxy.ts): RUN steps see them, the image does not. A
   * build arg of the same name wins. Not part of the tag, like the engine leaves them out of its cache key.
   */
  proxyArgs?: Readonly<Record<string, string>>;
  signal?: AbortSignal;
}

export interface BuildRequestCtx {
  dockerfileText: string;
  contextTar?: string;
  buildArgs: Record<string, string>;
}

export const BUILD_LABEL = 'io.kiln.build';
/** The repository of every image a build tags (`kiln-build:<hash of inputs>`). */
export const BUILD_REPO = 'kiln-build';

interface CtxEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  mtime?: Date;
  linkname?: string;
  data?: Buffer;
}

const MAX_CONTEXT_BYTES = 1 << 30;

/** Reads an uploaded context tar: regular files, directories and symlinks with safe names; the rest is dropped. */
async function entriesFromTar(file: string): Promise<CtxEntry[]> {
  const out: CtxEntry[] = [];
  let total = 0;
  const ex = tarStream.extract();
  const src = createReadStream(file);
  src.on('error', (e) => ex.destroy(e));
  src.pipe(ex);
  for await (const entry of ex) {
    const h = entry.header;
    const parts = safeComponents(h.name);
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (typeof parts === 'string' || parts.length === 0) continue;
    const base = { name: parts.join('/'), mode: (h.mode ?? 0o644) & 0o777, mtime: h.mtime };
    if (h.type === 'directory') out.push({ ...base, type: 'directory' });
    else if (h.type === 'symlink' && h.linkname) out.push({ ...base, type: 'symlink', linkname: h.linkname });
    else if (h.type === 'file' || h.type === 'contiguous-file' || !h.type) {
      const data = Buffer.concat(chunks);
      total += data.length;
      if (total > MAX_CONTEXT_BYTES) throw new KilnError('too_large', 'The build context is larger than 1 GiB');
      out.push({ ...base, type: 'file', data });
    }
  }
  return out;
}

/** Walks a context directory without following symlinks (they are sent as symlinks, like the Docker CLI does). */
async function entriesFromDir(dir: string): Promise<CtxEntry[]> {
  const out: CtxEntry[] = [];
  let total = 0;
  const walk = async (rel: string) => {
    const names = (await fsp.readdir(path.join(dir, rel))).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const abs = path.join(dir, r);
      const st = await fsp.lstat(abs);
      const base = { name: r, mode: st.mode & 0o777, mtime: st.mtime };
      if (st.isDirectory()) {
        out.push({ ...base, type: 'directory' });
        await walk(r);
      } else if (st.isSymbolicLink()) out.push({ ...base, type: 'symlink', linkname: await fsp.readlink(abs) });
      else if (st.isFile()) {
        total += st.size;
        if (total > MAX_CONTEXT_BYTES) throw new KilnError('too_large', 'The build context is larger than 1 GiB');
        out.push({ ...base, type: 'file', data: await fsp.readFile(abs) });
      }
    }
  };
  await walk('');
  return out;
}

/**
 * The build context the engine receives, made here: the Dockerfile under its usual name, plus the context (a tar or
 * a directory) minus what its .dockerignore excludes. A `Dockerfile` in the context is dropped: the Dockerfile the
 * policy checked is the one that gets built.
 */
export async function makeContext(req: BuildRequestCtx): Promise<{ stream: Readable; files: number; ignored: number }> {
  let entries: CtxEntry[] = [];
  if (req.contextTar) {
    const st = await fsp.stat(req.contextTar).catch(() => undefined);
    if (!st) throw new KilnError('invalid_input', 'The build context does not exist');
    try {
      entries = st.isDirectory() ? await entriesFromDir(req.contextTar) : await entriesFromTar(req.contextTar);
    } catch (e) {
      if (e instanceof KilnError) throw e;
      throw new KilnError('invalid_input', 'The build context could not be read (a tar file or a directory)', {
        cause: e,
      });
    }
  }
  const ignoreFile = entries.find((e) => e.name === '.dockerignore' && e.type === 'file');
  const rules: IgnoreRule[] = ignoreFile?.data ? parseDockerignore(ignoreFile.data.toString('utf8')) : [];
  const kept = entries.filter((e) => e.name !== 'Dockerfile' && !leftOut(rules, e.name));
  const pack = tarStream.pack();
  const out = new PassThrough();
  pack.pipe(out);
  for (const e of kept) {
    const h = { name: e.name, mode: e.mode, mtime: e.mtime, uid: 0, gid: 0 };
    if (e.type === 'file') pack.entry({ ...h, type: 'file' }, e.data ?? Buffer.alloc(0));
    else if (e.type === 'directory') pack.entry({ ...h, type: 'directory' });
    else pack.entry({ ...h, type: 'symlink', linkname: e.linkname });
  }
  pack.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, req.dockerfileText);
  pack.finalize();
  return {
    stream: out,
    files: kept.length,
    ignored: entries.filter((e) => e.name !== 'Dockerfile').length - kept.length,
  };
}

/** Deterministic tag for a build's result: same inputs, same tag (the engine's layer cache makes a rebuild quick). */
export function buildTag(req: BuildRequestCtx, contextDigest: string): string {
  const h = createHash('sha256')
    .update(req.dockerfileText)
    .update('\0')
    .update(JSON.stringify(Object.entries(req.buildArgs).sort()))
    .update('\0')
    .update(contextDigest);
  return `${BUILD_REPO}:${h.digest('hex').slice(0, 16)}`;
}

/** Builds through the engine's legacy builder (what dockerode's buildImage drives); returns the image id. */
export async function dockerBuild(
  docker: Dockerode,
  req: BuildRequestCtx,
  tag: string,
  s: BuildSettings,
  rep: Reporter,
): Promise<{ id: string; tag: string }> {
  const ac = new AbortController();
  let timedOut = false;
  let builtId: string | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, s.timeoutSeconds * 1000);
  const onAbort = () => ac.abort();
  s.signal?.addEventListener('abort', onAbort, { once: true });
  let cg: BuildCgroup | undefined;
  let forkFailed = false;
  let diskLost: number | undefined;
  let stopDiskGuard: (() => void) | undefined;
  try {
    const info =
      s.pidsMax || s.maxDiskBytes
        ? await docker.info().then(
            (i) => i as EngineInfo,
            () => undefined,
          )
        : undefined;
    if (s.pidsMax) {
      cg = await makeBuildCgroup(info, s.pidsMax);
      if (cg.note) rep.log(`[kiln] ${cg.note}`);
    }
    if (s.maxDiskBytes) {
      const root = await engineRootDir(info);
      if (root)
        stopDiskGuard = watchDiskGrowth(root, s.maxDiskBytes, (lost) => {
          diskLost = lost;
          ac.abort();
        });
      else rep.log("[kiln] build disk limit not applied: the engine's data directory is not on this host");
    }
    let networkmode: string = s.network;
    if (s.network === 'filtered') {
      if (!s.egress) throw new KilnError('internal', 'The filtered build network has no settings');
      const n = await ensureBuildNetwork(docker, s.egress);
      networkmode = n.network;
      rep.log(`[kiln] ${n.summary}`);
    }
    const ctx = await makeContext(req);
    if (req.contextTar)
      rep.log(
        `[kiln] build context: ${ctx.files} entries${ctx.ignored ? `, ${ctx.ignored} left out by .dockerignore` : ''}`,
      );
    const stream = await docker.buildImage(
      ctx.stream as unknown as NodeJS.ReadableStream,
      {
        t: tag,
        dockerfile: 'Dockerfile',
        networkmode,
        memory: s.memoryMb * 2 ** 20,
        memswap: s.memoryMb * 2 ** 20,
        cpuperiod: 100_000,
        cpuquota: Math.round(s.cpus * 100_000),
        ...(cg?.parent ? { cgroupparent: cg.parent } : {}),
        buildargs: { ...s.proxyArgs, ...req.buildArgs },
        labels: { [BUILD_LABEL]: '1' },
        rm: true,
        forcerm: true,
        pull: false,
        abortSignal: ac.signal,
      } as Dockerode.ImageBuildOptions,
    );
    let line = '';
    const events = await followStream(
      docker,
      stream,
      (t) => {
        if (/Cannot fork|fork: (?:retry: )?Resource temporarily unavailable/.test(t)) forkFailed = true;
        line += t;
        const nl = line.lastIndexOf('\n');
        if (nl >= 0) {
          rep.output(line.slice(0, nl + 1));
          line = line.slice(nl + 1);
        }
        if (rep.logCapHit) ac.abort();
      },
      'The Docker build',
    );
    if (line) rep.output(line);
    // The id the engine reports for this very build: the tag may already point at a concurrent build of the same inputs.
    const aux = events
      .map((ev) => (ev.aux as { ID?: string } | undefined)?.ID)
      .filter((x): x is string => typeof x === 'string')
      .at(-1);
    if (aux) builtId = aux;
  } catch (e) {
    if (diskLost !== undefined) {
      throw new KilnError(
        'limit_exceeded',
        `The build wrote more than its disk limit of ${Math.round(s.maxDiskBytes! / 2 ** 20)} MiB (sdk.maxBuildDiskMb) to the engine's disk`,
        { cause: e },
      );
    }
    if (timedOut)
      throw new KilnError('timeout', `The Docker build took longer than the limit of ${s.timeoutSeconds} s`);
    if (rep.logCapHit) throw new KilnError('limit_exceeded', 'The build printed more than the log size limit');
    if (e instanceof KilnError && e.code !== 'build_failed') throw e;
    const msg = (e as Error).message;
    if (forkFailed && cg?.parent) {
      throw new KilnError(
        'limit_exceeded',
        `A build step could not start more processes: the build's limit is ${s.pidsMax} (sdk.pidsLimit): ${msg}`,
        { cause: e },
      );
    }
    // The engine reports a step killed by the memory cgroup's OOM killer only as exit code 137 (SIGKILL).
    if (/returned a non-zero code: 137\b/.test(msg)) {
      throw new KilnError(
        'limit_exceeded',
        `A build step was killed (exit 137), most likely for going over the build memory limit of ${s.memoryMb} MiB: ${msg}`,
        { cause: e },
      );
    }
    const hint = s.network === 'none' ? ' (builds run with no network here: sdk.buildNetwork is none)' : '';
    if (e instanceof KilnError) throw new KilnError('build_failed', `${msg}${hint}`, { cause: e });
    throw new KilnError('build_failed', `The Docker build failed: ${msg}${hint}`, { cause: e });
  } finally {
    clearTimeout(timer);
    stopDiskGuard?.();
    s.signal?.removeEventListener('abort', onAbort);
    await cg?.remove();
  }
  const info = await imageInfo(docker, builtId ?? tag);
  if (!info) throw new KilnError('build_failed', 'The Docker build finished without an image');
  return { id: info.Id, tag };
}

type EngineInfo = EngineCgroupInfo & { DockerRootDir?: string };

/** The engine's data directory when it is on this host (a local socket), else undefined. */
async function engineRootDir(info: EngineInfo | undefined): Promise<string | undefined> {
  const dir = info?.DockerRootDir;
  return dir &&
    (await fsp.stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    ))
    ? dir
    : undefined;
}

/** sha256 of the context: of the tar file itself, or of a directory's names, kinds, modes, link targets and bytes. */
export async function contextDigest(p: string): Promise<string> {
  const st = await fsp.stat(p);
  const h = createHash('sha256');
  if (!st.isDirectory()) {
    for await (const c of createReadStream(p)) h.update(c as Buffer);
    return h.digest('hex');
  }
  for (const e of await entriesFromDir(p)) {
    h.update(`${e.type}\0${e.name}\0${e.mode.toString(8)}\0${e.linkname ?? ''}\0${e.data?.length ?? 0}\0`);
    if (e.data) h.update(e.data);
  }
  return h.digest('hex');
}
