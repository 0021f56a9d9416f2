import type { Command } from "commander";
import type { Config } from "../config/load.js";
import type { DatabaseHandle } from "../db/connect.js";
import { migrateToLatest } from "../db/migrate.js";
import { resolveKeyEncryptionKey } from "../keys/kek.js";
import { rotateSigningKeys } from "../keys/rotation.js";
import { ensureSigningKey, loadSigningKeys } from "../keys/signing_keys.js";
import { openDatabaseFor } from "./database.js";
import { action } from "./output.js";

/** Registers `countersign keys rotate|list` on `program`. */
export function registerKeyCommands(program: Command, loadConfig: () => Config): void {
  const keys = program.command("keys").description("signing keys: list them or rotate them");

  /** Runs `run` on the configured database; `what` names the command in a "database in use" error. */
  async function withDatabase<T>(what: string, run: (config: Config, db: DatabaseHandle) => Promise<T>) {
    const config = loadConfig();
    const database = await openDatabaseFor(what, config, 2);
    try {
      await migrateToLatest(database.db);
      return await run(config, database);
    } finally {
      await database.close();
    }
  }

  keys
    .command("list")
    .description("list published and retired signing keys (never private parts)")
    .option("--json", "machine-readable output")
    .action(
      action(async (options: { json?: boolean }) => {
        await withDatabase("list keys", async (_config, { db }) => {
          const rows = await db
            .selectFrom("signing_keys")
            .select(["kid", "alg", "status", "created_at", "activated_at", "deactivated_at", "retired_at"])
            .orderBy("created_at", "desc")
            .execute();
          if (options.json) {
            process.stdout.write(`${JSON.stringify({ keys: rows }, null, 2)}\n`);
            return;
          }
          if (rows.length === 0) {
            process.stdout.write("no signing keys yet (they are created on first start)\n");
            return;
          }
          for (const row of rows) {
            process.stdout.write(
              `${row.status.padEnd(8)} ${row.kid}  ${row.alg}  created ${row.created_at.toISOString()}` +
                `${row.activated_at ? `  signing since ${row.activated_at.toISOString()}` : ""}` +
                `${row.deactivated_at ? `  until ${row.deactivated_at.toISOString()}` : ""}\n`,
            );
          }
        });
      }),
    );

  keys
    .command("rotate")
    .description("promote the announced next key to current; the current one stays published as previous")
    .option("--json", "machine-readable output")
    .action(
      action(async (options: { json?: boolean }) => {
        await withDatabase("rotate keys", async (config, { db }) => {
          const kek = resolveKeyEncryptionKey({ kek: config.kek, dataDir: config.database.dataDir });
          await ensureSigningKey(db, kek, config.tokens.signing_alg);
          // Opening the sealed keys first proves COUNTERSIGN_KEK is the right one before anything changes.
          await loadSigningKeys(db, kek);
          const result = await rotateSigningKeys(db, kek, config.tokens.signing_alg, {
            retireAfterSeconds: config.tokens.max_ttl_seconds + 60,
          });
          if (!result) throw new Error("rotation did not happen");
          if (options.json) {
            process.stdout.write(`${JSON.stringify(result)}\n`);
            return;
          }
          process.stdout.write(
            `rotated: ${result.current} now signs; ${result.next} is announced next` +
              `${result.previous ? `; ${result.previous} stays published until its tokens expire` : ""}\n` +
              `running instances pick this up within keys.refresh_interval_seconds (${config.keys.refresh_interval_seconds} s)\n`,
          );
        });
      }),
    );
}
