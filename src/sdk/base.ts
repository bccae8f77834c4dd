import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { followStream, imageInfo } from './docker-util.js';
import type { Reporter } from './reporter.js';

export const BASE_LABEL = 'io.kiln.base';
/** Debian's archive by date, for `sdk.snapshot`. */
const SNAPSHOT_MIRROR = 'http://snapshot.debian.org/';

/** Every archive a build may fetch packages from (the build network lets RUN steps reach them). */
export function mirrorUrls(s: { mirror: string; snapshot?: string; devuanMirror?: string }): string[] {
  return [s.mirror, s.snapshot ? SNAPSHOT_MIRROR : undefined, s.devuanMirror].filter((u): u is string => !!u);
}

export interface BaseSettings {
  mirror: string;
  devuanMirror?: string;
  devuanKeyring?: string;
  snapshot?: string;
}

export interface BaseImage {
  name: string;
  /** The engine's image id (sha256:...), the digest recorded in provenance. */
  id: string;
  /** True when this run made it (cold start). */
  created: boolean;
  mirror?: string;
  suite?: string;
}

/** Where a base comes from: distribution mirror and suite. Only names of the form debian:<suite> or devuan:<suite>. */
export function baseRecipe(name: string, s: BaseSettings): { mirror: string; suite: string; keyring?: string } {
  const m = /^(debian|devuan):([a-z][a-z0-9-]{1,30})$/.exec(name);
  if (!m) throw new KilnError('invalid_input', `Kiln does not know how to make the base image ${name} (only debian:<suite> and devuan:<suite>)`);
  const [, distro, suite] = m;
  if (distro === 'devuan') {
    if (!s.devuanMirror) throw new KilnError('invalid_input', `The base ${name} needs a Devuan mirror (config sdk.devuanMirror)`);
    return { mirror: s.devuanMirror, suite: suite!, keyring: s.devuanKeyring ?? '/usr/share/keyrings/devuan-archive-keyring.gpg' };
  }
  const mirror = s.snapshot ? `${SNAPSHOT_MIRROR}archive/debian/${encodeURIComponent(s.snapshot)}/` : s.mirror;
  return { mirror, suite: suite! };
}

/**
 * Makes a base image locally when the engine lacks it: mmdebstrap (minbase) writes a tarball from the mirror,
 * `docker import` turns it into the image, labelled so Kiln knows it made it. Idempotent: an existing image of that
 * name is used as is when Kiln made it, and refused otherwise: a build starts only from bases Kiln put there (an
 * image of that name from anywhere else, a pull or a `docker tag`, could hold anything).
 */
export async function ensureBase(docker: Dockerode, name: string, s: BaseSettings, workDir: string, rep: Reporter, timeoutMs = 15 * 60_000): Promise<BaseImage> {
  const existing = await imageInfo(docker, name);
  if (existing) {
    const labels = existing.Config?.Labels ?? {};
    // What `docker import` below makes: Kiln's label (images built on a base inherit it, hence also) one layer, and
    // no ONBUILD trigger to fire in the user's build.
    if (labels[BASE_LABEL] !== '1' || existing.RootFS?.Layers?.length !== 1 || existing.Config?.OnBuild?.length) {
      throw new KilnError('backend_unavailable', `The engine has an image named ${name} that Kiln did not make, and builds start only from bases Kiln made: ` +
        `remove it (docker rmi ${name}) and Kiln makes the base itself`);
    }
    rep.log(`[kiln] base ${name} present (${existing.Id})`);
    return { name, id: existing.Id, created: false, mirror: labels['io.kiln.mirror'], suite: labels['io.kiln.suite'] };
  }
  const r = baseRecipe(name, s);
  if (r.keyring) {
    // mmdebstrap would fail much later with a signature error; say what is missing instead.
    const ok = await fsp.access(r.keyring).then(() => true, () => false);
    if (!ok) throw new KilnError('invalid_input', `The base ${name} needs the archive keyring ${r.keyring} on the builder (Devuan's package devuan-keyring, or set sdk.devuanKeyring)`);
  }
  const tar = path.join(workDir, `base-${r.suite}.tar`);
  rep.log(`[kiln] base ${name} missing: mmdebstrap --variant=minbase ${r.suite} from ${r.mirror}`);
  const args = ['--variant=minbase', '--format=tar', '--quiet'];
  if (r.keyring) args.push(`--keyring=${r.keyring}`);
  args.push(r.suite, tar, r.mirror);
  const res = await run('mmdebstrap', args, { timeoutMs, onOutput: (c) => rep.output(c.toString('utf8')) });
  if (res.timedOut) throw new KilnError('timeout', `Making the base image ${name} timed out`);
  if (res.code !== 0) throw new KilnError('build_failed', `Making the base image ${name} failed (mmdebstrap exit ${res.code}); see the log`);

  const [repo, tag] = name.split(':') as [string, string];
  const stream = await docker.importImage(createReadStream(tar) as unknown as string, {
    repo, tag,
    changes: [
      `LABEL ${BASE_LABEL}=1`,
      `LABEL io.kiln.suite=${r.suite}`,
      `LABEL io.kiln.mirror=${r.mirror}`,
      ...(s.snapshot ? [`LABEL io.kiln.snapshot=${s.snapshot}`] : []),
      'CMD ["bash"]',
    ],
  } as Record<string, unknown>);
  await followStream(docker, stream, () => undefined, `docker import of ${name}`);
  await fsp.rm(tar, { force: true });
  const info = await imageInfo(docker, name);
  if (!info) throw new KilnError('build_failed', `The base image ${name} did not appear after import`);
  rep.log(`[kiln] base ${name} made: ${info.Id}`);
  return { name, id: info.Id, created: true, mirror: r.mirror, suite: r.suite };
}
