import type { Config } from "../config/load.js";
import { type DatabaseHandle, DatabaseInUseError, openDatabase } from "../db/connect.js";
import { CliError, EXIT } from "./output.js";

/**
 * Opens the configured database for a one-shot command (`migrate`, `keys list|rotate`). The embedded
 * database (PGlite) opens in one process only: while an STS holds it, the command fails at once with a
 * {@link CliError} (exit 75, EX_TEMPFAIL) saying to stop the STS or to use Postgres, never waits, and
 * never touches the database files.
 * @param what - what the command does, for the message (`rotate keys`).
 */
export async function openDatabaseFor(
  what: string,
  config: Config,
  poolSize: number,
): Promise<DatabaseHandle> {
  try {
    return await openDatabase({ url: config.database.url, dataDir: config.database.dataDir, poolSize });
  } catch (error) {
    if (!(error instanceof DatabaseInUseError)) throw error;
    throw new CliError(
      `cannot ${what}: ${error.message} (the embedded database opens in one process only; with Postgres, ` +
        "DATABASE_URL, this works while the STS runs)",
      EXIT.busy,
    );
  }
}
