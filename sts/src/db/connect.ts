import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
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
  /**
   * A PGlite data directory dump (`pglite.dumpDataDir()`) to start an in-memory database from, instead
   * of running initdb: tests start from a migrated template in a fraction of the time.
   */
  pgliteTemplate?: Blob;
  /** Connection timeout in milliseconds for pg. Default 5000. */
  connectTimeoutMs?: number;
}

/** Thrown when another live process holds the embedded database. */
export class DatabaseInUseError extends Error {
  static readonly code = "ERR_DATABASE_IN_USE";
  readonly code = DatabaseInUseError.code;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * PGlite is single-process: two processes on one data directory would corrupt it. A lock file holding
 * the owner's pid guards it; a lock left by a dead process is taken over.
 * @returns a function releasing the lock.
 */
function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, "pglite.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: "wx", mode: 0o600 });
      return () => rmSync(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = Number.parseInt(readFileSync(file, "utf8"), 10);
      if (Number.isInteger(owner) && owner !== process.pid && isAlive(owner)) {
        throw new DatabaseInUseError(
          `the embedded database in ${dataDir} is in use by process ${owner}: stop it first, or use DATABASE_URL`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new DatabaseInUseError(`cannot lock the embedded database in ${dataDir}`);
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
    // Nor may a checked-out one (Kysely holds clients across awaits, e.g. in a transaction): without a
    // listener its "Connection terminated unexpectedly" is an uncaught exception. The query in flight
    // still fails (503), and the pool discards the broken client on release.
    pool.on("connect", (client) => {
      client.on("error", () => {});
    });
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
  let releaseLock = () => {};
  if (!memory) {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    releaseLock = lockDataDir(options.dataDir);
  }
  let pglite: PGlite;
  try {
    pglite = await PGlite.create({
      ...(memory ? {} : { dataDir: `${options.dataDir}/pgdata` }),
      ...(options.pgliteTemplate ? { loadDataDir: options.pgliteTemplate } : {}),
    });
  } catch (error) {
    releaseLock();
    throw error;
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  return {
    db,
    engine: "pglite",
    pool: undefined,
    pglite,
    close: async () => {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
      releaseLock();
    },
  };
}
