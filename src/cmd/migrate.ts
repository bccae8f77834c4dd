/** Composition root for `kiln migrate`: applies pending database migrations and exits. */
import { loadConfig } from '../config/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: kiln migrate\n\nApplies pending migrations to the configured database (KILN_DB_CLIENT, KILN_DB_FILENAME, KILN_DB_URL).\n',
    );
    return 0;
  }
  const config = loadConfig();
  const db = createDbFromConfig(config);
  try {
    const applied = await migrateLatest(db);
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
    return 0;
  } finally {
    await db.destroy();
  }
}
