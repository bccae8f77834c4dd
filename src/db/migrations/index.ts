import type { Knex } from 'knex';
import { KilnError } from '../../shared/errors.js';
import * as m001 from './001_initial.js';
import * as m002 from './002_build_context.js';
import * as m003 from './003_attestation.js';
import * as m004 from './004_quotas.js';
import * as m005 from './005_requeue.js';
import * as m006 from './006_base_names.js';
import * as m007 from './007_tasks.js';
import * as m008 from './008_jobs.js';
import * as m010 from './010_admin.js';
import * as m011 from './011_api_tokens.js';
import * as m012 from './012_git_sources.js';
import * as m013 from './013_user_ssh_keys.js';
import * as m014 from './014_auth_changes.js';
import * as m015 from './015_releases.js';
import * as m016 from './016_following.js';

type Migration = { up(knex: Knex): Promise<void>; down(knex: Knex): Promise<void> };

/**
 * The migrations, in order, as compiled modules: no directory scanning, so `dist/` carries exactly what the source
 * lists. Append only; never rename or edit a shipped entry (knex records names in knex_migrations).
 */
const MIGRATIONS: ReadonlyArray<readonly [string, Migration]> = [
  ['001_initial', m001],
  ['002_build_context', m002],
  ['003_attestation', m003],
  ['004_quotas', m004],
  ['005_requeue', m005],
  ['006_base_names', m006],
  ['007_tasks', m007],
  ['008_jobs', m008],
  ['010_admin', m010],
  ['011_api_tokens', m011],
  ['012_git_sources', m012],
  ['013_user_ssh_keys', m013],
  ['014_auth_changes', m014],
  ['015_releases', m015],
  ['016_following', m016],
];

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => MIGRATIONS.map(([name]) => name),
  getMigrationName: (name) => name,
  getMigration: async (name) => {
    const found = MIGRATIONS.find(([n]) => n === name);
    if (!found) throw new Error(`unknown migration ${name}`);
    return found[1];
  },
};

/**
 * Applies every pending migration; returns the names applied. Safe to run from several processes. Then refuses a
 * database whose auth triggers (migration 014) are not all there and enabled: without them a change would not reach
 * the auth change log, and web processes would go on serving sessions and users from memory that have changed.
 */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  await checkAuthTriggers(db);
  return applied;
}

async function checkAuthTriggers(db: Knex): Promise<void> {
  const rows: Array<{ t: string; name: string }> =
    db.client.config.client === 'pg'
      ? // Only 'O' (origin) and 'A' (always) fire in an ordinary session; 'D' is disabled, 'R' fires on replicas only.
        (
          await db.raw(`SELECT c.relname AS t, tg.tgname AS name FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
            WHERE NOT tg.tgisinternal AND tg.tgenabled IN ('O', 'A') AND pg_table_is_visible(c.oid)`)
        ).rows
      : await db.raw(`SELECT tbl_name AS t, name FROM sqlite_master WHERE type = 'trigger'`);
  const have = new Set(rows.map((r) => `${r.t}.${r.name}`));
  const missing = m014
    .authTriggerNames(db)
    .map(([t, name]) => `${t}.${name}`)
    .filter((n) => !have.has(n));
  if (missing.length > 0)
    throw new KilnError(
      'internal',
      `The database lacks auth triggers (${missing.join(', ')}): a table rebuild dropped them, or they were disabled. ` +
        'Sessions and users would be served stale; see src/db/migrations/014_auth_changes.ts (createAuthTriggers).',
    );
}
