import type { Queryable } from './knex.js';

export async function getSetting(db: Queryable, key: string): Promise<string | undefined> {
  const r = await db('settings').where({ key }).first();
  return r ? String(r.value) : undefined;
}

/** Stores `value` unless the key exists; returns whichever value is stored (first writer wins across instances). */
export async function getOrCreateSetting(db: Queryable, key: string, make: () => string): Promise<string> {
  const existing = await getSetting(db, key);
  if (existing !== undefined) return existing;
  await db('settings').insert({ key, value: make() }).onConflict('key').ignore();
  return (await getSetting(db, key))!;
}
