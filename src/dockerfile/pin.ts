import { KilnError } from '../shared/errors.js';
import { parseDockerfile } from './parse.js';
import type { BaseFrom } from './policy.js';

const IMAGE_ID = /^sha256:[0-9a-f]{64}$/;

/**
 * The Dockerfile the engine gets: each FROM of an allowed base becomes `FROM <that base's image id> [AS <stage>]`,
 * on the FROM's first line, its continuation lines left empty (so every other instruction keeps its line number
 * in the builder's messages). Nothing else changes. Why ids and not the names: the names CI writes (`debian:12`)
 * are not images in the engine, and tagging Kiln's bases under them would make engine-wide names that two builds
 * with different mappings would fight over; an id is exactly the image ensureBase checked, whatever the tags do
 * meanwhile, and the builder resolves it locally without a pull. The policy already expanded each FROM as the
 * builder would (ARG, --build-arg), so `ARG V=12` / `FROM debian:${V}` becomes the id of what `debian:12` means.
 * The result is parsed again and must differ from the input only in those FROMs' words.
 */
export function pinBaseImages(text: string, froms: readonly BaseFrom[], ids: Readonly<Record<string, string>>): string {
  const lines = text.split('\n');
  const pinned = new Map<number, string[]>();
  for (const f of froms) {
    const id = ids[f.base];
    if (id === undefined || !IMAGE_ID.test(id)) throw new KilnError('internal', `No image id for the base ${f.base}`);
    const words = f.stage === undefined ? [id] : [id, 'AS', f.stage];
    lines[f.line - 1] = `FROM ${words.join(' ')}`;
    for (let l = f.line; l < f.endLine; l++) lines[l] = '';
    pinned.set(f.line, words);
  }
  const out = lines.join('\n');
  const before = parseDockerfile(text).nodes;
  const after = parseDockerfile(out).nodes;
  const same =
    before.length === after.length &&
    after.every((n, i) => {
      const o = before[i]!;
      const words = pinned.get(o.startLine);
      if (n.keyword !== o.keyword || n.startLine !== o.startLine) return false;
      return words ? n.flags.length === 0 && n.args.join(' ') === words.join(' ') : n.original === o.original;
    });
  if (!same)
    throw new KilnError('internal', 'Pinning the base images changed more of the Dockerfile than its FROM lines');
  return out;
}
