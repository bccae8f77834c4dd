import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import tarStream from 'tar-stream';
import { KilnError } from '../shared/errors.js';
import { safeComponents } from './extract.js';
import { followStream, imageInfo } from './docker-util.js';
import type { Reporter } from './reporter.js';

export interface BuildSettings {
  network: 'host' | 'none';
  memoryMb: number;
  cpus: number;
  timeoutSeconds: number;
}

export interface BuildRequestCtx {
  dockerfileText: string;
  contextTar?: string;
  buildArgs: Record<string, string>;
}

export const BUILD_LABEL = 'io.kiln.build';

/**
 * The build context the engine receives, made here: the Dockerfile under its usual name, plus the entries of the
 * uploaded context tar (regular files, directories and symlinks with safe names; a `Dockerfile` entry in the upload
 * is dropped because the Dockerfile checked by policy is the one that gets built).
 */
export function makeContext(req: BuildRequestCtx): Readable {
  const pack = tarStream.pack();
  const out = new PassThrough();
  pack.pipe(out);
  void (async () => {
    try {
      if (req.contextTar) {
        const ex = tarStream.extract();
        const src = createReadStream(req.contextTar);
        src.on('error', (e) => ex.destroy(e));
        src.pipe(ex);
        for await (const entry of ex) {
          const h = entry.header;
          const parts = safeComponents(h.name);
          const drain = async () => { for await (const _ of entry) { /* skip */ } };
          if (typeof parts === 'string' || parts.length === 0 || (parts.length === 1 && parts[0] === 'Dockerfile')) { await drain(); continue; }
          const name = parts.join('/');
          const common = { name, mode: (h.mode ?? 0o644) & 0o777, mtime: h.mtime, uid: 0, gid: 0 };
          if (h.type === 'directory') {
            pack.entry({ ...common, type: 'directory' });
            await drain();
          } else if (h.type === 'symlink' && h.linkname) {
            pack.entry({ ...common, type: 'symlink', linkname: h.linkname });
            await drain();
          } else if (h.type === 'file' || h.type === 'contiguous-file' || !h.type) {
            const chunks: Buffer[] = [];
            for await (const c of entry) chunks.push(c as Buffer);
            await new Promise<void>((res, rej) => pack.entry({ ...common, type: 'file' }, Buffer.concat(chunks), (e) => (e ? rej(e) : res())));
          } else {
            await drain();
          }
        }
      }
      pack.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, req.dockerfileText);
      pack.finalize();
    } catch (e) {
      out.destroy(new KilnError('invalid_input', 'The build context tar could not be read', { cause: e }));
    }
  })();
  return out;
}

/** Deterministic tag for a build's result: same inputs, same tag (the engine's layer cache makes a rebuild quick). */
export function buildTag(req: BuildRequestCtx, contextDigest: string): string {
  const h = createHash('sha256').update(req.dockerfileText).update('\0').update(JSON.stringify(Object.entries(req.buildArgs).sort())).update('\0').update(contextDigest);
  return `kiln-build:${h.digest('hex').slice(0, 16)}`;
}

/** Builds through the engine's legacy builder (what dockerode's buildImage drives); returns the image id. */
export async function dockerBuild(docker: Dockerode, req: BuildRequestCtx, tag: string, s: BuildSettings, rep: Reporter): Promise<{ id: string; tag: string }> {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; ac.abort(); }, s.timeoutSeconds * 1000);
  try {
    const stream = await docker.buildImage(makeContext(req) as unknown as NodeJS.ReadableStream, {
      t: tag,
      dockerfile: 'Dockerfile',
      networkmode: s.network,
      memory: s.memoryMb * 2 ** 20,
      memswap: s.memoryMb * 2 ** 20,
      cpuperiod: 100_000,
      cpuquota: Math.round(s.cpus * 100_000),
      buildargs: req.buildArgs,
      labels: { [BUILD_LABEL]: '1' },
      rm: true,
      forcerm: true,
      pull: false,
      abortSignal: ac.signal,
    } as Dockerode.ImageBuildOptions);
    let line = '';
    await followStream(docker, stream, (t) => {
      line += t;
      const nl = line.lastIndexOf('\n');
      if (nl >= 0) { rep.log(line.slice(0, nl + 1)); line = line.slice(nl + 1); }
      if (rep.logCapHit) ac.abort();
    }, 'The Docker build');
    if (line) rep.log(line);
  } catch (e) {
    if (timedOut) throw new KilnError('timeout', `The Docker build took longer than the limit of ${s.timeoutSeconds} s`);
    if (rep.logCapHit) throw new KilnError('limit_exceeded', 'The build printed more than the log size limit');
    if (e instanceof KilnError) throw e;
    throw new KilnError('build_failed', `The Docker build failed: ${(e as Error).message}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  const info = await imageInfo(docker, tag);
  if (!info) throw new KilnError('build_failed', 'The Docker build finished without an image');
  return { id: info.Id, tag };
}
