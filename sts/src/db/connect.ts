import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PGliteDialect, PostgresDialect } from "kysely";
import pg from "pg";
import type { Database } from "./schema.js";

/** Which engine serves the database: a real Postgres through `pg`, or the embedded PGlite. */
export type DatabaseEngine = "postgres" | "pglite";

/** An open database: the Kysely handle, which engine it runs on, and how to close it. */
export interface DatabaseHandle {
  readonly db: Kysely<Database>;
  readonly engine: DatabaseEngine;
  /** The pg pool (real Postgres only); LISTEN/NOTIFY uses it. */
  readonly pool: pg.Pool | undefined;
  /** The PGlite instance (embedded only). */
  readonly pglite: PGlite | undefined;
  close(): Promise<void>;
}

/** Options for {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /** `postgres://…`; when absent the embedded PGlite is used. */
  url: string | undefined;
  /** PGlite data directory (created if missing). `memory://` keeps it in memory (tests). */
  dataDir: string;
  /** Max connections in the pg pool. Default 10. */
  poolSize?: number;
  /** Connection timeout in milliseconds for pg. Default 5000. */
  connectTimeoutMs?: number;
}

/**
 * Opens the database: Kysely over `pg` when `url` is set, over PGlite otherwise. Same queries either way.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<DatabaseHandle> {
  if (options.url) {
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      idleTimeoutMillis: 30_000,
      // Queries never wait forever on a stuck server: fail closed instead.
      query_timeout: 10_000,
      application_name: "countersign",
    });
    // An idle client losing its server must not crash the process; the next query reconnects.
    pool.on("error", () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return {
      db,
      engine: "postgres",
      pool,
      pglite: undefined,
      close: () => db.destroy(),
    };
  }
  const memory = options.dataDir.startsWith("memory://");
  if (!memory) mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const pglite = await PGlite.create(memory ? undefined : `${options.dataDir}/pgdata`);
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  return {
    db,
    engine: "pglite",
    pool: undefined,
    pglite,
    close: async () => {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}
