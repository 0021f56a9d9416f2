import { readFileSync } from "node:fs";
import path from "node:path";
import { InvalidArgumentError } from "commander";
import { envSchema } from "../config/schema.js";
import { createLogger, flushRepeatedLines, type Logger } from "../ops/logger.js";
import { CliError, EXIT } from "./output.js";

/**
 * What the long-running CLI services (`authz-server`, `mcp-gateway`) share at start-up: a JSON config
 * file read as an object, flags laid over it, the start-up failures mapped to exit codes, and a
 * graceful stop on SIGTERM or SIGINT.
 */

/**
 * Reads `file` as a JSON object (its keys snake_case, as the service's docs list them).
 * @throws {CliError} exit 78 (`EX_CONFIG`) when it cannot be read or is not a JSON object.
 */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path.resolve(file), "utf8");
  } catch {
    throw new CliError(`cannot read ${file}`, EXIT.config);
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error();
    return value as Record<string, unknown>;
  } catch {
    throw new CliError(`${file} is not a JSON object`, EXIT.config);
  }
}

/**
 * The config file `configFile` (or `{}` without one), with every member of `fromFlags` that is set
 * laid over it: flags win. `fromFlags` uses the file's (snake_case) keys.
 */
export function configWithFlags(
  configFile: string | undefined,
  fromFlags: Readonly<Record<string, unknown>>,
): Record<string, unknown> {
  const file = configFile === undefined ? {} : readConfigFile(configFile);
  for (const [key, value] of Object.entries(fromFlags)) if (value !== undefined) file[key] = value;
  return file;
}

/** Commander's parser of a `--port` value: an integer from 0 to 65535. */
export function parsePort(value: string): number {
  const port = /^[0-9]{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(port) || port > 65_535)
    throw new InvalidArgumentError("must be a port number (0-65535)");
  return port;
}

/**
 * Starts a server: a `TypeError` (a bad option found only at start) exits 78 (`EX_CONFIG`), anything
 * else (e.g. the port is taken) 69 (`EX_UNAVAILABLE`). `cleanup` runs first on any failure.
 */
export async function startOrExit<T>(start: () => Promise<T>, cleanup: () => void = () => {}): Promise<T> {
  try {
    return await start();
  } catch (error) {
    cleanup();
    if (error instanceof TypeError) throw new CliError(error.message, EXIT.config);
    throw new CliError(`cannot listen: ${(error as Error).message}`, EXIT.unavailable);
  }
}

/**
 * On the first SIGTERM or SIGINT: logs `<name> stopping` with the signal, runs `stop` (finish and
 * close), writes the counts of repeated log lines left out in windows still open, then exits 0.
 */
export function stopOnSignals(logger: Logger, name: string, stop: () => Promise<void>): void {
  const shutdown = (signal: string) => {
    logger.info({ signal }, `${name} stopping`);
    stop().then(() => {
      flushRepeatedLines(logger);
      process.exit(0);
    });
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

/**
 * The logger of a long-running CLI service, from `LOG_LEVEL` and `LOG_MAX_REPEATS` (the STS's own
 * variables, same defaults).
 * @throws {CliError} exit 78 (`EX_CONFIG`) when either is invalid.
 */
export function loggerFromEnvironment(env: NodeJS.ProcessEnv): Logger {
  const parsed = envSchema.pick({ LOG_LEVEL: true, LOG_MAX_REPEATS: true }).safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CliError(
      `invalid ${issue?.path.join(".") ?? "environment"}: ${issue?.message ?? "invalid"}`,
      EXIT.config,
    );
  }
  return createLogger(parsed.data.LOG_LEVEL, undefined, { maxRepeats: parsed.data.LOG_MAX_REPEATS });
}
