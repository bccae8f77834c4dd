/**
 * The site admin's names for allowed bases: `corp/debian:12` (as a CI Dockerfile writes it) -> `debian:bookworm` (a
 * base in sdk.bases). Stored in `base_names`, used by the policy when a Dockerfile is saved, and sent to every
 * build in its job spec, where the SDK checks each against its own sdk.bases again: a mapping can rename a base
 * the builders allow, never add one. Only admins read or change them (the policy's `settings.manage`).
 */
import { z } from 'zod';
import { deleteBaseName, listBaseNames, putBaseName, type BaseNameRow, type Queryable } from '../db/index.js';
import { BaseNames, baseNameList, type BaseName } from '../dockerfile/base-names.js';
import { canonicalImage, familiarImage } from '../dockerfile/image-ref.js';
import { IMAGE_NAME_RE, MAX_BASE_NAMES } from '../protocol/index.js';
import { KilnError, invalidInput } from '../shared/errors.js';
import { actorLabel, type Actor } from './actor.js';
import { Id, parse } from './commands.js';
import type { CoreDeps } from './deps.js';
import { authorize } from './policy.js';

export interface BaseNamesView {
  /** The site's mappings, editable here. */
  mappings: BaseNameRow[];
  /** What a mapping may lead to (this site's sdk.bases). */
  bases: readonly string[];
  /** The build host's own names (sdk.baseNames, the shipped defaults unless set), which site mappings override. */
  defaults: { name: string; base: string }[];
  /** Every name a FROM may use now, grouped by base, as a refusal lists them. */
  accepted: string;
}

/**
 * A mapping as an admin submits it. The name must be an image reference the engine would accept, without a digest
 * (Kiln never uses registry images, so a digest could not be honoured) and not itself an allowed base; the base
 * must be in sdk.bases. Both are stored normalised: `docker.io/library/debian:12` is `debian:12`.
 */
function mappingSchema(bases: readonly string[]) {
  const allowed = new Map(bases.map((b) => [canonicalImage(b), b] as const));
  return z.object({
    name: z
      .string()
      .trim()
      .max(255)
      .regex(
        IMAGE_NAME_RE,
        'The name must be an image name such as corp/debian:12 (letters, digits, . _ / : -; no digest).',
      )
      .transform((v, ctx) => {
        const c = canonicalImage(v);
        if (c === undefined || v === 'scratch') {
          ctx.addIssue({ code: 'custom', message: `${v} is not an image name the engine would accept.` });
          return z.NEVER;
        }
        if (allowed.has(c)) {
          ctx.addIssue({ code: 'custom', message: `${v} is an allowed base itself; it always means that base.` });
          return z.NEVER;
        }
        return familiarImage(c);
      }),
    base: z
      .string()
      .trim()
      .max(255)
      .transform((v, ctx) => {
        const b = allowed.get(canonicalImage(v) ?? '');
        if (b === undefined) {
          ctx.addIssue({
            code: 'custom',
            message: `${v.slice(0, 100)} is not an allowed base (sdk.bases: ${bases.join(', ') || 'none'}); a name can only lead to one of them.`,
          });
          return z.NEVER;
        }
        return b;
      }),
  });
}

function parseMapping(s: CoreDeps, body: unknown): { name: string; base: string } {
  const o = (body ?? {}) as Record<string, unknown>;
  const r = mappingSchema(s.config.sdk.bases).safeParse({ name: o.name, base: o.base });
  if (!r.success)
    throw invalidInput(
      r.error.issues
        .map((i) => (i.code === 'invalid_type' ? `${String(i.path[0])} is required.` : i.message))
        .join(' '),
    );
  return r.data;
}

/** The site's mappings as the policy and the job spec take them. */
export async function siteBaseNames(db: Queryable): Promise<{ name: string; base: string }[]> {
  return (await listBaseNames(db)).map(({ name, base }) => ({ name, base }));
}

/** Every name the policy accepts on this site: the site's mappings first, then sdk.baseNames. */
export async function policyBaseNames(s: Pick<CoreDeps, 'db' | 'config'>): Promise<BaseName[]> {
  return baseNameList(await siteBaseNames(s.db), s.config.sdk.baseNames);
}

export async function baseNamesView(s: CoreDeps, actor: Actor): Promise<BaseNamesView> {
  authorize(actor, 'settings.manage');
  const mappings = await listBaseNames(s.db);
  const names = await policyBaseNames(s);
  return {
    mappings,
    bases: s.config.sdk.bases,
    defaults: names.filter((n) => n.source === 'config').map(({ name, base }) => ({ name, base })),
    accepted: new BaseNames(s.config.sdk.bases, names).accepted(),
  };
}

/** Creates or changes the mapping of one name; idempotent (the same pair again changes nothing but its time). */
export async function setBaseName(
  s: CoreDeps,
  actor: Actor,
  body: unknown,
): Promise<{ mapping: BaseNameRow; created: boolean }> {
  authorize(actor, 'settings.manage');
  const m = parseMapping(s, body);
  const r = await putBaseName(s.db, { ...m, by: actor.kind === 'user' ? actor.id : null }, MAX_BASE_NAMES);
  if (r === 'over')
    throw new KilnError('conflict', `The site already has ${MAX_BASE_NAMES} base names; remove one first.`);
  s.logger.info({ ...actorLabel(actor), name: m.name, base: m.base, created: r.created }, 'base name mapped');
  return { mapping: r.row, created: r.created };
}

/** Removes a mapping by id; removing one that is gone already is success. */
export async function removeBaseName(s: CoreDeps, actor: Actor, rawId: unknown): Promise<{ removed: boolean }> {
  authorize(actor, 'settings.manage');
  const removed = await deleteBaseName(s.db, parse(Id, rawId));
  if (removed) s.logger.info({ ...actorLabel(actor) }, 'base name removed');
  return { removed };
}
