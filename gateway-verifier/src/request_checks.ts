import type { VerifiedToken } from "./access_token_claims.js";
import type { DpopChecker } from "./dpop.js";
import type { ErrorResponses, Scheme } from "./error_response.js";
import type { RevocationState } from "./revocation.js";
import type { RateDecision, RateLimitStore, VerifyRequest, VerifyResult } from "./types.js";

/** What {@link createRequestChecks} checks with. */
export interface RequestCheckOptions {
  /** Unset: revocations are not checked. */
  revocation: RevocationState | undefined;
  dpop: DpopChecker;
  rateStore: RateLimitStore;
  responses: ErrorResponses;
}

/**
 * Checks one request against a verified token: `(token, request, accessToken, dpopScheme, nowMs)`,
 * `dpopScheme` being whether the `Authorization` header used the `DPoP` scheme.
 */
export type RequestChecks = (
  token: VerifiedToken,
  request: VerifyRequest,
  accessToken: string,
  dpopScheme: boolean,
  nowMs: number,
) => VerifyResult | Promise<VerifyResult>;

/** A scope-token (RFC 6749 §3.3) that may be listed in a `scope` challenge parameter. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/**
 * Returns the checks that run on every request, cache hits included, in this order: revocation
 * (waiting for the feed's first sync attempt; fail closed when the feed is stale) → the route's required
 * scopes (403, RFC 6750 §3.1) → DPoP: scheme and proof for a `cnf.jkt` token (RFC 9449 §7.1), no
 * `DPoP` scheme for an unbound one → rate and burst per (client_id, approval_id) (fail closed when
 * the store fails).
 *
 * The DPoP proof's `jti` is recorded before the rate is consumed, so a replayed proof (or one refused
 * for any DPoP reason) never takes from the bucket of the client it was captured from. A client over
 * its rate can thus still record proofs, but only up to its share of the replay cache
 * (`dpop_client_share_exceeded`), which is what keeps it from filling the cache for other clients.
 */
export function createRequestChecks(options: RequestCheckOptions): RequestChecks {
  const { revocation, dpop, rateStore, responses } = options;
  const { fail, build } = responses;
  const shareExceeded = build("dpop_client_share_exceeded", "DPoP", undefined, dpop.shareRetryAfterSeconds);

  function rateDecision(decision: RateDecision, token: VerifiedToken, scheme: Scheme): VerifyResult {
    if (decision.allowed) return token.success;
    return build("rate_limited", scheme, undefined, decision.retryAfterSeconds);
  }

  function checkRequest(
    token: VerifiedToken,
    request: VerifyRequest,
    accessToken: string,
    dpopScheme: boolean,
    nowMs: number,
  ): VerifyResult | Promise<VerifyResult> {
    const scheme: Scheme = token.jkt !== undefined || dpopScheme ? "DPoP" : "Bearer";
    if (revocation !== undefined) {
      if (!revocation.list.attempted) {
        return revocation.source.initial.then(() =>
          checkRequest(token, request, accessToken, dpopScheme, nowMs),
        );
      }
      if (nowMs - revocation.list.syncedAt > revocation.maxStalenessMs) {
        return fail("revocation_unavailable", scheme);
      }
      if (revocation.list.has(token.approvalId)) return fail("approval_revoked", scheme);
    }
    const required = request.requiredScopes;
    if (required !== undefined) {
      for (const scope of required) {
        if (!token.scopes.includes(scope)) {
          const listed = required.filter((s) => SCOPE_TOKEN.test(s)).join(" ");
          return build("insufficient_scope", scheme, listed === "" ? undefined : listed);
        }
      }
    }
    if (token.jkt !== undefined) {
      if (!dpopScheme) return fail("dpop_bound_token_as_bearer", "DPoP");
      const problem = dpop.check({
        proof: request.dpop,
        accessToken,
        jkt: token.jkt,
        clientId: token.success.clientId,
        method: request.method ?? "GET",
        url: request.url,
        nowMs,
      });
      if (problem === "dpop_client_share_exceeded") return shareExceeded;
      if (problem !== undefined) return fail(problem, "DPoP");
    } else if (dpopScheme) {
      return fail("token_not_dpop_bound", "DPoP");
    }
    if (token.rateLimit === undefined) return token.success;
    let decision: RateDecision | Promise<RateDecision>;
    try {
      decision = rateStore.consume(token.rateKey, token.rateLimit, nowMs);
    } catch {
      return fail("rate_limit_unavailable", scheme);
    }
    if (decision instanceof Promise) {
      return decision.then(
        (settled) => rateDecision(settled, token, scheme),
        () => fail("rate_limit_unavailable", scheme),
      );
    }
    return rateDecision(decision, token, scheme);
  }

  return checkRequest;
}
