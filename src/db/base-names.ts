import { isPg, nowIso, type Db, type Queryable } from './knex.js';

export interface BaseNameRow {
  id: number;
  name: string;
  base: string;
  updated_by: number | null;
  created_at: string;
  updated_at: string;
}

const norm = (r: Record<string, unknown>): BaseNameRow => ({
  ...(r as unknown as BaseNameRow),
  id: Number(r.id),
  updated_by: r.updated_by == null ? null : Number(r.updated_by),
});

export async function listBaseNames(db: Queryable): Promise<BaseNameRow[]> {
  return (await db('base_names').orderBy('name')).map(norm);
}

/**
 * Maps `name` to `base`, creating or replacing the row in one transaction that also keeps the table within `max`
 * rows (on PostgreSQL the table is locked for it, so two admins adding at once cannot pass the limit together).
 * Returns the row and whether it is new; `over` when a new row would pass the limit (nothing written).
 */
export async function putBaseName(
  db: Db,
  m: { name: string; base: string; by: number | null },
  max: number,
): Promise<{ row: BaseNameRow; created: boolean } | 'over'> {
  return db.transaction(async (trx) => {
    if (isPg(trx)) await trx.raw('LOCK TABLE base_names IN SHARE ROW EXCLUSIVE MODE');
    const now = nowIso();
    const existing = await trx('base_names').where({ name: m.name }).first();
    if (existing) {
      await trx('base_names').where({ id: existing.id }).update({ base: m.base, updated_by: m.by, updated_at: now });
      return { row: norm(await trx('base_names').where({ id: existing.id }).first()), created: false };
    }
    const n = Number((await trx('base_names').count<{ n: number | string }[]>({ n: '*' }))[0]?.n ?? 0);
    if (n >= max) return 'over' as const;
    const [row] = await trx('base_names')
      .insert({ name: m.name, base: m.base, updated_by: m.by, created_at: now, updated_at: now })
      .returning('*');
    return { row: norm(row), created: true };
  });
}

/** Removes one mapping; false when there was none (already removed is not an error). */
export async function deleteBaseName(db: Queryable, id: number): Promise<boolean> {
  return (await db('base_names').where({ id }).del()) > 0;
}
