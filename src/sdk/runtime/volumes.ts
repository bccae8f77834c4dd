import { lstatIn, mkdirIn } from '../fsroot.js';

/**
 * VOLUME paths on a machine. `docker run` mounts a fresh volume on each: a copy of the image's directory (its
 * owner and mode included) when the image has one, else an empty directory owned by root with mode 0755, which a
 * non-root USER cannot write to (under Docker either). A machine has no volumes: the directory on the root
 * filesystem plays the part, so Kiln keeps what the image has and makes what it lacks as Docker would (root, 0755).
 * A path through a symbolic link is left alone (fsroot never follows one on the build host).
 */
export interface VolumeState {
  path: string;
  state:
    | 'in the image'
    | 'created (root, 0755)'
    | 'not a directory in the image'
    | 'reached through a symbolic link: left as it is';
}

export async function ensureVolumes(root: string, paths: readonly string[]): Promise<VolumeState[]> {
  const out: VolumeState[] = [];
  for (const p of paths) {
    if (p === '/') continue;
    const st = await lstatIn(root, p);
    if (st?.isDirectory()) out.push({ path: p, state: 'in the image' });
    else if (st?.isSymbolicLink()) out.push({ path: p, state: 'reached through a symbolic link: left as it is' });
    else if (st) out.push({ path: p, state: 'not a directory in the image' });
    else
      out.push({
        path: p,
        state: (await mkdirIn(root, p)) ? 'created (root, 0755)' : 'reached through a symbolic link: left as it is',
      });
  }
  return out;
}
