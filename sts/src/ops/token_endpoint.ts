import { context } from "@opentelemetry/api";
import type { Context as KoaContext } from "koa";
import type { errors, KoaContextWithOIDC, default as Provider } from "oidc-provider";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";
import { attributeText, boundedText, endRequestSpan, type RequestSpan, startRequestSpan } from "./tracing.js";

/** What {@link observeTokenEndpoint} needs. */
export interface TokenEndpointObserverDependencies {
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** The token endpoint's path, e.g. `/token`. */
  readonly path: string;
  /**
   * The `grant_type` label of each grant the STS has (e.g. the token exchange's URN → `token_exchange`);
   * every other value, or none, is `other`, so the label's values stay a fixed set.
   */
  readonly grantTypes: ReadonlyMap<string, string>;
  /** Config `tracing.trust_incoming_context`: whether the span continues the caller's `traceparent`. */
  readonly trustIncomingContext: boolean;
}

/**
 * The `error` codes the token endpoint may answer (RFC 6749 §5.2, RFC 8707 §2, RFC 9396 §5, RFC 9449
 * §7, RFC 8628 §3.5 for `authorization_pending` and `slow_down`), `server_error` for a 500, and `none`
 * on success. Anything else is counted as `other`, so the label's values stay a fixed set.
 */
const ERROR_LABELS: ReadonlySet<string> = new Set([
  "none",
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unauthorized_client",
  "unsupported_grant_type",
  "invalid_scope",
  "invalid_target",
  "invalid_authorization_details",
  "invalid_dpop_proof",
  "use_dpop_nonce",
  "authorization_pending",
  "slow_down",
  "access_denied",
  "temporarily_unavailable",
  "server_error",
]);

/** The reason logged, and put on the span, when client authentication fails (`invalid_client`). */
export const CLIENT_AUTH_FAILED = "client_auth_failed";

/**
 * Which check of client authentication failed, from oidc-provider's fixed `error_detail` texts (never
 * the text itself, which for a client assertion may quote it).
 */
const CLIENT_AUTH_FAILURES: ReadonlyMap<string, string> = new Map([
  ["client not found", "client_unknown"],
  ["invalid secret provided", "secret_mismatch"],
  [
    "the provided authentication mechanism does not match the registered client authentication method",
    "auth_method_mismatch",
  ],
]);

/** What one POST to the token endpoint came to, as oidc-provider's events tell it. */
interface TokenCall {
  readonly request: RequestSpan;
  counted: boolean;
}

/** The request's parameters, once oidc-provider has read them (none before, e.g. on a bad body). */
function paramsOf(ctx: KoaContextWithOIDC): Record<string, unknown> {
  return (ctx.oidc?.params as Record<string, unknown> | undefined) ?? {};
}

/**
 * The client a request authenticated as, or else the `client_id` it claimed in its body (an anonymous
 * caller's text: bounded). `undefined` when neither is known (e.g. an unknown client in Basic auth).
 */
function clientIdOf(ctx: KoaContextWithOIDC): string | undefined {
  return boundedText(ctx.oidc?.client?.clientId) ?? boundedText(paramsOf(ctx).client_id);
}

/**
 * Counts, traces and logs the token endpoint through oidc-provider's events: `grant.success` after a
 * grant's handler answered, `grant.error` for every refusal at the endpoint (client authentication,
 * parameters, the grant's own), `server_error` (any route) for a 500. Every `POST /token` is counted
 * exactly once in `countersign_token_requests_total{grant_type, error}`, whatever grant it names and
 * wherever it is refused; it runs in one span (`POST /token`: grant type, client id, outcome, error,
 * reason), joined to the caller's trace through `traceparent` only when `trustIncomingContext` (else
 * linked to it). A failed client authentication is one log
 * line with reason `client_auth_failed` and the client id, never the secret or the Authorization header.
 */
export function observeTokenEndpoint(
  provider: Provider,
  { metrics, logger, path, grantTypes, trustIncomingContext }: TokenEndpointObserverDependencies,
): void {
  const calls = new WeakMap<object, TokenCall>();
  const grantTypeLabel = (grantType: unknown): string =>
    (typeof grantType === "string" ? grantTypes.get(grantType) : undefined) ?? "other";

  function count(ctx: KoaContextWithOIDC, error: string, reason: string | undefined): void {
    const call = calls.get(ctx);
    if (call?.counted) return;
    const grantType = grantTypeLabel(paramsOf(ctx).grant_type);
    const errorLabel = ERROR_LABELS.has(error) ? error : "other";
    metrics.tokenRequests.inc({ grant_type: grantType, error: errorLabel });
    if (!call) return;
    call.counted = true;
    const clientId = attributeText(clientIdOf(ctx));
    call.request.span.setAttributes({
      "countersign.grant_type": grantType,
      "countersign.outcome": error === "none" ? "issued" : error === "server_error" ? "error" : "refused",
      ...(clientId !== undefined ? { "countersign.client_id": clientId } : {}),
      ...(error !== "none" ? { "error.type": errorLabel } : {}),
      ...(reason !== undefined ? { "countersign.reason": reason } : {}),
    });
  }

  provider.use(async (ctx: KoaContext, next) => {
    if (ctx.method !== "POST" || ctx.path !== path) return next();
    const request = startRequestSpan("POST", path, ctx.headers, { trustIncomingContext });
    const call: TokenCall = { request, counted: false };
    calls.set(ctx, call);
    try {
      await context.with(request.context, next);
    } finally {
      // oidc-provider emits one of its events for every POST it routes; should a future version not,
      // the request still counts once.
      if (!call.counted) count(ctx as unknown as KoaContextWithOIDC, "other", undefined);
      endRequestSpan(request.span, ctx.status);
    }
  });

  provider.on("grant.success", (ctx) => count(ctx, "none", undefined));

  provider.on("grant.error", (ctx, error: InstanceType<typeof errors.OIDCProviderError>) => {
    // Our refusals carry a reason of sts/src/reasons.ts; oidc-provider's own checks, their error code.
    const code = typeof error.error === "string" ? error.error : "other";
    if (code === "invalid_client") {
      count(ctx, code, CLIENT_AUTH_FAILED);
      const detail = typeof error.error_detail === "string" ? error.error_detail : "";
      logger.info(
        {
          event: "token.client_auth",
          reason: CLIENT_AUTH_FAILED,
          failure: CLIENT_AUTH_FAILURES.get(detail) ?? "other",
          client_id: clientIdOf(ctx) ?? null,
          grant_type: grantTypeLabel(paramsOf(ctx).grant_type),
          error: code,
        },
        "client authentication failed",
      );
      return;
    }
    const reason = (error as { reason?: unknown }).reason;
    count(ctx, code, typeof reason === "string" ? reason : ERROR_LABELS.has(code) ? code : "other");
  });

  provider.on("server_error", (ctx) => {
    if (ctx.method === "POST" && ctx.path === path) count(ctx, "server_error", "server_error");
  });
}
