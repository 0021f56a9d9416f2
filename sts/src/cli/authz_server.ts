/**
 * `countersign authz-server`: runs the verifier's forward-auth service for gateways that delegate
 * authorization to an HTTP service — Envoy `ext_authz` (HTTP), nginx `auth_request`, Caddy
 * `forward_auth`, Traefik `forwardAuth`, HAProxy. Settings come from a JSON config file (`--config`)
 * and flags, flags winning; every decision is logged as one JSON line (never a token or a query string).
 */
import type { Command } from "commander";
import {
  createVerifier,
  type ForwardAuthConfig,
  ForwardAuthConfigError,
  forwardAuthOptionsFromConfig,
  startForwardAuthServer,
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

/** Flags of `countersign authz-server`. */
interface AuthzServerFlags {
  config?: string;
  issuer?: string;
  audience?: string;
  port?: number;
  host?: string;
  requiredScope?: string[];
  revocationUrl?: string;
  trustForwardedHeaders?: boolean;
  publicOrigin?: string;
  pathPrefix?: string;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The service's options from the config file and the flags (flags win); exported for tests. */
export function authzServerOptions(flags: AuthzServerFlags): ForwardAuthConfig {
  const file = configWithFlags(flags.config, {
    issuer: flags.issuer,
    audience: flags.audience,
    port: flags.port,
    host: flags.host,
    required_scopes: flags.requiredScope,
    revocation_url: flags.revocationUrl,
    trust_forwarded_headers: flags.trustForwardedHeaders,
    public_origin: flags.publicOrigin,
    path_prefix: flags.pathPrefix,
  });
  try {
    return forwardAuthOptionsFromConfig(file);
  } catch (error) {
    if (error instanceof ForwardAuthConfigError) throw new CliError(error.message, EXIT.config);
    throw error;
  }
}

async function run(flags: AuthzServerFlags): Promise<void> {
  const options = authzServerOptions(flags);
  const logger = loggerFromEnvironment(process.env);
  const verifier = createVerifier({
    ...options.verifier,
    onBackgroundError: (error, source) =>
      logger.warn({ source, err: error.message }, "background refresh failed"),
  });
  // The first JWKS fetch and revocation poll are attempted before the first request is served.
  await verifier.ready();
  const running = await startOrExit(
    () =>
      startForwardAuthServer(verifier, {
        port: 9191,
        ...options.server,
        // An allowed request's line is bounded per agent by its rate limit; refusals (anyone can cause
        // them) are bounded per kind, grouped by reason.
        onDecision: (decision) =>
          decision.outcome === "allow"
            ? logger.debug({ [REPEAT_EXEMPT]: true, event: "authz.decision", authz: decision }, "authz allow")
            : logger.info(
                { event: "authz.decision", reason: decision.reason ?? null, authz: decision },
                "authz refuse",
              ),
      }),
    () => verifier.close(),
  );
  const address = running.server.address();
  const host = typeof address === "object" && address !== null ? address.address : "127.0.0.1";
  logger.info(
    {
      url: `http://${host.includes(":") ? `[${host}]` : host}:${running.port}`,
      issuer: options.verifier.issuer,
      audience: options.verifier.audience,
      trust_forwarded_headers: options.server.trustForwardedHeaders ?? false,
      public_origin: options.server.publicOrigin,
      routes: options.server.routes?.length ?? 0,
      revocation: options.verifier.revocation ? options.verifier.revocation.url : null,
    },
    "authz server listening",
  );
  stopOnSignals(logger, "authz server", () => {
    verifier.close();
    running.server.closeIdleConnections();
    return new Promise((resolve) => running.server.close(() => resolve()));
  });
}

/** Registers `countersign authz-server`. */
export function registerAuthzServerCommand(program: Command): void {
  program
    .command("authz-server")
    .description(
      "authorization service for gateways: Envoy ext_authz, nginx auth_request, Caddy forward_auth, Traefik forwardAuth",
    )
    .option(
      "--config <file>",
      "JSON config file, e.g. per-route scopes (snake_case; see docs/forward-auth.md)",
    )
    .option("--issuer <url>", "the Countersign STS (token iss; keys from <issuer>/jwks)")
    .option("--audience <resource>", "this gateway's resource id (the tokens' aud)")
    .option("--port <port>", "port to listen on (default 9191)", parsePort)
    .option("--host <address>", "address to bind (default 127.0.0.1: only the proxy should reach it)")
    .option("--required-scope <scope>", "a scope every request needs (repeatable)", collect)
    .option("--revocation-url <url>", "the STS's revocation feed, e.g. http://127.0.0.1:8080/revocations")
    .option(
      "--trust-forwarded-headers",
      "read the original method and URI from X-Original-*/X-Forwarded-* (nginx, Caddy, Traefik); off for Envoy",
    )
    .option("--public-origin <origin>", "the origin clients address, for DPoP htu (recommended)")
    .option("--path-prefix <path>", "Envoy's http_service path_prefix, stripped from the request path")
    .action(action(run));
}
