import path from 'node:path';
import { mkdirSync } from 'node:fs';
import knexFactory, { type Knex } from 'knex';
import type { FrozenConfig } from '../config/index.js';
import { KilnError } from '../shared/errors.js';

export type Db = Knex;
/** Anything table functions accept: the pool or an open transaction. */
export type Queryable = Knex | Knex.Transaction;

/** How long a SQLite connection waits for a lock before SQLITE_BUSY (ms). */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;

type SqliteConn = { run(sql: string, cb: (err: Error | null) => void): void };

/**
 * Per-connection SQLite settings. Order matters: busy_timeout must be set before journal_mode=WAL, because
 * switching to WAL takes an exclusive lock and would fail at once on a busy file instead of waiting.
 * synchronous=FULL because WAL+NORMAL may lose the last commits on power loss (an acknowledged build must survive).
 */
const SQLITE_PRAGMAS = [
  `PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`,
  'PRAGMA journal_mode = WAL',
  'PRAGMA synchronous = FULL',
  'PRAGMA foreign_keys = ON',
];

function runPragmas(conn: SqliteConn, done: (err: Error | null, conn: unknown) => void): void {
  const next = (i: number): void => {
    const sql = SQLITE_PRAGMAS[i];
    if (sql === undefined) return done(null, conn);
    conn.run(sql, (err) => (err ? done(err, conn) : next(i + 1)));
  };
  next(0);
}

export type DbOptions = { client: 'sqlite'; filename: string } | { client: 'pg'; url: string; poolMax?: number };

/** Builds a knex instance. Opens no connection until the first query. */
export function createDb(opts: DbOptions): Db {
  if (opts.client === 'sqlite') {
    if (opts.filename !== ':memory:') mkdirSync(path.dirname(path.resolve(opts.filename)), { recursive: true });
    return knexFactory({
      client: 'sqlite3',
      connection: { filename: opts.filename },
      useNullAsDefault: true,
      // One writer at a time is what SQLite does anyway; a single pooled connection also serialises our
      // transactions, so check-then-insert quota logic cannot interleave.
      pool: { min: 1, max: 1, afterCreate: runPragmas },
    });
  }
  return knexFactory({
    client: 'pg',
    connection: opts.url,
    pool: { min: 0, max: opts.poolMax ?? 10 },
  });
}

/** Read connections a SQLite reader pool opens at most (each runs a statement on a libuv thread; there are 4). */
export const SQLITE_READERS = 2;

/**
 * A pool for reads outside transactions. SQLite: read-only connections to the same file beside the one writer;
 * in WAL mode a reader never waits for the writer and sees every committed transaction, so pages read in
 * parallel instead of queueing behind each other and the writer on one connection. PostgreSQL and in-memory
 * databases: `db` itself. Close it with `closeReader(reader, db)`.
 */
export function createReader(db: Db, connections = SQLITE_READERS): Db {
  const filename = sqliteFilename(db);
  if (!filename) return db;
  return knexFactory({
    client: 'sqlite3',
    connection: { filename },
    useNullAsDefault: true,
    pool: {
      min: 0,
      max: connections,
      afterCreate: (conn: SqliteConn, done: (err: Error | null, conn: unknown) => void) => {
        // busy_timeout for the rare waits a WAL reader has (another connection opening the file); query_only
        // because nothing on this pool may write (writes are ordered on the writer's one connection).
        conn.run(`PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`, (err) =>
          err ? done(err, conn) : conn.run('PRAGMA query_only = ON', (e2) => done(e2, conn)),
        );
      },
    },
  });
}

export async function closeReader(reader: Db, db: Db): Promise<void> {
  if (reader !== db) await reader.destroy();
}

/** The database the configuration names. */
export function createDbFromConfig(config: FrozenConfig): Db {
  if (config.db.client === 'pg') {
    if (!config.db.url) throw new KilnError('invalid_input', 'KILN_DB_URL is required when KILN_DB_CLIENT=pg');
    return createDb({ client: 'pg', url: config.db.url });
  }
  const filename = path.resolve(config.dataDir, config.db.filename);
  return createDb({ client: 'sqlite', filename });
}

export const isSqlite = (db: Queryable): boolean => (db as Knex).client.config.client === 'sqlite3';
export const isPg = (db: Queryable): boolean => (db as Knex).client.config.client === 'pg';

/** True for a UNIQUE constraint violation on either engine. */
export function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; errno?: number; message?: string };
  return err?.code === '23505' || (err?.code === 'SQLITE_CONSTRAINT' && /UNIQUE/.test(err.message ?? ''));
}

/** True when SQLite gave up waiting for a lock; the web maps it to 503 + Retry-After. */
export function isBusy(e: unknown): boolean {
  const err = e as { code?: string };
  return err?.code === 'SQLITE_BUSY' || err?.code === 'SQLITE_LOCKED';
}

/**
 * True when a write failed because the disk is full: SQLite's SQLITE_FULL, PostgreSQL's disk_full (SQLSTATE 53100),
 * or ENOSPC from any file write. The statement or transaction that hit it has been rolled back by the engine.
 */
export function isDiskFull(e: unknown): boolean {
  const err = e as { code?: string };
  return err?.code === 'SQLITE_FULL' || err?.code === '53100' || err?.code === 'ENOSPC';
}

/** The file of a SQLite database (as opened), or undefined for PostgreSQL and in-memory databases. */
export function sqliteFilename(db: Queryable): string | undefined {
  if (!isSqlite(db)) return undefined;
  const f = ((db as Knex).client.config.connection as { filename?: string } | undefined)?.filename;
  return f && f !== ':memory:' ? path.resolve(f) : undefined;
}

/** Timestamps are ISO-8601 UTC strings: sortable, identical on both engines. */
export const nowIso = (): string => new Date().toISOString();
