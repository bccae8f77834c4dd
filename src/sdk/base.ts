import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { followStream, imageInfo } from './docker-util.js';
import type { Reporter } from './reporter.js';

export const BASE_LABEL = 'io.kiln.base';
/** `minbase` or `slim`; a base made before slim bases existed has none and is minbase. */
const VARIANT_LABEL = 'io.kiln.variant';
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
  snapshot?: string;
  /** Made with Docker's slim dpkg path exclusions (a `-slim` base). */
  slim: boolean;
}

/**
 * Docker's "slim" variant, as debuerreotype makes it (scripts/.slimify-excludes and .slimify-includes, the lists
 * behind every `debian:*-slim` image; `/usr/share/groff/*` is commented out there since debuerreotype issue 87).
 * Written to /etc/dpkg/dpkg.cfg.d/docker, the file name Docker's images use, so a later `apt-get install` in the
 * user's RUN honours it, and a Dockerfile that removes that file to get the documentation back still can.
 */
export const SLIM_EXCLUDES = [
  '/usr/share/doc/*',
  '/usr/share/doc/kde/HTML/*/*',
  '/usr/share/gnome/help/*/*',
  '/usr/share/info/*',
  '/usr/share/linda/*',
  '/usr/share/lintian/overrides/*',
  '/usr/share/locale/*',
  '/usr/share/man/*',
  '/usr/share/omf/*/*-*.emf',
];
export const SLIM_INCLUDES = [
  '/usr/share/doc/*/copyright',
  '/usr/share/doc/kde/HTML/C/*',
  '/usr/share/gnome/help/*/C/*',
  '/usr/share/locale/all_languages',
  '/usr/share/locale/currency/*',
  '/usr/share/locale/l10n/*',
  '/usr/share/locale/languages',
  '/usr/share/locale/locale.alias',
  '/usr/share/omf/*/*-C.emf',
];
export const SLIM_DPKG_CFG = [
  '# This is the "slim" variant of the Debian base image (made by Kiln, as debuerreotype makes Docker\'s).',
  '# Many files which are normally unnecessary in containers are excluded,',
  '# and this configuration file keeps them that way.',
  '',
  ...SLIM_EXCLUDES.map((p) => `path-exclude ${p}`),
  '',
  ...SLIM_INCLUDES.map((p) => `path-include ${p}`),
  '',
].join('\n');

/**
 * What debuerreotype-slimify removes from the tree once the packages are in: under each excluded directory, every
 * file and link that no include matches, then the empty directories and dangling links this leaves. Run in the
 * chroot (absolute links resolve there). Constant text: no input reaches it.
 */
const SLIM_PURGE = (() => {
  const keep = SLIM_INCLUDES.map((p) => `-path "${p}"`).join(' -o ');
  const dirs = SLIM_EXCLUDES.filter((p) => p.endsWith('/*') && !p.slice(0, -2).includes('*')).map((p) =>
    p.slice(0, -2),
  );
  return (
    `set -e; for d in ${dirs.join(' ')}; do [ -d "$d" ] || continue; ` +
    `find "$d" -depth -mindepth 1 -not \\( ${keep} \\) -not \\( -type d -o -type l \\) -exec rm -f {} +; ` +
    `while [ -n "$(find "$d" -depth -mindepth 1 \\( -empty -o -xtype l \\) -print -exec rm -rf {} +)" ]; do :; done; done`
  );
})();

/** What a base's name says: `debian:<suite>`, `debian:<suite>-slim`, the same for `devuan:`. */
export function parseBaseName(name: string): { distro: 'debian' | 'devuan'; suite: string; slim: boolean } {
  const m = /^(debian|devuan):([a-z][a-z0-9-]{1,30})$/.exec(name);
  if (!m)
    throw new KilnError(
      'invalid_input',
      `Kiln does not know how to make the base image ${name} (only debian:<suite>[-slim] and devuan:<suite>[-slim])`,
    );
  const slim = m[2]!.endsWith('-slim');
  const suite = slim ? m[2]!.slice(0, -'-slim'.length) : m[2]!;
  if (!/^[a-z][a-z0-9-]{1,30}$/.test(suite))
    throw new KilnError(
      'invalid_input',
      `Kiln does not know how to make the base image ${name} (no suite before -slim)`,
    );
  return { distro: m[1] as 'debian' | 'devuan', suite, slim };
}

/** Where a base comes from: distribution mirror and suite, and whether it is slim. */
export function baseRecipe(
  name: string,
  s: BaseSettings,
): { mirror: string; suite: string; slim: boolean; keyring?: string } {
  const { distro, suite, slim } = parseBaseName(name);
  if (distro === 'devuan') {
    if (!s.devuanMirror)
      throw new KilnError('invalid_input', `The base ${name} needs a Devuan mirror (config sdk.devuanMirror)`);
    return {
      mirror: s.devuanMirror,
      suite,
      slim,
      keyring: s.devuanKeyring ?? '/usr/share/keyrings/devuan-archive-keyring.gpg',
    };
  }
  const mirror = s.snapshot ? `${SNAPSHOT_MIRROR}archive/debian/${encodeURIComponent(s.snapshot)}/` : s.mirror;
  return { mirror, suite, slim };
}

/**
 * Makes a base image locally when the engine lacks it: mmdebstrap (minbase) writes a tarball from the mirror,
 * `docker import` turns it into the image, labelled so Kiln knows it made it. Idempotent: an existing image of that
 * name is used as is when Kiln made it, and refused otherwise: a build starts only from bases Kiln put there (an
 * image of that name from anywhere else, a pull or a `docker tag`, could hold anything).
 */
export async function ensureBase(
  docker: Dockerode,
  name: string,
  s: BaseSettings,
  workDir: string,
  rep: Reporter,
  timeoutMs = 15 * 60_000,
): Promise<BaseImage> {
  const existing = await imageInfo(docker, name);
  if (existing) {
    const labels = existing.Config?.Labels ?? {};
    // What `docker import` below makes: Kiln's label (images built on a base inherit it, hence also) one layer, and
    // no ONBUILD trigger to fire in the user's build.
    if (labels[BASE_LABEL] !== '1' || existing.RootFS?.Layers?.length !== 1 || existing.Config?.OnBuild?.length) {
      throw new KilnError(
        'backend_unavailable',
        `The engine has an image named ${name} that Kiln did not make, and builds start only from bases Kiln made: ` +
          `remove it (docker rmi ${name}) and Kiln makes the base itself`,
      );
    }
    // A Kiln base tagged under another base's name (`docker tag debian:bookworm debian:bookworm-slim`) is not that base.
    const want = parseBaseName(name);
    const variant = labels[VARIANT_LABEL] ?? 'minbase';
    if (labels['io.kiln.suite'] !== want.suite || variant !== (want.slim ? 'slim' : 'minbase')) {
      throw new KilnError(
        'backend_unavailable',
        `The engine's image ${name} is a Kiln base of another kind (${labels['io.kiln.suite'] ?? '?'}, ${variant}): ` +
          `remove it (docker rmi ${name}) and Kiln makes the base itself`,
      );
    }
    rep.log(`[kiln] base ${name} present (${existing.Id})`);
    return {
      name,
      id: existing.Id,
      created: false,
      mirror: labels['io.kiln.mirror'],
      suite: want.suite,
      slim: want.slim,
      ...(labels['io.kiln.snapshot'] ? { snapshot: labels['io.kiln.snapshot'] } : {}),
    };
  }
  const r = baseRecipe(name, s);
  if (r.keyring) {
    // mmdebstrap would fail much later with a signature error; say what is missing instead.
    const ok = await fsp.access(r.keyring).then(
      () => true,
      () => false,
    );
    if (!ok)
      throw new KilnError(
        'invalid_input',
        `The base ${name} needs the archive keyring ${r.keyring} on the builder (Devuan's package devuan-keyring, or set sdk.devuanKeyring)`,
      );
  }
  const tar = path.join(workDir, `base-${r.suite}${r.slim ? '-slim' : ''}.tar`);
  rep.log(
    `[kiln] base ${name} missing: mmdebstrap --variant=minbase ${r.suite} from ${r.mirror}${r.slim ? ", slimmed as Docker's -slim images are" : ''}`,
  );
  const args = ['--variant=minbase', '--format=tar', '--quiet'];
  if (r.keyring) args.push(`--keyring=${r.keyring}`);
  if (r.slim) {
    // dpkg honours the exclusions from the first package apt installs; the hook removes what the essential
    // packages' extraction wrote before dpkg read them, and gives the file Docker's name.
    const cfg = path.join(workDir, 'slim-dpkg.cfg');
    await fsp.writeFile(cfg, SLIM_DPKG_CFG);
    args.push(
      `--dpkgopt=${cfg}`,
      `--customize-hook=mv "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap" "$1/etc/dpkg/dpkg.cfg.d/docker" && chroot "$1" /bin/sh -c '${SLIM_PURGE}'`,
    );
  }
  args.push(r.suite, tar, r.mirror);
  const res = await run('mmdebstrap', args, { timeoutMs, onOutput: (c) => rep.output(c.toString('utf8')) });
  if (res.timedOut) throw new KilnError('timeout', `Making the base image ${name} timed out`);
  if (res.code !== 0)
    throw new KilnError(
      'build_failed',
      `Making the base image ${name} failed (mmdebstrap exit ${res.code}); see the log`,
    );

  const [repo, tag] = name.split(':') as [string, string];
  const stream = await docker.importImage(
    createReadStream(tar) as unknown as string,
    {
      repo,
      tag,
      changes: [
        `LABEL ${BASE_LABEL}=1`,
        `LABEL io.kiln.suite=${r.suite}`,
        `LABEL ${VARIANT_LABEL}=${r.slim ? 'slim' : 'minbase'}`,
        `LABEL io.kiln.mirror=${r.mirror}`,
        ...(s.snapshot ? [`LABEL io.kiln.snapshot=${s.snapshot}`] : []),
        'CMD ["bash"]',
      ],
    } as Record<string, unknown>,
  );
  await followStream(docker, stream, () => undefined, `docker import of ${name}`);
  await fsp.rm(tar, { force: true });
  const info = await imageInfo(docker, name);
  if (!info) throw new KilnError('build_failed', `The base image ${name} did not appear after import`);
  rep.log(`[kiln] base ${name} made: ${info.Id}`);
  return {
    name,
    id: info.Id,
    created: true,
    mirror: r.mirror,
    suite: r.suite,
    slim: r.slim,
    ...(s.snapshot ? { snapshot: s.snapshot } : {}),
  };
}
