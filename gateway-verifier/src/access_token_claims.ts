import type { Reason } from "./reasons.js";
import type { AccessTokenClaims, RateLimit, VerifySuccess } from "./types.js";

/**
 * An access token whose signature and claims passed: what the verified-token cache keeps. Everything
 * checked per request (revocation, scopes, DPoP, rate) is checked again from it on every request.
 */
export interface VerifiedToken {
  /** Milliseconds since the epoch: min(exp, iat + maxTokenAge) + tolerance. */
  deadlineMs: number;
  success: VerifySuccess;
  scopes: readonly string[];
  approvalId: string;
  /** `cnf.jkt` (RFC 9449 §6): the thumbprint of the key DPoP proofs must be signed with. */
  jkt: string | undefined;
  /** The rate-limit bucket: (client_id, approval_id), length-prefixed. */
  rateKey: string;
  /** The tighter of the token's `rate_limit` and the gateway's, field by field; none when off. */
  rateLimit: RateLimit | undefined;
}

/** What {@link createClaimsCheck} checks against (the verifier's options, defaults applied). */
export interface ClaimsCheckOptions {
  /** The one trusted `iss`, compared exactly. */
  issuer: string;
  /** This gateway's resource ids; `aud` must name one. */
  audiences: readonly string[];
  /** Allowed clock skew for `exp`, `nbf`, `iat`, in milliseconds. */
  toleranceMs: number;
  /** Oldest accepted `iat`, in milliseconds before now (plus the tolerance). */
  maxAgeMs: number;
  /** Deepest accepted `act` nesting (RFC 8693 §4.1). */
  maxActDepth: number;
  /** The gateway's own `rateLimit` option: `false` turns rate limiting off, even the token's. */
  gatewayLimit: RateLimit | false | undefined;
}

/** Checks a JWT claims set: `(claims, nowMs)` → the verified token or the refusal reason. */
export type ClaimsCheck = (claims: Record<string, unknown>, nowMs: number) => VerifiedToken | Reason;

const MAX_AUDIENCES = 64;
const MAX_ID_LENGTH = 512;

/** A finite number > 0. */
export function isPositiveNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value > 0;
}

/**
 * The limit that applies: the token's `rate_limit` tightened by the gateway's, field by field
 * (the gateway's alone when the token has none); none at all when the gateway's is `false`.
 */
export function effectiveRateLimit(
  tokenLimit: RateLimit | undefined,
  gatewayLimit: RateLimit | false | undefined,
): RateLimit | undefined {
  if (gatewayLimit === false) return undefined;
  if (gatewayLimit === undefined) return tokenLimit;
  if (
    tokenLimit === undefined ||
    (tokenLimit.perSecond >= gatewayLimit.perSecond && tokenLimit.burst >= gatewayLimit.burst)
  ) {
    return gatewayLimit;
  }
  if (tokenLimit.perSecond > gatewayLimit.perSecond || tokenLimit.burst > gatewayLimit.burst) {
    return {
      perSecond: Math.min(tokenLimit.perSecond, gatewayLimit.perSecond),
      burst: Math.min(tokenLimit.burst, gatewayLimit.burst),
    };
  }
  return tokenLimit;
}

/**
 * Returns the claims check of a Countersign access token (RFC 9068 §4, plus `approval_id`), in this
 * order: `iss` → `aud` → `exp` → `nbf` → `iat` → staleness (`iat` older than `maxAgeMs`, whatever
 * `exp` says) → `approval_id` → `sub`, `client_id` → `act` depth → `scope` → `rate_limit` → `cnf`.
 * Pure: no I/O, the clock is the caller's `nowMs`. Run it only on a claims set whose signature has
 * verified.
 */
export function createClaimsCheck(options: ClaimsCheckOptions): ClaimsCheck {
  const { issuer, toleranceMs, maxAgeMs, maxActDepth, gatewayLimit } = options;
  const audiences = new Set(options.audiences);
  const soleAudience = audiences.size === 1 ? [...audiences][0] : undefined;

  return (claims, nowMs) => {
    if (claims.iss !== issuer) return "invalid_issuer";
    const aud = claims.aud;
    if (typeof aud === "string") {
      if (aud !== soleAudience && !audiences.has(aud)) return "invalid_audience";
    } else if (!Array.isArray(aud) || aud.length > MAX_AUDIENCES || !aud.some((a) => audiences.has(a))) {
      return "invalid_audience";
    }
    const { exp, nbf, iat } = claims;
    if (typeof exp !== "number" || !Number.isFinite(exp)) return "missing_claim";
    if (nowMs >= exp * 1000 + toleranceMs) return "token_expired";
    if (nbf !== undefined) {
      if (typeof nbf !== "number" || !Number.isFinite(nbf)) return "invalid_claim";
      if (nbf * 1000 > nowMs + toleranceMs) return "token_not_yet_valid";
    }
    if (typeof iat !== "number" || !Number.isFinite(iat)) return "missing_claim";
    if (iat * 1000 > nowMs + toleranceMs) return "iat_in_future";
    if (nowMs - iat * 1000 > maxAgeMs + toleranceMs) return "token_stale";
    const approvalId = claims.approval_id;
    if (typeof approvalId !== "string" || approvalId === "" || approvalId.length > MAX_ID_LENGTH) {
      return "missing_approval_id";
    }
    const { sub, client_id: clientId } = claims;
    if (typeof sub !== "string" || sub === "" || typeof clientId !== "string" || clientId === "") {
      return "missing_claim";
    }
    let actor = claims.act;
    for (let depth = 1; actor !== undefined; depth++) {
      if (typeof actor !== "object" || actor === null || Array.isArray(actor)) return "invalid_act";
      if (typeof (actor as { sub?: unknown }).sub !== "string") return "invalid_act";
      if (depth > maxActDepth) return "act_too_deep";
      actor = (actor as { act?: unknown }).act;
    }
    const scope = claims.scope;
    if (scope !== undefined && typeof scope !== "string") return "invalid_claim";
    let scopes = scope === undefined || scope === "" ? [] : scope.split(" ");
    if (scopes.includes("")) scopes = scopes.filter((s) => s !== "");
    let tokenLimit: RateLimit | undefined;
    const rateLimitClaim = claims.rate_limit;
    if (rateLimitClaim !== undefined) {
      if (typeof rateLimitClaim !== "object" || rateLimitClaim === null) return "invalid_claim";
      const { per_second: perSecond, burst } = rateLimitClaim as Record<string, unknown>;
      if (!isPositiveNumber(perSecond) || !isPositiveNumber(burst) || burst < 1) return "invalid_claim";
      tokenLimit = { perSecond, burst: Math.floor(burst) };
    }
    let jkt: string | undefined;
    const cnf = claims.cnf;
    if (cnf !== undefined) {
      // Only DPoP binding (RFC 9449 §6) can be checked here; any other confirmation method fails closed.
      const bound =
        typeof cnf === "object" && cnf !== null ? (cnf as Record<string, unknown>).jkt : undefined;
      if (typeof bound !== "string" || bound === "" || Object.keys(cnf as object).length !== 1) {
        return "invalid_claim";
      }
      jkt = bound;
    }
    const success: VerifySuccess = {
      ok: true,
      claims: claims as Readonly<AccessTokenClaims>,
      clientId,
      approvalId,
      subject: sub,
      scopes,
    };
    return {
      deadlineMs: Math.min(exp * 1000, iat * 1000 + maxAgeMs) + toleranceMs,
      success,
      scopes,
      approvalId,
      jkt,
      rateKey: `${clientId.length}:${clientId}${approvalId}`,
      rateLimit: effectiveRateLimit(tokenLimit, gatewayLimit),
    };
  };
}
