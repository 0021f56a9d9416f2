import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Kysely, sql } from "kysely";
import { FileMigrationProvider, type MigrationResult, Migrator } from "kysely/migration";
import type { Database } from "./schema.js";

/**
 * The `migrations/` folder beside this code: the TypeScript sources under tsx (`npm run dev`, the CLI,
 * the tests), their compiled copies in `dist/migrations/` when running from `dist/` (`npm start`).
 */
export const migrationsFolder = fileURLToPath(new URL("../../../migrations", import.meta.url));

/** An arbitrary, fixed key for the migration advisory lock ("countersign" in ASCII, truncated). */
const MIGRATION_LOCK_KEY = 0x636f756e;

/**
 * Applies every pending migration. Idempotent. Safe when several instances start at once: the whole run
 * holds a session-level Postgres advisory lock on one connection, so the second instance waits and then
 * finds nothing to do.
 * @returns the migrations applied by this call (empty when already up to date).
 * @throws when a migration fails; nothing after it is applied.
 */
export async function migrateToLatest(db: Kysely<Database>): Promise<MigrationResult[]> {
  return db.connection().execute(async (connection) => {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(connection);
    try {
      const migrator = new Migrator({
        db: connection,
        provider: new FileMigrationProvider({ fs, path, migrationFolder: migrationsFolder }),
      });
      const { error, results } = await migrator.migrateToLatest();
      if (error) {
        const failed = results?.find((result) => result.status === "Error")?.migrationName ?? "unknown";
        throw new Error(`migration ${failed} failed`, { cause: error });
      }
      return results ?? [];
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(connection);
    }
  });
}
