import { canonicalImage, familiarImage } from './image-ref.js';

/**
 * Which Kiln base a FROM names. CI writes one Debian release many ways (`debian:12`, `12.5`, `bookworm-slim`,
 * `stable`, `docker.io/library/debian:bookworm-20240513`); Kiln makes its bases itself and never pulls, so each of
 * those names must lead to one base Kiln makes (config `sdk.bases`) or be refused. A name is, in this order:
 *   1. an allowed base itself (`debian:bookworm`);
 *   2. a name mapped to one: the site admin's mappings first, then the build host's `sdk.baseNames`;
 *   3. a point release (`12.5`, `12.5-slim`) or a dated tag (`bookworm-20240513`, `bookworm-20240513-slim`) of a
 *      name that 1 or 2 accept: it means that name, i.e. the release as the configured mirror (or `sdk.snapshot`)
 *      has it now, not the bytes Docker Hub published under that tag;
 *   4. refused, with the list of accepted names.
 * Names are compared as the engine resolves them (`docker.io/library/` optional, no tag = `latest`, tags
 * case-sensitive). A digest (`@sha256:...`) is refused: it promises Docker Hub's exact bytes, which Kiln never
 * uses, so honouring the name while dropping the digest would break the promise the Dockerfile's author made.
 */

export type BaseNameSource = 'site' | 'config';

/** One mapping: a name CI writes -> a base in `sdk.bases`. */
export interface BaseName {
  name: string;
  base: string;
  source: BaseNameSource;
}

export interface BaseMatch {
  /** The allowed base, as spelled in `sdk.bases`. */
  base: string;
  /** How the name led there. */
  via: 'base' | 'name' | 'point-release' | 'dated-tag';
  /** The mapping that matched (familiar form), when one did. */
  name?: string;
  source?: BaseNameSource;
}

export type BaseResolution = { match: BaseMatch } | { refused: string };

interface Target {
  base: string;
  name: string;
  source: BaseNameSource;
  usable: boolean;
}

const POINT_RELEASE = /^([0-9]+)\.[0-9]+(?:\.[0-9]+)?(-slim)?$/;
const DATED_TAG = /^([a-z][a-z0-9]*)-[0-9]{8}(-slim)?$/;

/** The mappings one build (or one save on the web) uses, checked against the allowed bases. */
export class BaseNames {
  private readonly bases = new Map<string, string>();
  private readonly names = new Map<string, Target>();
  /** Mappings that can never match: a name that is no image reference, carries a digest, or is a base itself. */
  readonly ignored: { entry: BaseName; reason: string }[] = [];

  constructor(bases: readonly string[], names: readonly BaseName[] = []) {
    for (const b of bases) {
      const c = canonicalImage(b);
      if (c && !this.bases.has(c)) this.bases.set(c, b);
    }
    for (const entry of names) {
      const reason = this.refuseEntry(entry);
      if (reason) {
        this.ignored.push({ entry, reason });
        continue;
      }
      const c = canonicalImage(entry.name)!;
      // Site mappings come first in the list: the first one for a name wins.
      if (this.names.has(c)) continue;
      const target = canonicalImage(entry.base);
      const base = target === undefined ? undefined : this.bases.get(target);
      this.names.set(c, {
        base: base ?? entry.base,
        name: familiarImage(c),
        source: entry.source,
        usable: base !== undefined,
      });
    }
  }

  /** Why a mapping can never match, or undefined. */
  private refuseEntry(e: BaseName): string | undefined {
    const c = canonicalImage(e.name);
    if (c === undefined) return `${e.name} is not an image name`;
    if (c.includes('@')) return `${e.name} carries a digest (Kiln never uses registry images, so it cannot honour one)`;
    if (this.bases.has(c)) return `${e.name} is an allowed base itself`;
    return undefined;
  }

  /** The base a FROM's image (after expansion) names, or why it is refused. */
  resolve(image: string): BaseResolution {
    const canonical = canonicalImage(image);
    if (canonical === undefined) return { refused: this.notAllowed() };
    const at = canonical.indexOf('@');
    if (at >= 0) {
      const bare = canonicalImage(image.slice(0, image.lastIndexOf('@')));
      const named = bare === undefined ? undefined : this.lookup(bare);
      const means =
        named && 'match' in named ? `; without it, ${familiarImage(bare!)} means Kiln's base ${named.match.base}` : '';
      return {
        refused:
          `names an image by digest (${canonical.slice(at + 1, at + 20)}...), i.e. Docker Hub's exact bytes, which Kiln never uses: ` +
          `it builds its bases itself from the Debian archive and records their image ids in the provenance, so drop the @digest${means}`,
      };
    }
    const direct = this.lookup(canonical);
    if (direct) return direct;
    const derived = derive(canonical);
    const r = derived && this.lookup(derived.name);
    if (r && 'match' in r)
      return { match: { ...r.match, via: derived!.via, name: r.match.name ?? familiarImage(derived!.name) } };
    return r ?? { refused: this.notAllowed() };
  }

  /** Steps 1 and 2; undefined when neither knows the name. */
  private lookup(canonical: string): BaseResolution | undefined {
    const base = this.bases.get(canonical);
    if (base !== undefined) return { match: { base, via: 'base' } };
    const t = this.names.get(canonical);
    if (!t) return undefined;
    if (!t.usable) {
      const who = t.source === 'site' ? "the site's admin maps it" : 'sdk.baseNames maps it';
      return {
        refused: `is not an allowed base image: ${who} to ${t.base}, which this build host does not allow (sdk.bases: ${[...this.bases.values()].join(', ') || 'none'})`,
      };
    }
    return { match: { base: t.base, via: 'name', name: t.name, source: t.source } };
  }

  private notAllowed(): string {
    return (
      `is not an allowed base image; allowed: ${this.accepted() || 'none'}` +
      (this.bases.size
        ? '; a point release (12.5 for 12) or a dated tag (bookworm-20240513 for bookworm) of an allowed name means that name'
        : '')
    );
  }

  /** Every accepted name, grouped by the base it means: `debian:bookworm (or debian:12, debian:oldstable), ...`. */
  accepted(): string {
    return [...this.bases.values()]
      .map((b) => {
        const aliases = [...this.names.values()]
          .filter((t) => t.usable && t.base === b)
          .map((t) => t.name)
          .sort();
        return aliases.length ? `${b} (or ${aliases.join(', ')})` : b;
      })
      .join(', ');
  }

  /** The usable mappings, in familiar form, for pages and logs. */
  usable(): { name: string; base: string; source: BaseNameSource }[] {
    return [...this.names.values()].filter((t) => t.usable).map(({ name, base, source }) => ({ name, base, source }));
  }
}

/** Step 3: the name a point release or dated tag stands for (`debian:12.5-slim` -> `debian:12-slim`). */
function derive(canonical: string): { name: string; via: 'point-release' | 'dated-tag' } | undefined {
  const colon = canonical.lastIndexOf(':');
  if (colon < canonical.lastIndexOf('/')) return undefined;
  const repo = canonical.slice(0, colon);
  const tag = canonical.slice(colon + 1);
  const p = POINT_RELEASE.exec(tag);
  if (p) return { name: `${repo}:${p[1]}${p[2] ?? ''}`, via: 'point-release' };
  const d = DATED_TAG.exec(tag);
  if (d) return { name: `${repo}:${d[1]}${d[2] ?? ''}`, via: 'dated-tag' };
  return undefined;
}

/** `name=base` as `sdk.baseNames` and `kiln sdk build --base-name` write a mapping. */
export function parseBaseNameEntry(text: string, source: BaseNameSource): BaseName | undefined {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1 || text.indexOf('=', eq + 1) >= 0) return undefined;
  return { name: text.slice(0, eq).trim(), base: text.slice(eq + 1).trim(), source };
}

/**
 * The names one build (or one save on the web) accepts: the site admin's first, then the build host's
 * `sdk.baseNames` entries. Either may lead to a base this host does not allow; resolve() then refuses the FROM
 * that uses it, so the site can rename bases but never add one.
 */
export function baseNameList(site: readonly { name: string; base: string }[], config: readonly string[]): BaseName[] {
  return [
    ...site.map((m) => ({ name: m.name, base: m.base, source: 'site' as const })),
    ...config.map((e) => parseBaseNameEntry(e, 'config')).filter((e): e is BaseName => e !== undefined),
  ];
}
