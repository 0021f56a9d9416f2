/**
 * Stable reason codes of the MCP gateway's own refusals (the verifier's token refusals keep their
 * codes, see `REASONS`). Like those, they never change meaning and their descriptions are constants,
 * never request data.
 *
 * - `kind: "oauth"`: answered with `{ error, error_description, reason }` (RFC 6750 §3 style).
 * - `kind: "jsonrpc"`: the JSON-RPC message itself is wrong: HTTP 400 with a JSON-RPC error object
 *   `{ jsonrpc: "2.0", id, error: { code, message, data: { reason } } }`.
 */
export const MCP_REASONS = {
  /** The token's `agent_task` names tools and this `tools/call` (or `tools` entry of a batch) is not one of them. */
  tool_not_approved: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval does not include this tool",
  },
  /** The token's `agent_task` names resources and this URI is not one of them. */
  resource_not_approved: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval does not include this resource",
  },
  /** The token's `agent_task` names prompts and this prompt is not one of them. */
  prompt_not_approved: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval does not include this prompt",
  },
  /** `unlisted: "deny"` and the tool has no entry in the gateway's `tools` policy. */
  tool_not_listed: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "This tool is not enabled at this gateway",
  },
  /** `unlisted: "deny"` and the resource URI has no entry in the gateway's `resources` policy. */
  resource_not_listed: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "This resource is not enabled at this gateway",
  },
  /** `unlisted: "deny"` and the prompt has no entry in the gateway's `prompts` policy. */
  prompt_not_listed: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "This prompt is not enabled at this gateway",
  },
  /** The token lacks a scope the call needs; the challenge lists every scope the call needs. */
  insufficient_scope: {
    kind: "oauth",
    status: 403,
    error: "insufficient_scope",
    description: "The token lacks a scope this request requires",
  },
  /** The token is bound to one `tools/call` and this call names another tool, or other arguments (RFC 8785 digest). */
  call_arguments_mismatch: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval binds another tool call: this tool or these arguments were not approved",
  },
  /** The token's one bound `tools/call` was already made (its `jti` is remembered until it expires), or a batch makes it twice. */
  call_token_used: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval's one tool call was already made with this token",
  },
  /** The token is bound to one `tools/call`; besides it only `initialize`, `ping`, list methods, notifications and responses pass. */
  call_method_not_approved: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The approval allows one tool call; this method is not part of it",
  },
  /** A body with a bound `tools/call` writes a number otherwise than RFC 8785 does (`1.0`, `1E3`, `-0`, beyond double precision). */
  call_numbers_not_canonical: {
    kind: "oauth",
    status: 400,
    error: "invalid_request",
    description: "A call bound to its arguments must write every number as RFC 8785 does",
  },
  /** The store remembering used call tokens is full of unexpired entries, or (Redis) failed: fail closed. */
  call_store_unavailable: {
    kind: "oauth",
    status: 503,
    error: "temporarily_unavailable",
    description: "Used call tokens cannot be recorded right now",
  },
  /** `authorization_details` is not an array, or an `agent_task`'s `tools`/`resources`/`prompts` is not an array of strings. */
  invalid_authorization_details: {
    kind: "oauth",
    status: 401,
    error: "invalid_token",
    description: "The token's authorization details are invalid",
  },
  /** `dpopBoundAccessTokensRequired` and the token has no `cnf.jkt` (RFC 9728 §2, RFC 9449 §7.1). */
  dpop_required: {
    kind: "oauth",
    status: 401,
    error: "invalid_token",
    description: "A DPoP-bound access token is required",
  },
  /** `Mcp-Session-Id` names no session this gateway knows (never seen, expired, evicted, or malformed). */
  session_not_found: {
    kind: "oauth",
    status: 404,
    error: "invalid_request",
    description: "The session does not exist or has expired",
  },
  /** `Mcp-Session-Id` names a session another client (`client_id`) opened. */
  session_client_mismatch: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The session belongs to another client",
  },
  /** `Mcp-Session-Id` names a session opened for another subject (`sub`). */
  session_subject_mismatch: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The session belongs to another subject",
  },
  /** An `Origin` header outside `allowedOrigins` (MCP Streamable HTTP: DNS rebinding protection). */
  origin_not_allowed: {
    kind: "oauth",
    status: 403,
    error: "access_denied",
    description: "The request origin is not allowed",
  },
  /** Another path than the MCP endpoint and the metadata documents. */
  not_found: { kind: "oauth", status: 404, error: "invalid_request", description: "Not found" },
  /** An HTTP method the endpoint does not serve (`Allow` lists those it does). */
  method_not_allowed: {
    kind: "oauth",
    status: 405,
    error: "invalid_request",
    description: "The HTTP method is not allowed here",
  },
  /** The request body was not received within `bodyTimeoutMs`. */
  body_timeout: {
    kind: "oauth",
    status: 408,
    error: "invalid_request",
    description: "The request body was not received in time",
  },
  /** The request body is larger than `maxBodyBytes`. */
  body_too_large: {
    kind: "oauth",
    status: 413,
    error: "invalid_request",
    description: "The request body is too large",
  },
  /** A POST whose `Content-Type` is not `application/json` (UTF-8). */
  unsupported_media_type: {
    kind: "oauth",
    status: 415,
    error: "invalid_request",
    description: "The request body must be application/json",
  },
  /** The body was read by something mounted before the gateway (e.g. a JSON body parser). */
  body_consumed: {
    kind: "oauth",
    status: 500,
    error: "server_error",
    description: "The request body was consumed before the MCP gateway",
  },
  /** The client (`client_id`) already has `maxOpenExchangesPerClient` forwarded exchanges open (e.g. SSE streams). */
  client_exchange_limit: {
    kind: "oauth",
    status: 429,
    error: "rate_limited",
    description: "Too many open requests for this client",
  },
  /** The gateway already has `maxOpenExchanges` forwarded exchanges open, all clients together. */
  gateway_exchange_limit: {
    kind: "oauth",
    status: 503,
    error: "temporarily_unavailable",
    description: "Too many open requests at this gateway",
  },
  /** The upstream MCP server could not be reached, or failed mid-response. */
  upstream_unavailable: {
    kind: "oauth",
    status: 502,
    error: "temporarily_unavailable",
    description: "The MCP server is unavailable",
  },
  /** The upstream answered 401: the gateway's own upstream credentials were refused. */
  upstream_unauthorized: {
    kind: "oauth",
    status: 502,
    error: "temporarily_unavailable",
    description: "The MCP server refused the gateway's credentials",
  },
  /** The `upstreamHeaders` hook threw or rejected (fail closed: nothing is forwarded). */
  upstream_credentials_unavailable: {
    kind: "oauth",
    status: 503,
    error: "temporarily_unavailable",
    description: "Credentials for the MCP server are temporarily unavailable",
  },
  /** The upstream sent no response headers within `upstreamTimeoutMs`. */
  upstream_timeout: {
    kind: "oauth",
    status: 504,
    error: "temporarily_unavailable",
    description: "The MCP server did not answer in time",
  },
  /** Not UTF-8, or not JSON (JSON-RPC -32700). */
  parse_error: { kind: "jsonrpc", status: 400, code: -32700, description: "Parse error" },
  /** Not a JSON-RPC 2.0 message or batch of them, or an empty batch (-32600). */
  invalid_request: { kind: "jsonrpc", status: 400, code: -32600, description: "Invalid Request" },
  /** An object repeats a member name: other parsers could read another value (RFC 8259 §4) (-32600). */
  duplicate_key: {
    kind: "jsonrpc",
    status: 400,
    code: -32600,
    description: "Invalid Request: duplicate member name",
  },
  /** Nesting deeper than `maxJsonDepth` (-32600). */
  too_deep: { kind: "jsonrpc", status: 400, code: -32600, description: "Invalid Request: nested too deeply" },
  /** A batch longer than `maxBatchSize` (-32600). */
  batch_too_large: {
    kind: "jsonrpc",
    status: 400,
    code: -32600,
    description: "Invalid Request: batch too large",
  },
  /** `tools/call` or `prompts/get` without a string `params.name`, `resources/*` without a string `params.uri` (-32602). */
  invalid_params: { kind: "jsonrpc", status: 400, code: -32602, description: "Invalid params" },
  /** `Mcp-Method` differs from the body's `method` (MCP 2026-07-28 HeaderMismatch, -32020). */
  mcp_method_mismatch: {
    kind: "jsonrpc",
    status: 400,
    code: -32020,
    description: "Header mismatch: Mcp-Method does not match the request body",
  },
  /** `Mcp-Name` (decoded) differs from the body's `params.name`/`params.uri` (-32020). */
  mcp_name_mismatch: {
    kind: "jsonrpc",
    status: 400,
    code: -32020,
    description: "Header mismatch: Mcp-Name does not match the request body",
  },
  /** `MCP-Protocol-Version` differs from the body's `_meta` `io.modelcontextprotocol/protocolVersion` (-32020). */
  protocol_version_mismatch: {
    kind: "jsonrpc",
    status: 400,
    code: -32020,
    description: "Header mismatch: MCP-Protocol-Version does not match the request body",
  },
  /** A 2026-07-28 (or later) request without `Mcp-Method`, or without `Mcp-Name` where required (-32020). */
  mcp_header_missing: {
    kind: "jsonrpc",
    status: 400,
    code: -32020,
    description: "Header mismatch: a required Mcp-Method or Mcp-Name header is missing",
  },
  /** A repeated `Mcp-Method`/`Mcp-Name`/`MCP-Protocol-Version`, or a value with invalid characters or Base64 (-32020). */
  mcp_header_invalid: {
    kind: "jsonrpc",
    status: 400,
    code: -32020,
    description: "Header mismatch: an Mcp header is repeated or malformed",
  },
} as const;

/** A stable machine code of an MCP gateway refusal; see {@link MCP_REASONS}. */
export type McpReason = keyof typeof MCP_REASONS;

/** The reasons answered with a JSON-RPC error (HTTP 400). */
export type McpJsonRpcReason = {
  [K in McpReason]: (typeof MCP_REASONS)[K]["kind"] extends "jsonrpc" ? K : never;
}[McpReason];
