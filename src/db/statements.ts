/**
 * The hottest reads (every request's auth check, the dashboard's and the build page's own rows) as plain SQL,
 * prepared once per SQLite connection. Profiled under load, knex spent more of the main thread building and
 * preparing a join than SQLite spent running it: its query builder about 200 us, a fresh node-sqlite3 Statement
 * per query about 60 us more, against about 40 us for a statement prepared once (bench/RESULTS-web.md).
 *
 * SQL here is written for both engines: `?` placeholders, unquoted lower-case names, no engine-only syntax. On
 * PostgreSQL, and inside a transaction (which has its own connection), it goes through knex.raw.
 */
import type { Knex } from 'knex';
import type { Database, Statement } from 'sqlite3';
import { isSqlite, type Queryable } from './knex.js';

export type Row = Record<string, unknown>;

/** Statements prepared on each connection, by SQL text. */
const prepared = new WeakMap<Database, Map<string, Statement>>();
/** Pools whose connections get their statements finalized before they close (SQLite refuses to close otherwise). */
const hooked = new WeakSet<object>();

type Pool = { on(event: 'destroyRequest', f: (eventId: number, conn: Database) => void): void };

/** The rows of one read-only statement. */
export async function selectRows(db: Queryable, sql: string, params: readonly unknown[] = []): Promise<Row[]> {
  if (!isSqlite(db) || (db as Knex.Transaction).isTransaction) {
    const r: unknown = await db.raw(sql, params as Knex.RawBinding[]);
    return isSqlite(db) ? (r as Row[]) : (r as { rows: Row[] }).rows;
  }
  const knex = db as Knex;
  const client = knex.client as Knex.Client & { pool: Pool };
  if (!hooked.has(client.pool)) {
    hooked.add(client.pool);
    // tarn calls the destroyer right after this (synchronous) event; node-sqlite3 orders the finalizes before close.
    client.pool.on('destroyRequest', (_id, conn) => {
      for (const st of prepared.get(conn)?.values() ?? []) st.finalize();
      prepared.delete(conn);
    });
  }
  if (knex.listenerCount('query') > 0) knex.emit('query', { sql, bindings: params });
  const conn = (await client.acquireConnection()) as Database;
  try {
    let statements = prepared.get(conn);
    if (!statements) prepared.set(conn, (statements = new Map()));
    let stmt = statements.get(sql);
    if (!stmt) {
      // Waited for: node-sqlite3 never calls back an all() on a statement whose prepare failed.
      stmt = await new Promise<Statement>((resolve, reject) => {
        const st: Statement = conn.prepare(sql, (err: Error | null) => {
          if (!err) return resolve(st);
          st.finalize();
          reject(err);
        });
      });
      statements.set(sql, stmt);
    }
    const ready = stmt;
    return await new Promise<Row[]>((resolve, reject) =>
      ready.all(params, (err: Error | null, rows: Row[]) => {
        if (!err) return resolve(rows);
        statements.delete(sql);
        ready.finalize();
        reject(err);
      }),
    );
  } finally {
    client.releaseConnection(conn);
  }
}

/** The first row, if any. */
export async function selectRow(db: Queryable, sql: string, params: readonly unknown[] = []): Promise<Row | undefined> {
  return (await selectRows(db, sql, params))[0];
}
