import type { BaseFrom } from '../dockerfile/policy.js';
import type { BaseImage } from './base.js';
import type { Reporter } from './reporter.js';

/** A base as manifest.json and provenance.json record it: the image, and every FROM that named it. */
export interface BaseRecord {
  name: string;
  id: string;
  mirror?: string;
  suite?: string;
  snapshot?: string;
  slim: boolean;
  requestedAs: {
    line: number;
    written: string;
    image: string;
    via: BaseFrom['via'];
    mapping?: string;
    source?: BaseFrom['source'];
  }[];
}

/** One line per FROM of a base, saying what the name written means here (and what it does not). */
export function logBaseUse(rep: Reporter, froms: readonly BaseFrom[], bases: readonly BaseImage[]): void {
  for (const f of froms) {
    const b = bases.find((x) => x.name === f.base);
    if (!b) continue;
    const shown = f.written === f.image ? f.image : `${f.written} (${f.image})`;
    const how = f.via === 'base' ? '' : `; via ${f.source === 'site' ? "the site's name" : 'sdk.baseNames'} ${f.name}`;
    rep.log(
      `[kiln] FROM ${shown} (line ${f.line}) -> Kiln base ${b.name} = ${b.id} (${b.suite ?? '?'} from ${b.snapshot ? `snapshot ${b.snapshot}` : (b.mirror ?? '?')}, ${b.slim ? 'slim' : 'not slim'}${how})`,
    );
    if (f.via === 'point-release' || f.via === 'dated-tag') {
      const what = f.via === 'point-release' ? 'a point release' : 'a dated tag';
      const when = b.snapshot
        ? `as the snapshot ${b.snapshot} has it`
        : `as ${b.mirror ?? 'its mirror'} has it now (set sdk.snapshot to pin a date)`;
      rep.log(
        `[kiln] ${f.image} is ${what} of ${f.name}: Kiln builds ${b.suite ?? f.base} ${when}, not the image Docker Hub published under that tag`,
      );
    }
  }
}

/** The manifest's and provenance's view of the bases: each with the FROMs that named it. */
export function baseRecords(froms: readonly BaseFrom[], bases: readonly BaseImage[]): BaseRecord[] {
  return bases.map((b) => ({
    name: b.name,
    id: b.id,
    mirror: b.mirror,
    suite: b.suite,
    ...(b.snapshot ? { snapshot: b.snapshot } : {}),
    slim: b.slim,
    requestedAs: froms
      .filter((f) => f.base === b.name)
      .map((f) => ({
        line: f.line,
        written: f.written,
        image: f.image,
        via: f.via,
        ...(f.name ? { mapping: f.name } : {}),
        ...(f.source ? { source: f.source } : {}),
      })),
  }));
}
