import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createDb, migrateLatest, type Db } from '../../src/db/index.js';
import { tempDir } from '../helpers/tmp.js';

export const PG_ADMIN_URL = process.env.KILN_TEST_PG_URL ?? 'postgres://kiln:kiln@127.0.0.1:5432/postgres';

let pgReady = false;
function ensurePostgres(): void {
  if (pgReady) return;
  const r = spawnSync('bash', [path.resolve(__dirname, '../../scripts/ensure-postgres.sh')], {
    stdio: 'inherit',
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error('scripts/ensure-postgres.sh failed');
  pgReady = true;
}

export interface TestDb {
  db: Db;
  engine: 'sqlite' | 'pg';
  url?: string;
  filename?: string;
  drop(): Promise<void>;
}

/** A second pool on the same database: what another process (a second web, `kiln worker`, `kiln user`) has. */
export const secondPool = (t: TestDb): Db =>
  t.engine === 'sqlite'
    ? createDb({ client: 'sqlite', filename: t.filename! })
    : createDb({ client: 'pg', url: t.url! });

/** A fresh, migrated database on the given engine: a temp SQLite file, or a temp PostgreSQL database. */
export async function freshDb(engine: 'sqlite' | 'pg'): Promise<TestDb> {
  if (engine === 'sqlite') {
    const { dir, cleanup } = tempDir('kiln-db-');
    const filename = path.join(dir, 'kiln.sqlite');
    const db = createDb({ client: 'sqlite', filename });
    await migrateLatest(db);
    return {
      db,
      engine,
      filename,
      drop: async () => {
        await db.destroy();
        cleanup();
      },
    };
  }
  ensurePostgres();
  const name = `kiln_test_${randomBytes(6).toString('hex')}`;
  const admin = createDb({ client: 'pg', url: PG_ADMIN_URL, poolMax: 1 });
  await admin.raw(`CREATE DATABASE ${name}`);
  const url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
  const db = createDb({ client: 'pg', url });
  await migrateLatest(db);
  return {
    db,
    engine,
    url,
    drop: async () => {
      await db.destroy();
      await admin.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.destroy();
    },
  };
}
