import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { Verifier, VerifySuccess } from "../types.js";
import { createVerifier } from "../verifier.js";
import { type ApprovedTargets, approvedTargets } from "./agent_task.js";
import { readBody } from "./body.js";
import { type CallTokenStore, createMemoryCallTokenStore } from "./call_tokens.js";
import { canonicalResourceUri, PRM_WELL_KNOWN, resourceMetadataUrl, resourcePath } from "./canonical.js";
import { type ChallengeContext, challenge, schemeOf } from "./challenges.js";
import { ExchangeSlots } from "./exchange_slots.js";
import { argumentsDigest, numbersAreCanonical } from "./jcs.js";
import { type JsonRpcBody, type JsonRpcId, type JsonRpcMessage, parseJsonRpcBody } from "./jsonrpc.js";
import { checkMirroredHeaders } from "./mirrored_headers.js";
import {
  DEFAULT_DPOP_ALGORITHMS,
  DEFAULTS,
  type McpCaller,
  type McpDecision,
  type McpGatewayOptions,
} from "./options.js";
import { type CompiledPolicy, compilePolicy, type McpTarget, targetOf } from "./policy.js";
import { MCP_REASONS, type McpJsonRpcReason, type McpReason } from "./reasons.js";
import { SessionBindings, type SessionOwner } from "./sessions.js";
import { forward, relay, upstreamRequestHeaders } from "./upstream.js";

/** RFC 9728 §2 protected resource metadata, as the gateway serves it. */
export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers: string[];
  scopes_supported?: string[];
  bearer_methods_supported: ["header"];
  dpop_signing_alg_values_supported: string[];
  dpop_bound_access_tokens_required: boolean;
  resource_name?: string;
  resource_documentation?: string;
}

/**
 * A node:http request handler: `http.createServer(gateway.handler)`, `app.use(gateway.handler)` in
 * Express/connect (mounted at the root, before any body parser), or in Koa
 * `app.use((ctx) => { ctx.respond = false; gateway.handler(ctx.req, ctx.res); })`. Requests for other
 * paths go to `next` when given, else 404.
 */
export type McpRequestHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  next?: (error?: unknown) => void,
) => void;

/** An MCP gateway: metadata, challenges, per-tool authorization and the proxy to the upstream. */
export interface McpGateway {
  readonly handler: McpRequestHandler;
  /** The canonical resource identifier (the tokens' `aud`). */
  readonly resource: string;
  /** The URL of the metadata document, as put in `resource_metadata`. */
  readonly resourceMetadataUrl: string;
  readonly metadata: Readonly<ProtectedResourceMetadata>;
  /** The verifier in use (created from the options). */
  readonly verifier: Verifier;
  /** Resolves after the first JWKS fetch and revocation poll have been attempted. */
  ready(): Promise<void>;
  /** Stops background work (JWKS refresh, revocation polling) and closes upstream keep-alive sockets. */
  close(): void;
}

const ALLOW = "GET, POST, DELETE";

const VISIBLE_ASCII = /^[\x20-\x7E]*$/;

function positive(value: number | undefined, fallback: number, name: string, problems: string[]): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) problems.push(`${name} must be a positive integer`);
  return value;
}

function originOf(url: string, name: string, problems: string[]): string {
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error();
    return parsed.origin;
  } catch {
    problems.push(`${name} must be an absolute http(s) URL`);
    return "";
  }
}

/** Agent-chosen text in decisions is cut to 200 characters: an audit line cannot be made huge. */
function forLog(text: string): string {
  return text.length <= 200 ? text : `${text.slice(0, 199)}…`;
}

function headerSafe(value: string): string {
  return VISIBLE_ASCII.test(value) ? value : encodeURIComponent(value);
}

/**
 * What a token bound to one `tools/call` lets through besides that call: the lifecycle, `ping`, the
 * list methods (which name nothing), notifications and responses. None of them consumes the token.
 */
function passesBesideCall(message: JsonRpcMessage): boolean {
  if (message.kind !== "request") return true;
  const method = message.method ?? "";
  return method === "initialize" || method === "ping" || method.endsWith("/list");
}

/**
 * Decides the messages of a body against the token's bound calls: `"consume"` when the body makes the
 * bound call (once), `undefined` when it does not make it and may pass, else the refusal.
 */
function checkBoundCall(
  body: JsonRpcBody,
  calls: ApprovedTargets["calls"],
  maxDepth: number,
):
  | "consume"
  | "call_arguments_mismatch"
  | "call_token_used"
  | "call_method_not_approved"
  | "call_numbers_not_canonical"
  | undefined {
  let made = 0;
  for (const message of body.messages) {
    if (message.kind === "request" && message.method === "tools/call") {
      made++;
      if (made > 1) return "call_token_used";
      const tool = message.params?.name;
      let digest: string;
      try {
        digest = argumentsDigest(message.params?.arguments, maxDepth);
      } catch {
        return "call_arguments_mismatch";
      }
      if (!calls.every((call) => call.tool === tool && call.argumentsDigest === digest)) {
        return "call_arguments_mismatch";
      }
    } else if (!passesBesideCall(message)) {
      return "call_method_not_approved";
    }
  }
  if (made === 0) return undefined;
  // The upstream parses the original bytes: their numbers must read as the approver saw them.
  if (!numbersAreCanonical(body.text)) return "call_numbers_not_canonical";
  return "consume";
}

function jsonBody(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(text));
  res.end(text);
}

/**
 * Creates an MCP gateway (docs/mcp.md): serves RFC 9728 metadata, challenges per MCP
 * `basic/authorization`, verifies every request with {@link createVerifier} (audience = the canonical
 * resource), decides every JSON-RPC message from the parsed body (scopes per method, tool, resource,
 * prompt; the approval's tool lists; `Mcp-Method`/`Mcp-Name` checked against the body), binds sessions
 * to their client, and forwards to the upstream without the agent's credentials, streaming the answer.
 *
 * @throws TypeError naming every invalid option.
 */
export function createMcpGateway(options: McpGatewayOptions): McpGateway {
  const problems: string[] = [];
  let resource = "";
  try {
    resource = canonicalResourceUri(options.resource);
  } catch (error) {
    problems.push((error as Error).message);
  }
  let upstream: URL | undefined;
  try {
    upstream = new URL(options.upstream);
    if (upstream.protocol !== "http:" && upstream.protocol !== "https:") throw new Error();
  } catch {
    problems.push("upstream must be an absolute http(s) URL");
  }
  if (typeof options.issuer !== "string" || options.issuer === "") problems.push("issuer is required");
  let policy: CompiledPolicy | undefined;
  try {
    policy = compilePolicy(options.policy ?? {});
  } catch (error) {
    problems.push((error as Error).message);
  }
  const maxBodyBytes = positive(options.maxBodyBytes, DEFAULTS.maxBodyBytes, "maxBodyBytes", problems);
  const bodyTimeoutMs = positive(options.bodyTimeoutMs, DEFAULTS.bodyTimeoutMs, "bodyTimeoutMs", problems);
  const maxDepth = positive(options.maxJsonDepth, DEFAULTS.maxJsonDepth, "maxJsonDepth", problems);
  const maxBatchSize = positive(options.maxBatchSize, DEFAULTS.maxBatchSize, "maxBatchSize", problems);
  const upstreamTimeoutMs = positive(
    options.upstreamTimeoutMs,
    DEFAULTS.upstreamTimeoutMs,
    "upstreamTimeoutMs",
    problems,
  );
  const maxOpenExchanges = positive(
    options.maxOpenExchanges,
    DEFAULTS.maxOpenExchanges,
    "maxOpenExchanges",
    problems,
  );
  const maxOpenExchangesPerClient = positive(
    options.maxOpenExchangesPerClient,
    DEFAULTS.maxOpenExchangesPerClient,
    "maxOpenExchangesPerClient",
    problems,
  );
  if (
    options.sessions?.maxPerClient !== undefined &&
    (!Number.isSafeInteger(options.sessions.maxPerClient) || options.sessions.maxPerClient < 1)
  ) {
    problems.push("sessions.maxPerClient must be a positive integer");
  }
  const publicOrigin =
    options.publicOrigin === undefined ? undefined : originOf(options.publicOrigin, "publicOrigin", problems);
  const allowedOrigins = new Set(
    (options.allowedOrigins ?? []).map((origin, i) => originOf(origin, `allowedOrigins[${i}]`, problems)),
  );
  if (problems.length > 0 || policy === undefined || upstream === undefined) {
    throw new TypeError(`createMcpGateway: invalid options: ${problems.join("; ")}`);
  }
  const compiled = policy;
  const target = upstream;
  const resourceOrigin = new URL(resource).origin;
  if (options.allowedOrigins === undefined) allowedOrigins.add(resourceOrigin);
  const origin = publicOrigin ?? resourceOrigin;
  const mcpPath = resourcePath(resource) || "/";
  const metadataUrl = resourceMetadataUrl(resource);
  const metadataPaths = new Set([PRM_WELL_KNOWN, `${PRM_WELL_KNOWN}${resourcePath(resource)}`]);
  const dpopAlgorithms = options.dpop?.algorithms ?? DEFAULT_DPOP_ALGORITHMS;
  const dpopRequired = options.dpop?.required ?? false;
  const scopesSupported = [...(options.scopesSupported ?? compiled.defaultScopes)];
  const identity = options.identityHeaders ?? false;
  const identityPrefix = (
    typeof identity === "object" ? (identity.prefix ?? DEFAULTS.identityPrefix) : DEFAULTS.identityPrefix
  ).toLowerCase();
  const onDecision = options.onDecision ?? (() => undefined);
  const callTokens: CallTokenStore =
    options.callTokens?.store ??
    createMemoryCallTokenStore({
      ...(options.callTokens?.maxEntries !== undefined ? { maxEntries: options.callTokens.maxEntries } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
  const clockToleranceMs = (options.verifier?.clockToleranceSeconds ?? 5) * 1000;

  const { required: _required, ...dpopOptions } = options.dpop ?? {};
  const verifier = createVerifier({
    ...options.verifier,
    issuer: options.issuer,
    audience: resource,
    dpop: { ...dpopOptions, algorithms: dpopAlgorithms },
    ...(options.now ? { now: options.now } : {}),
  });
  const sessions = new SessionBindings(options.sessions, options.now);
  // No more upstream sockets than exchanges the gateway lets through at once.
  const agentOptions = { keepAlive: true, maxSockets: maxOpenExchanges };
  const agent = target.protocol === "https:" ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  const exchanges = new ExchangeSlots(maxOpenExchanges, maxOpenExchangesPerClient);

  const metadata: ProtectedResourceMetadata = {
    resource,
    authorization_servers: [...(options.authorizationServers ?? [options.issuer])],
    ...(scopesSupported.length > 0 ? { scopes_supported: scopesSupported } : {}),
    bearer_methods_supported: ["header"],
    dpop_signing_alg_values_supported: [...dpopAlgorithms],
    dpop_bound_access_tokens_required: dpopRequired,
    ...(options.resourceName !== undefined ? { resource_name: options.resourceName } : {}),
    ...(options.resourceDocumentation !== undefined
      ? { resource_documentation: options.resourceDocumentation }
      : {}),
  };
  const metadataText = JSON.stringify(metadata);
  const challengeContext: ChallengeContext = {
    resourceMetadata: metadataUrl,
    scope: scopesSupported,
    dpopAlgs: dpopAlgorithms.join(" "),
    dpopRequired,
    realm: options.realm,
  };

  function decide(decision: McpDecision): void {
    try {
      onDecision(decision);
    } catch {
      // An audit hook never changes the outcome.
    }
  }

  function refuse(
    res: ServerResponse,
    reason: McpReason,
    base: Omit<McpDecision, "outcome" | "status" | "reason">,
    extra: { id?: JsonRpcId; headers?: Record<string, string> } = {},
  ): void {
    const entry = MCP_REASONS[reason];
    if (entry.kind === "jsonrpc") {
      jsonBody(
        res,
        entry.status,
        {
          jsonrpc: "2.0",
          id: extra.id ?? null,
          error: { code: entry.code, message: entry.description, data: { reason } },
        },
        extra.headers,
      );
    } else {
      jsonBody(
        res,
        entry.status,
        { error: entry.error, error_description: entry.description, reason },
        extra.headers,
      );
    }
    decide({ ...base, outcome: "refused", status: entry.status, reason });
  }

  function serveMetadata(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== "GET" && req.method !== "HEAD") {
      refuse(
        res,
        "method_not_allowed",
        { httpMethod: req.method ?? "" },
        { headers: { allow: "GET, HEAD" } },
      );
      return;
    }
    res.statusCode = 200;
    res.setHeader("content-type", "application/json");
    res.setHeader("cache-control", "public, max-age=300");
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("content-length", Buffer.byteLength(metadataText));
    res.end(req.method === "HEAD" ? undefined : metadataText);
  }

  function callerOf(result: VerifySuccess): McpCaller {
    return {
      clientId: result.clientId,
      subject: result.subject,
      approvalId: result.approvalId,
      scopes: result.scopes,
      claims: result.claims,
    };
  }

  async function upstreamHeadersFor(caller: McpCaller): Promise<Record<string, string>> {
    const configured = options.upstreamHeaders;
    const headers: Record<string, string> = {};
    if (identity !== false) {
      headers[`${identityPrefix}client-id`] = headerSafe(caller.clientId);
      headers[`${identityPrefix}subject`] = headerSafe(caller.subject);
      headers[`${identityPrefix}approval-id`] = headerSafe(caller.approvalId);
      headers[`${identityPrefix}scope`] = headerSafe(caller.scopes.join(" "));
    }
    const extra = typeof configured === "function" ? await configured(caller) : (configured ?? {});
    return { ...headers, ...extra };
  }

  /** Decides every message of a body: `undefined` (allowed) or the refusal, with the scopes needed. */
  function authorize(
    body: JsonRpcBody,
    result: VerifySuccess,
  ): { reason: McpReason | undefined; required: string[]; targets: string[] } {
    const approved = approvedTargets(result.claims);
    const required: string[] = [];
    const targets: string[] = [];
    let refusal: McpReason | undefined;
    for (const message of body.messages) {
      const found = targetOf(message);
      if (found === "invalid") return { reason: "invalid_params", required, targets };
      const messageTarget: McpTarget | undefined = found;
      if (messageTarget !== undefined) targets.push(`${messageTarget.kind}:${forLog(messageTarget.name)}`);
      const scopes = compiled.scopesFor(message, messageTarget);
      if (typeof scopes === "string") {
        refusal ??= scopes;
        continue;
      }
      for (const scope of scopes) if (!required.includes(scope)) required.push(scope);
      if (messageTarget !== undefined && approved !== "invalid" && !approved.allows(messageTarget)) {
        refusal ??= `${messageTarget.kind}_not_approved` as const;
      }
    }
    return { reason: refusal, required, targets };
  }

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    next: ((error?: unknown) => void) | undefined,
  ): Promise<void> {
    const rawUrl = (req as { originalUrl?: string }).originalUrl ?? req.url ?? "/";
    const queryAt = rawUrl.indexOf("?");
    const pathname = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
    const search = queryAt < 0 ? "" : rawUrl.slice(queryAt);
    const httpMethod = req.method ?? "GET";
    if (metadataPaths.has(pathname)) {
      req.resume();
      serveMetadata(req, res);
      return;
    }
    if (pathname !== mcpPath) {
      if (next !== undefined) {
        next();
        return;
      }
      req.resume();
      refuse(res, "not_found", { httpMethod });
      return;
    }
    const base: Omit<McpDecision, "outcome" | "status" | "reason"> = { httpMethod };
    if (httpMethod !== "POST" && httpMethod !== "GET" && httpMethod !== "DELETE") {
      req.resume();
      refuse(res, "method_not_allowed", base, { headers: { allow: ALLOW } });
      return;
    }
    const requestOrigin = req.headersDistinct.origin;
    if (
      requestOrigin !== undefined &&
      (requestOrigin.length !== 1 || !allowedOrigins.has(requestOrigin[0] as string))
    ) {
      req.resume();
      refuse(res, "origin_not_allowed", base);
      return;
    }
    if (httpMethod === "POST" && req.readableEnded) {
      refuse(res, "body_consumed", base);
      return;
    }

    // Verification runs while the body arrives; nothing is parsed before the token is accepted.
    const verifying = verifier.verify({
      authorization: req.headersDistinct.authorization?.length === 1 ? req.headers.authorization : undefined,
      dpop: req.headersDistinct.dpop?.length === 1 ? (req.headers.dpop as string) : undefined,
      method: httpMethod,
      url: `${origin}${rawUrl}`,
    });
    let bytes: Buffer | undefined;
    if (httpMethod === "POST") {
      // A refused token stops buffering at once: an anonymous caller never makes the gateway buffer a
      // body. The rest is discarded as it arrives (bounded by maxBodyBytes and bodyTimeoutMs) so that
      // the refusal is answered at once on a connection that stays usable.
      const refused = new AbortController();
      verifying.then(
        (verdict) => {
          if (!verdict.ok) refused.abort();
        },
        () => refused.abort(),
      );
      const read = await readBody(req, maxBodyBytes, bodyTimeoutMs, refused.signal);
      if (typeof read !== "string") {
        bytes = read;
      } else if (read !== "cancelled") {
        // Too large or too slow (or gone): the client misbehaved, the unread rest ends the connection.
        await verifying;
        if (read === "aborted") return;
        refuse(res, read, base, { headers: { connection: "close" } });
        return;
      }
    } else {
      req.resume();
    }
    const result = await verifying;
    if (!result.ok) {
      // No `Connection: close`: the rest of a cancelled body is being discarded, and closing with
      // bytes unread could reset the connection before the client reads this challenge.
      const headers: Record<string, string> = {};
      if (result.headers["Retry-After"] !== undefined) headers["retry-after"] = result.headers["Retry-After"];
      if (result.status === 401 || result.status === 403) {
        headers["www-authenticate"] = challenge(
          challengeContext,
          result.reason === "missing_token"
            ? { scheme: undefined }
            : { scheme: schemeOf(result), error: result.error, description: result.description },
        );
      }
      jsonBody(
        res,
        result.status,
        { error: result.error, error_description: result.description, reason: result.reason },
        headers,
      );
      decide({ ...base, outcome: "refused", status: result.status, reason: result.reason });
      return;
    }
    const caller = callerOf(result);
    base.clientId = caller.clientId;
    base.subject = caller.subject;
    base.approvalId = caller.approvalId;
    const tokenScheme = result.claims.cnf?.jkt !== undefined ? "DPoP" : "Bearer";
    const tokenRefusal = (reason: "dpop_required" | "invalid_authorization_details") => {
      const entry = MCP_REASONS[reason];
      refuse(res, reason, base, {
        headers: {
          "www-authenticate": challenge(challengeContext, {
            scheme: reason === "dpop_required" ? "DPoP" : tokenScheme,
            error: entry.error,
            description: entry.description,
          }),
        },
      });
    };
    if (dpopRequired && tokenScheme !== "DPoP") {
      tokenRefusal("dpop_required");
      return;
    }
    const approved = approvedTargets(result.claims);
    const jti = result.claims.jti;
    if (approved === "invalid" || (approved.calls.length > 0 && (typeof jti !== "string" || jti === ""))) {
      // A token bound to a call needs a jti to be consumed by it.
      tokenRefusal("invalid_authorization_details");
      return;
    }

    const owner: SessionOwner = { clientId: caller.clientId, subject: caller.subject };
    const sessionHeader = req.headersDistinct["mcp-session-id"];
    const sessionId = sessionHeader?.length === 1 ? sessionHeader[0] : undefined;
    if (sessionHeader !== undefined) {
      const bound = sessionId === undefined ? "session_not_found" : sessions.check(sessionId, owner);
      if (bound !== "ok") {
        refuse(res, bound, base);
        return;
      }
    }

    let required: readonly string[] = compiled.defaultScopes;
    let consumesCall = false;
    if (bytes !== undefined) {
      const type = String(req.headers["content-type"] ?? "").toLowerCase();
      const [mediaType, ...parameters] = type.split(";").map((part) => part.trim());
      const charset = parameters.find((part) => part.startsWith("charset="));
      if (
        mediaType !== "application/json" ||
        (charset !== undefined && charset.replace(/"/g, "") !== "charset=utf-8")
      ) {
        refuse(res, "unsupported_media_type", base);
        return;
      }
      const parsed = parseJsonRpcBody(bytes, { maxDepth, maxBatchSize });
      if (!parsed.ok) {
        refuse(res, parsed.reason, base, { id: parsed.id });
        return;
      }
      const body = parsed.body;
      const soleId = body.batch ? null : (body.messages[0]?.id ?? null);
      base.methods = body.messages.flatMap((message) =>
        message.method === undefined ? [] : [forLog(message.method)],
      );
      const mismatch: McpJsonRpcReason | undefined = checkMirroredHeaders(req.headersDistinct, body);
      if (mismatch !== undefined) {
        refuse(res, mismatch, base, { id: soleId });
        return;
      }
      const decision = authorize(body, result);
      base.targets = decision.targets;
      if (decision.reason !== undefined) {
        refuse(res, decision.reason, base, { id: soleId });
        return;
      }
      required = decision.required;
      if (approved.calls.length > 0) {
        const bound = checkBoundCall(body, approved.calls, maxDepth);
        if (bound !== undefined && bound !== "consume") {
          refuse(res, bound, base, { id: soleId });
          return;
        }
        consumesCall = bound === "consume";
      }
    }
    const granted = compiled.expand(result.scopes);
    if (required.some((scope) => !granted.has(scope))) {
      refuse(res, "insufficient_scope", base, {
        headers: {
          "www-authenticate": challenge(challengeContext, {
            scheme: tokenScheme,
            error: "insufficient_scope",
            description: MCP_REASONS.insufficient_scope.description,
            scope: required,
          }),
        },
      });
      return;
    }

    // Before the call token is consumed: a request refused here can be retried with the same token.
    const slot = exchanges.acquire(caller.clientId);
    if (typeof slot === "string") {
      refuse(res, slot, base, { headers: { "retry-after": "1" } });
      return;
    }
    // Held until the response has ended or either side closed; `close` fires in every case.
    if (res.destroyed) {
      slot();
      return;
    }
    res.once("close", slot);

    let extra: Record<string, string>;
    try {
      extra = await upstreamHeadersFor(caller);
    } catch {
      refuse(res, "upstream_credentials_unavailable", base);
      return;
    }
    if (consumesCall) {
      // Last, so that only a call about to be forwarded consumes the token.
      let first: boolean;
      try {
        first = await callTokens.consume(jti as string, result.claims.exp * 1000 + clockToleranceMs);
      } catch {
        refuse(res, "call_store_unavailable", base);
        return;
      }
      if (!first) {
        refuse(res, "call_token_used", base);
        return;
      }
    }
    forward(
      {
        upstream: target,
        method: httpMethod,
        search,
        headers: upstreamRequestHeaders(req, extra, identityPrefix),
        body: bytes,
        agent,
        timeoutMs: upstreamTimeoutMs,
      },
      res,
      (response) => {
        const status = response.statusCode ?? 502;
        if (status === 401) {
          response.resume();
          refuse(res, "upstream_unauthorized", base);
          return;
        }
        const opened = response.headers["mcp-session-id"];
        if (typeof opened === "string" && status < 300) {
          const existing = sessions.check(opened, owner);
          if (existing === "session_not_found") sessions.bind(opened, owner);
        }
        if (httpMethod === "DELETE" && sessionId !== undefined && status < 300) sessions.forget(sessionId);
        relay(response, res, status);
        decide({ ...base, outcome: "forwarded", status });
      },
      (failure) => {
        if (res.headersSent || res.destroyed) return;
        refuse(res, failure, base);
      },
    );
  }

  const handler: McpRequestHandler = (req, res, next) => {
    handle(req, res, next).catch((error: unknown) => {
      if (next !== undefined) {
        next(error);
        return;
      }
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end();
      } else {
        res.destroy();
      }
    });
  };

  return {
    handler,
    resource,
    resourceMetadataUrl: metadataUrl,
    metadata,
    verifier,
    ready: () => verifier.ready(),
    close() {
      verifier.close();
      agent.destroy();
    },
  };
}
