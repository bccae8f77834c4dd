/**
 * Storage limits: a per-user byte quota over everything a user makes the server keep (Dockerfile versions, build
 * contexts, build artifacts, releases), and a free-space floor on the database's disk below which uploads are refused, so that
 * a filling disk stops uploads (507) while logins and sessions still have room to write.
 */
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import type { Knex } from 'knex';
import { lockUserRow, sqliteFilename, storageUsedBy, type StorageUse } from '../db/index.js';
import { KilnError } from '../shared/errors.js';
import type { CoreDeps } from './deps.js';

const MiB = 1024 * 1024;
const mib = (n: number): string => `${(n / MiB).toFixed(n < 10 * MiB ? 1 : 0)} MiB`;

const quotaOf = (s: Pick<CoreDeps, 'config'>): number => s.config.web.quotaStorageMb * MiB;

function overQuota(use: StorageUse, quota: number, what: string): KilnError {
  return new KilnError(
    'quota_exceeded',
    `${what}: you store ${mib(use.total)} of your ${mib(quota)} (Dockerfile versions ${mib(use.dockerfiles)}, build contexts ${mib(use.contexts)}, build artifacts ${mib(use.artifacts)}, releases ${mib(use.releases)}). Ask an admin for more room.`,
    { detail: use },
  );
}

/**
 * Refuses an upload of about `bytes` when the database's disk would be left with less than `web.minFreeMb` free.
 * SQLite only: a PostgreSQL server's disk is not visible from here, and its own disk-full error maps to 507 as well.
 * SQLite writes new pages twice (WAL, then the database file), hence the factor.
 */
export async function ensureDiskRoom(s: Pick<CoreDeps, 'db' | 'config'>, bytes: number): Promise<void> {
  const file = sqliteFilename(s.db);
  if (!file || s.config.web.minFreeMb === 0) return;
  const st = await statfs(path.dirname(file));
  const free = Number(st.bavail) * Number(st.bsize);
  if (free < s.config.web.minFreeMb * MiB + 2 * bytes) {
    throw new KilnError(
      'insufficient_storage',
      'The server is running out of disk space, so uploads are paused until an admin frees some. Nothing was saved; logging in and reading still work.',
      { detail: { free, bytes } },
    );
  }
}

/**
 * Runs `write` (which stores about `bytes` for `ownerId`) in one transaction with the owner's storage quota: the
 * owner's row is locked (PostgreSQL; SQLite serialises writers), the usage is summed after the write, and the
 * transaction rolls back when it went over. Parallel uploads of one user therefore cannot overshoot together. A
 * write that adds nothing (an unchanged edit) passes even above the quota.
 */
export async function storeWithinQuota<T>(
  s: Pick<CoreDeps, 'db' | 'config'>,
  ownerId: number,
  bytes: number,
  write: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  await ensureDiskRoom(s, bytes);
  return s.db.transaction(async (trx) => {
    await lockUserRow(trx, ownerId);
    const quota = quotaOf(s);
    const before = quota > 0 ? await storageUsedBy(trx, ownerId) : undefined;
    const result = await write(trx);
    if (before) {
      const after = await storageUsedBy(trx, ownerId);
      if (after.total > quota && after.total > before.total)
        throw overQuota(
          after,
          quota,
          `This would go over your storage quota by ${mib(after.total - quota)}; nothing was saved`,
        );
    }
    return result;
  });
}

/** New builds wait while their owner is at or over the quota (a finished build adds its artifacts). Call in the build's transaction. */
export async function refuseBuildOverQuota(
  trx: Knex.Transaction,
  s: Pick<CoreDeps, 'config'>,
  ownerId: number,
): Promise<void> {
  const quota = quotaOf(s);
  if (quota === 0) return;
  const use = await storageUsedBy(trx, ownerId);
  if (use.total >= quota) throw overQuota(use, quota, 'No new builds while your storage quota is full');
}
