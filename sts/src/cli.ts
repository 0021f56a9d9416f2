import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { registerApprovalCommands } from "./cli/approvals.js";
import { registerAuditCommands } from "./cli/audit.js";
import { registerAuthzServerCommand } from "./cli/authz_server.js";
import { registerClientCommands } from "./cli/clients.js";
import { openDatabaseFor } from "./cli/database.js";
import { registerDevTokenCommand } from "./cli/dev_token.js";
import { registerKeyCommands } from "./cli/keys.js";
import { registerMcpGatewayCommand } from "./cli/mcp_gateway.js";
import { action, CliError } from "./cli/output.js";
import { ConfigError, loadConfig } from "./config/load.js";
import { migrateToLatest } from "./db/migrate.js";
import { packagePath } from "./ops/package_root.js";
import { safeText } from "./ops/safe_text.js";

/** Prints a config error naming every bad key and exits non-zero (before anything listens). */
function loadConfigOrExit() {
  try {
    return loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`countersign: ${safeText(error.message)}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
}

/** How long in-flight requests may take to finish after SIGTERM or SIGINT, in milliseconds. */
const SHUTDOWN_GRACE_MS = 10_000;

/**
 * Runs the STS until SIGTERM or SIGINT, then stops gracefully (see {@link listen}'s `stop`) and exits 0.
 * `npm start` runs this compiled (`node dist/sts/src/cli.js serve`) as npm's direct child, so the signal a
 * container runtime, systemd or a process manager sends to npm reaches this process.
 */
async function serve(): Promise<void> {
  const config = loadConfigOrExit();
  const { createApp } = await import("./app.js");
  const { listen } = await import("./server.js");
  const app = await createApp(config);
  // A port that cannot be bound ends the start: close the app (database, background loops) first.
  const running = await listen(app, config.http.host, config.http.port).catch(async (error: unknown) => {
    await app.close().catch(() => {});
    throw error;
  });
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
    running.stop(SHUTDOWN_GRACE_MS).then(
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
  const database = await openDatabaseFor("apply migrations", config, 1);
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

/**
 * Validates Cedar policy files, together, against the shipped schema (as the STS does at start):
 * prints `ok` and exits 0, or prints each problem as `file:line:column: message` and exits 1.
 */
async function policyCheck(files: string[]): Promise<void> {
  const path = await import("node:path");
  const { checkPolicyFiles, formatIssue } = await import("./policy/load.js");
  const result = checkPolicyFiles(files.map((file) => path.resolve(file)));
  if (result.ok) {
    process.stdout.write(
      `ok (${result.policySet.policies.size} policies: ${[...result.policySet.policies.keys()].join(", ")})\n`,
    );
    return;
  }
  for (const issue of result.issues) process.stderr.write(`${formatIssue(issue)}\n`);
  process.exitCode = 1;
}

/** The `version` of the package's `package.json`. */
function packageVersion(): string {
  const { version } = JSON.parse(readFileSync(packagePath("package.json"), "utf8")) as { version: string };
  return version;
}

/** The environment every command reads, the same wherever it runs (shown after `--help`). */
const ENVIRONMENT_HELP = `
Environment (the same for every command, wherever it runs):
  COUNTERSIGN_URL       the running STS, for approvals and dev-token (default: http://HOST:PORT)
  HOST, PORT            where serve listens (default 127.0.0.1, 8080)
  COUNTERSIGN_DATA_DIR  embedded database and development keys (default: ./.countersign, relative
                        to the current directory: set it to an absolute path to run from anywhere)
  COUNTERSIGN_CONFIG    the JSON config file (default: the development default, dev_mode true)
  DATABASE_URL          postgres://…: use that Postgres instead of the embedded database
  COUNTERSIGN_TOKEN     an approver token for approvals (dev mode: one is fetched from the STS)`;

/** Builds the `countersign` command line. Exported for tests. */
export function buildCli(): Command {
  const program = new Command("countersign")
    .description("Countersign: an RFC 8693 security token service for AI agents")
    .version(packageVersion(), "-V, --version", "print the version")
    .showHelpAfterError()
    .addHelpText("after", ENVIRONMENT_HELP);
  program.command("serve").description("run the STS (migrations applied on start)").action(serve);
  program.command("migrate").description("apply database migrations and exit").action(action(migrate));
  registerKeyCommands(program, loadConfigOrExit);
  registerApprovalCommands(program);
  registerClientCommands(program);
  registerMcpGatewayCommand(program);
  registerAuthzServerCommand(program);
  registerDevTokenCommand(program, loadConfigOrExit);
  registerAuditCommands(program, loadConfigOrExit);
  program
    .command("policy")
    .description("Cedar policies")
    .command("check")
    .description("validate Cedar policy files against the schema (exit 0 when valid, 1 otherwise)")
    .argument("<files...>", "policy files, checked together (ids must be unique across them)")
    .action(policyCheck);
  return program;
}

/** True when this module is the program node runs (`node dist/sts/src/cli.js`, `tsx sts/src/cli.ts`). */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntryPoint() || process.env.COUNTERSIGN_CLI === "1") {
  buildCli()
    .parseAsync(process.argv)
    .catch((error: unknown) => {
      if (error instanceof CommanderError) process.exit(error.exitCode);
      if (error instanceof CliError) {
        process.stderr.write(`countersign: ${safeText(error.message)}\n`);
        process.exit(error.exitCode);
      }
      process.stderr.write(
        `countersign: ${safeText(error instanceof Error ? error.message : String(error))}\n`,
      );
      process.exit(1);
    });
}
