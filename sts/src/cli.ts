import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { registerApprovalCommands } from "./cli/approvals.js";
import { registerAuditCommands } from "./cli/audit.js";
import { registerClientCommands } from "./cli/clients.js";
import { ConfigError, loadConfig } from "./config/load.js";
import { openDatabase } from "./db/connect.js";
import { migrateToLatest } from "./db/migrate.js";
import { registerKeyCommands } from "./keys/cli_commands.js";
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

/** Options of `countersign dev-token`. */
interface DevTokenOptions {
  sub: string;
  usage: "approver" | "subject" | "actor";
  ttl: number;
  json?: boolean;
}

/** Longest dev-token lifetime, in seconds (one day). */
const MAX_DEV_TOKEN_TTL_SECONDS = 86_400;

function parseTtl(value: string): number {
  const ttl = /^[0-9]{1,6}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_DEV_TOKEN_TTL_SECONDS) {
    throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_DEV_TOKEN_TTL_SECONDS} (seconds)`);
  }
  return ttl;
}

function parseSub(value: string): string {
  if (value.length === 0 || value.length > 255) throw new InvalidArgumentError("must be 1 to 255 characters");
  return value;
}

/**
 * Prints a token from the local development issuer (CONTRACT §1). Refused unless `dev_mode` is true:
 * a production STS never trusts these tokens, and the command says so instead of printing one.
 */
async function devToken(options: DevTokenOptions): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.dev_mode) {
    process.stderr.write(
      `countersign: dev-token is refused: dev_mode is false in ${config.source}; ` +
        "this STS does not trust development tokens\n",
    );
    process.exit(1);
  }
  const { loadDevIssuer } = await import("./identity/dev_issuer.js");
  const devIssuer = await loadDevIssuer({ issuer: config.issuer, dataDir: config.database.dataDir });
  const token = await devIssuer.mint({ sub: options.sub, usage: options.usage, ttlSeconds: options.ttl });
  if (options.json) {
    const expiresAt = new Date(Date.now() + options.ttl * 1000).toISOString();
    process.stdout.write(
      `${JSON.stringify({
        token,
        token_type: "Bearer",
        issuer: devIssuer.issuer,
        audience: devIssuer.audience,
        sub: options.sub,
        usage: options.usage,
        expires_in: options.ttl,
        expires_at: expiresAt,
      })}\n`,
    );
  } else {
    process.stdout.write(`${token}\n`);
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

/** Builds the `countersign` command line. Exported for tests. */
export function buildCli(): Command {
  const program = new Command("countersign")
    .description("Countersign: an RFC 8693 security token service for AI agents")
    .showHelpAfterError();
  program.command("serve").description("run the STS (migrations applied on start)").action(serve);
  program.command("migrate").description("apply database migrations and exit").action(migrate);
  registerKeyCommands(program, loadConfigOrExit);
  registerApprovalCommands(program);
  registerClientCommands(program);
  registerAuditCommands(program, loadConfigOrExit);
  program
    .command("dev-token")
    .description("print a token from the local development issuer (dev_mode only)")
    .requiredOption("--sub <sub>", "the token's subject (`sub`)", parseSub)
    .addOption(
      new Option("--usage <usage>", "what the token is for")
        .choices(["approver", "subject", "actor"])
        .makeOptionMandatory(),
    )
    .option("--ttl <seconds>", "lifetime in seconds", parseTtl, 3600)
    .option("--json", "print JSON with the token and its details")
    .action(devToken);
  program
    .command("policy")
    .description("Cedar policies")
    .command("check")
    .description("validate Cedar policy files against the schema (exit 0 when valid, 1 otherwise)")
    .argument("<files...>", "policy files, checked together (ids must be unique across them)")
    .action(policyCheck);
  return program;
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, "/"));
if (isMain || process.env.COUNTERSIGN_CLI === "1") {
  buildCli()
    .parseAsync(process.argv)
    .catch((error: unknown) => {
      if (error instanceof CommanderError) process.exit(error.exitCode);
      process.stderr.write(
        `countersign: ${safeText(error instanceof Error ? error.message : String(error))}\n`,
      );
      process.exit(1);
    });
}
