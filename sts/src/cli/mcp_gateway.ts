/**
 * `countersign mcp-gateway`: runs the MCP gateway of the verifier package in front of a Streamable
 * HTTP MCP server (docs/mcp.md). Settings come from a JSON config file (`--config`) and flags, flags
 * winning; every refusal and forwarded request is logged as one JSON line (never a token).
 */
import type { Command } from "commander";
import {
  McpGatewayConfigError,
  type McpGatewayServerOptions,
  mcpGatewayOptionsFromConfig,
  startMcpGateway,
} from "../../../gateway-verifier/src/index.js";
import { REPEAT_EXEMPT } from "../ops/logger.js";
import { action, CliError, EXIT } from "./output.js";
import {
  configWithFlags,
  loggerFromEnvironment,
  parsePort,
  startOrExit,
  stopOnSignals,
} from "./serve_from_cli.js";

/** Flags of `countersign mcp-gateway`. */
interface McpGatewayFlags {
  config?: string;
  upstream?: string;
  resource?: string;
  issuer?: string;
  port?: number;
  host?: string;
}

/** The gateway's options from the config file and the flags (flags win); exported for tests. */
export function mcpGatewayOptions(
  flags: McpGatewayFlags,
  env: Readonly<Record<string, string | undefined>>,
): McpGatewayServerOptions {
  const file = configWithFlags(flags.config, {
    upstream: flags.upstream,
    resource: flags.resource,
    issuer: flags.issuer,
    port: flags.port,
    host: flags.host,
  });
  try {
    return mcpGatewayOptionsFromConfig(file, env);
  } catch (error) {
    if (error instanceof McpGatewayConfigError) throw new CliError(error.message, EXIT.config);
    throw error;
  }
}

async function run(flags: McpGatewayFlags): Promise<void> {
  const options = mcpGatewayOptions(flags, process.env);
  const logger = loggerFromEnvironment(process.env);
  const running = await startOrExit(() =>
    startMcpGateway({
      port: 8443,
      ...options,
      // A forwarded call's line is its record, bounded per agent by its rate limit and open-exchange
      // cap; refusals (anyone can cause them) are bounded per kind, grouped by reason.
      onDecision: (decision) =>
        decision.outcome === "forwarded"
          ? logger.info({ [REPEAT_EXEMPT]: true, event: "mcp.decision", mcp: decision }, "mcp forwarded")
          : logger.info(
              { event: "mcp.decision", reason: decision.reason ?? null, mcp: decision },
              "mcp refused",
            ),
      verifier: {
        ...options.verifier,
        onBackgroundError: (error, source) =>
          logger.warn({ source, err: error.message }, "background refresh failed"),
      },
    }),
  );
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
  stopOnSignals(logger, "mcp gateway", () => running.close());
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
