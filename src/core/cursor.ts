/**
 * Opaque cursors of keyset pages (the REST API's lists): the position after the last item of a page, as base64url
 * JSON tagged with the list it belongs to. Clients pass them back unchanged; anything else is `invalid_input`.
 */
import { z } from 'zod';
import { KilnError } from '../shared/errors.js';

export function encodeCursor(list: string, position: unknown): string {
  return Buffer.from(JSON.stringify([list, position]), 'utf8').toString('base64url');
}

/** The position in `list` a cursor names (undefined for no cursor: the first page). */
export function decodeCursor<T>(list: string, raw: unknown, position: z.ZodType<T>): T | undefined {
  if (raw === undefined || raw === '') return undefined;
  const bad = () => new KilnError('invalid_input', 'The cursor is not one this list gave out; start again without it.');
  if (typeof raw !== 'string' || raw.length > 512 || !/^[A-Za-z0-9_-]+$/.test(raw)) throw bad();
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const r = z.tuple([z.literal(list), position]).safeParse(v);
  if (!r.success) throw bad();
  return r.data[1];
}

/** A page size: 1-100, 25 by default. */
export const PageLimit = z.coerce.number().int().min(1).max(100).default(25);
