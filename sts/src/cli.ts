import { Command, CommanderError } from "commander";
import { ConfigError, loadConfig } from "./config/load.js";
import { openDatabase } from "./db/connect.js";
import { migrateToLatest } from "./db/migrate.js";

/** Prints a config error naming every bad key and exits non-zero (before anything listens). */
function loadConfigOrExit() {
  try {
    return loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`countersign: ${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
}

async function serve(): Promise<void> {
  const config = loadConfigOrExit();
  const { createApp } = await import("./app.js");
  const { listen } = await import("./server.js");
  const app = await createApp(config);
  const running = await listen(app, config.http.host, config.http.port);
  app.logger.info(
    {
      url: running.url,
      issuer: config.issuer,
      database: app.database.engine,
      config: config.source,
      dev_mode: config.dev_mode,
    },
    "countersign listening",
  );
  const shutdown = (signal: string) => {
    app.logger.info({ signal }, "shutting down: finishing in-flight requests");
    running.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        app.logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

async function migrate(): Promise<void> {
  const config = loadConfigOrExit();
  const database = await openDatabase({
    url: config.database.url,
    dataDir: config.database.dataDir,
    poolSize: 1,
  });
  try {
    const applied = await migrateToLatest(database.db);
    const names = applied.map((result) => result.migrationName);
    process.stdout.write(
      names.length === 0 ? "migrations: up to date\n" : `migrations applied: ${names.join(", ")}\n`,
    );
  } finally {
    await database.close();
  }
}

/** Builds the `countersign` command line. Exported for tests. */
export function buildCli(): Command {
  const program = new Command("countersign")
    .description("Countersign: an RFC 8693 security token service for AI agents")
    .showHelpAfterError();
  program.command("serve").description("run the STS (migrations applied on start)").action(serve);
  program.command("migrate").description("apply database migrations and exit").action(migrate);
  return program;
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, "/"));
if (isMain || process.env.COUNTERSIGN_CLI === "1") {
  buildCli()
    .parseAsync(process.argv)
    .catch((error: unknown) => {
      if (error instanceof CommanderError) process.exit(error.exitCode);
      process.stderr.write(`countersign: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    });
}
