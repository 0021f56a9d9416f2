/**
 * `countersign mcp-gateway`: runs the MCP gateway of the verifier package in front of a Streamable
 * HTTP MCP server (docs/mcp.md). Settings come from a JSON config file (`--config`) and flags, flags
 * winning; every refusal and forwarded request is logged as one JSON line (never a token).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import {
  McpGatewayConfigError,
  type McpGatewayServerOptions,
  mcpGatewayOptionsFromConfig,
  startMcpGateway,
} from "../../../gateway-verifier/src/index.js";
import { createLogger } from "../ops/logger.js";
import { action, CliError, EXIT } from "./output.js";

/** Flags of `countersign mcp-gateway`. */
interface McpGatewayFlags {
  config?: string;
  upstream?: string;
  resource?: string;
  issuer?: string;
  port?: number;
  host?: string;
}

function parsePort(value: string): number {
  const port = /^[0-9]{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(port) || port > 65_535)
    throw new InvalidArgumentError("must be a port number (0-65535)");
  return port;
}

function readConfigFile(file: string): Record<string, unknown> {
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

/** The gateway's options from the config file and the flags (flags win); exported for tests. */
export function mcpGatewayOptions(
  flags: McpGatewayFlags,
  env: Readonly<Record<string, string | undefined>>,
): McpGatewayServerOptions {
  const file = flags.config === undefined ? {} : readConfigFile(flags.config);
  for (const key of ["upstream", "resource", "issuer", "port", "host"] as const) {
    if (flags[key] !== undefined) file[key] = flags[key];
  }
  try {
    return mcpGatewayOptionsFromConfig(file, env);
  } catch (error) {
    if (error instanceof McpGatewayConfigError) throw new CliError(error.message, EXIT.config);
    throw error;
  }
}

async function run(flags: McpGatewayFlags): Promise<void> {
  const options = mcpGatewayOptions(flags, process.env);
  const logger = createLogger(process.env.LOG_LEVEL ?? "info");
  let running: Awaited<ReturnType<typeof startMcpGateway>>;
  try {
    running = await startMcpGateway({
      port: 8443,
      ...options,
      onDecision: (decision) => logger.info({ mcp: decision }, `mcp ${decision.outcome}`),
      verifier: {
        ...options.verifier,
        onBackgroundError: (error, source) =>
          logger.warn({ source, err: error.message }, "background refresh failed"),
      },
    });
  } catch (error) {
    if (error instanceof TypeError) throw new CliError(error.message, EXIT.config);
    throw new CliError(`cannot listen: ${(error as Error).message}`, EXIT.unavailable);
  }
  logger.info(
    {
      url: running.url,
      resource: running.gateway.resource,
      resource_metadata: running.gateway.resourceMetadataUrl,
      upstream: options.upstream,
      issuer: options.issuer,
    },
    "mcp gateway listening",
  );
  const shutdown = (signal: string) => {
    logger.info({ signal }, "mcp gateway stopping");
    running.close().then(() => process.exit(0));
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

/** Registers `countersign mcp-gateway`. */
export function registerMcpGatewayCommand(program: Command): void {
  program
    .command("mcp-gateway")
    .description(
      "put Countersign in front of a Streamable HTTP MCP server (RFC 9728 metadata, per-tool checks)",
    )
    .option("--config <file>", "JSON config file (snake_case; see docs/mcp.md)")
    .option("--upstream <url>", "the MCP server behind the gateway, e.g. http://127.0.0.1:9000/mcp")
    .option(
      "--resource <uri>",
      "this MCP server's resource identifier as clients address it (the tokens' aud)",
    )
    .option("--issuer <url>", "the Countersign STS (token iss)")
    .option("--port <port>", "port to listen on (default 8443)", parsePort)
    .option("--host <address>", "address to bind (default 127.0.0.1)")
    .action(action(run));
}
