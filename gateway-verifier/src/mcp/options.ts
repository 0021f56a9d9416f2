import type { DpopOptions, JwsAlgorithm, VerifierOptions } from "../types.js";
import type { CallTokenStore } from "./call_tokens.js";
import type { McpPolicy } from "./policy.js";
import type { McpReason } from "./reasons.js";
import type { SessionBindingOptions } from "./sessions.js";

/** The verified caller of one request, as handed to {@link McpGatewayOptions.upstreamHeaders}. */
export interface McpCaller {
  /** The agent (`client_id`). */
  clientId: string;
  /** The subject the agent acts for (`sub`). */
  subject: string;
  /** The approval the token was minted under (`approval_id`). */
  approvalId: string;
  /** The token's scopes. */
  scopes: readonly string[];
  /** The verified claims (read-only, shared between requests presenting the same token). */
  claims: Readonly<Record<string, unknown>>;
}

/** Headers for the upstream MCP server: fixed, or computed per request (e.g. a token the gateway mints for itself). */
export type UpstreamHeaders =
  | Readonly<Record<string, string>>
  | ((caller: McpCaller) => Readonly<Record<string, string>> | Promise<Readonly<Record<string, string>>>);

/** One decision of the gateway, for audit logs. Holds no token; names come from the (verified) request. */
export interface McpDecision {
  /** `forwarded` (sent upstream) or `refused` (answered by the gateway). */
  outcome: "forwarded" | "refused";
  /** The HTTP status answered (for `forwarded`: the upstream's). */
  status: number;
  /** The reason code of a refusal: an MCP gateway reason or a verifier reason. */
  reason?: McpReason | string;
  /** HTTP method of the request. */
  httpMethod: string;
  /** JSON-RPC methods of the body (POST). */
  methods?: readonly string[];
  /** Tools, resources and prompts the body acts on, as `tool:<name>`, `resource:<uri>`, `prompt:<name>`. */
  targets?: readonly string[];
  clientId?: string;
  subject?: string;
  approvalId?: string;
}

/**
 * Options of {@link createMcpGateway}. `upstream`, `resource` and `issuer` are required. The config
 * file of `countersign mcp-gateway` holds the same settings in snake_case.
 */
export interface McpGatewayOptions {
  /** The Streamable HTTP MCP server behind the gateway, e.g. `http://127.0.0.1:9000/mcp`. */
  upstream: string;
  /**
   * This MCP server's resource identifier as clients address it, e.g. `https://tools.example.test/mcp`.
   * Canonicalised (lower-case scheme and host, no trailing slash); a fragment or query is refused.
   * It is the tokens' required `aud`, the metadata's `resource`, and its path is the MCP endpoint.
   */
  resource: string;
  /** The Countersign STS (token `iss`); listed in `authorization_servers`. */
  issuer: string;
  /** `authorization_servers` of the metadata. Default `[issuer]`. */
  authorizationServers?: readonly string[];
  /** Scopes per method, tool, resource and prompt; approvals' tool lists apply on top. Default: none required. */
  policy?: McpPolicy;
  /**
   * `scopes_supported` of the metadata and `scope` of 401 challenges: the minimal scopes for basic use
   * (MCP "Scope Selection Strategy"). Default `policy.default_scopes`. Omitted when empty.
   */
  scopesSupported?: readonly string[];
  /** `resource_name` of the metadata (RFC 9728 §2). */
  resourceName?: string;
  /** `resource_documentation` of the metadata (RFC 9728 §2). */
  resourceDocumentation?: string;
  /** DPoP proof options, plus `required`: refuse tokens without `cnf.jkt` (`dpop_bound_access_tokens_required`). */
  dpop?: DpopOptions & { required?: boolean };
  /**
   * Further verifier options (`jwksUri`, `jwks`, `revocation`, `rateLimit`, `maxTokenAgeSeconds`, …).
   * `issuer`, `audience` and `dpop` come from the options above.
   */
  verifier?: Omit<VerifierOptions, "issuer" | "audience" | "dpop" | "realm">;
  /**
   * Origin clients address, for DPoP `htu` (RFC 9449 §4.3). Default: the resource's origin. The
   * request's path and query are appended.
   */
  publicOrigin?: string;
  /**
   * `Origin` header values accepted (MCP Streamable HTTP: servers MUST validate `Origin` against DNS
   * rebinding). Requests without `Origin` are accepted. Default: the resource's origin only.
   */
  allowedOrigins?: readonly string[];
  /** Largest request body, in bytes; larger → 413 `body_too_large`. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Time to receive the whole request body, in milliseconds; else 408 `body_timeout`. Default 30,000. */
  bodyTimeoutMs?: number;
  /** Deepest JSON nesting accepted. Default 64. */
  maxJsonDepth?: number;
  /** Most messages in a JSON-RPC batch (revision 2025-03-26). Default 32. */
  maxBatchSize?: number;
  /** Time for the upstream to send response headers, in milliseconds; else 504 `upstream_timeout`. Default 60,000. */
  upstreamTimeoutMs?: number;
  /**
   * Most forwarded exchanges open at once for one client (`client_id`): a request counts from the
   * moment it is about to be forwarded until its response has ended or either side has closed (an SSE
   * stream counts as long as it stays open). Past it → 429 `client_exchange_limit` with `Retry-After`.
   * Default 16.
   */
  maxOpenExchangesPerClient?: number;
  /**
   * Most forwarded exchanges open at once in all (also the upstream agent's `maxSockets`). Past it →
   * 503 `gateway_exchange_limit` with `Retry-After` (the gateway is busy, not this client). Default 1,024.
   */
  maxOpenExchanges?: number;
  /**
   * Sent to the upstream on every forwarded request (after the agent's `Authorization` and `DPoP`
   * are removed). Security: values are secrets to the gateway and never logged. A function is called
   * per request; if it throws, the request is refused 503 `upstream_credentials_unavailable`.
   * Default: nothing.
   */
  upstreamHeaders?: UpstreamHeaders;
  /**
   * Tell the upstream who called: `x-countersign-client-id`, `-subject`, `-approval-id`, `-scope`
   * (non-ASCII percent-encoded). Headers with this prefix sent by the client are always removed.
   * Default false.
   */
  identityHeaders?: boolean | { prefix?: string };
  /**
   * Where tokens bound to one `tools/call` (`agent_task.call`) are remembered once that call is made,
   * by `jti` until they expire: `store` (e.g. `createRedisCallTokenStore` for several instances), or an
   * in-memory store of at most `maxEntries` live tokens (default 10,000; full → 503
   * `call_store_unavailable`).
   */
  callTokens?: { store?: CallTokenStore; maxEntries?: number };
  /** Bounds of the `Mcp-Session-Id` → (client, subject) bindings. */
  sessions?: SessionBindingOptions;
  /** `realm` of the challenges (RFC 6750 §3). Default none. */
  realm?: string;
  /** Called once per request with the decision (for audit logs). Must not throw. */
  onDecision?: (decision: McpDecision) => void;
  /** Clock in milliseconds (tests). Default `Date.now`. */
  now?: () => number;
}

/** The DPoP algorithms accepted by default (the verifier's defaults, advertised in the metadata). */
export const DEFAULT_DPOP_ALGORITHMS: readonly JwsAlgorithm[] = [
  "ES256",
  "ES384",
  "EdDSA",
  "Ed25519",
  "PS256",
  "RS256",
];

export const DEFAULTS = {
  maxBodyBytes: 1_048_576,
  bodyTimeoutMs: 30_000,
  maxJsonDepth: 64,
  maxBatchSize: 32,
  upstreamTimeoutMs: 60_000,
  maxOpenExchangesPerClient: 16,
  maxOpenExchanges: 1_024,
  maxConnections: 4_096,
  identityPrefix: "x-countersign-",
} as const;
