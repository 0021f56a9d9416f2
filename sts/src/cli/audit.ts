import { once } from "node:events";
import { type Command, InvalidArgumentError } from "commander";
import { exportAuditEvents } from "../audit/export.js";
import type { Config } from "../config/load.js";
import { openDatabase } from "../db/connect.js";
import { migrateToLatest } from "../db/migrate.js";
import { safeJsonText } from "../ops/safe_text.js";
import { action } from "./output.js";

/** An ISO 8601 date (`2026-11-28`) or date-time with a zone (`2026-11-28T10:00:00Z`, `…+01:00`). */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

/** Parses `--since` / `--until`. */
export function parseIsoTime(value: string): Date {
  const time = ISO_TIME.test(value) ? new Date(value) : new Date(Number.NaN);
  if (Number.isNaN(time.getTime())) {
    throw new InvalidArgumentError(
      "must be an ISO 8601 date or date-time with a zone, e.g. 2026-11-28T00:00:00Z",
    );
  }
  return time;
}

/** Writes one line, waiting when stdout's buffer is full (so memory stays bounded on a slow pipe). */
async function writeLine(line: string): Promise<void> {
  if (!process.stdout.write(`${line}\n`)) await once(process.stdout, "drain");
}

/** Registers `countersign audit export` on `program`. */
export function registerAuditCommands(program: Command, loadConfig: () => Config): void {
  const audit = program.command("audit").description("the audit trail");
  audit
    .command("export")
    .description(
      "print audit events as JSON lines, oldest first, read from the database a page at a time " +
        "(with the embedded database, stop the STS first)",
    )
    .requiredOption("--since <time>", "events at or after this ISO 8601 time", parseIsoTime)
    .option("--until <time>", "events before this ISO 8601 time (default: now)", parseIsoTime)
    .action(
      action(async (options: { since: Date; until?: Date }) => {
        const config = loadConfig();
        const database = await openDatabase({
          url: config.database.url,
          dataDir: config.database.dataDir,
          poolSize: 1,
        });
        try {
          await migrateToLatest(database.db);
          const events = exportAuditEvents(database.db, {
            since: options.since,
            ...(options.until ? { until: options.until } : {}),
          });
          for await (const event of events) await writeLine(safeJsonText(JSON.stringify(event)));
        } finally {
          await database.close();
        }
      }),
    );
}
