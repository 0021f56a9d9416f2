import { decodeJwt, type JWTPayload, errors as joseErrors } from "jose";
import { DpopChecker } from "../../../gateway-verifier/src/dpop.js";
import type { Config } from "../config/load.js";
import { ApiError } from "../http/errors.js";
import {
  IdentityTokenError,
  type TrustedIssuers,
  type VerifiedIdentity,
} from "../identity/trusted_issuers.js";
import type { OwnTokenVerifier } from "../keys/own_tokens.js";
import { parseScope } from "../oauth/scope.js";
import { APPROVALS_SCOPE, approvalsResource } from "../oidc/provider.js";

/**
 * Largest `Authorization` header accepted, in bytes. Larger headers are refused as `invalid_token`
 * without being parsed (Node's own limit on all headers, 16 KiB, answers 431 beyond that).
 */
export const MAX_AUTHORIZATION_BYTES = 8 * 1024;

/** The realm in `WWW-Authenticate` challenges (RFC 6750 §3). */
export const REALM = "countersign";

/** The stable reasons the authenticator refuses a caller with (audited by the approval API). */
export type AuthRefusalReason =
  | "credentials_missing"
  | "credentials_invalid"
  | "credentials_expired"
  | "credentials_wrong_audience"
  | "credentials_stale"
  | "credentials_dpop_bound"
  | "dpop_proof_invalid"
  | "credentials_missing_scope"
  | "client_unknown"
  | "approver_not_allowed"
  | "approver_claim_missing"
  | "role_agent_required"
  | "role_approver_required"
  | "issuer_keys_unavailable"
  | "dpop_client_share_exceeded"
  | "dpop_replay_cache_full";

/** A caller of the approval API: an agent (OAuth client) or a human approver. */
export type Principal =
  | { readonly kind: "agent"; readonly clientId: string; readonly claims: JWTPayload }
  | { readonly kind: "approver"; readonly subject: string; readonly identity: VerifiedIdentity };

/** What {@link createAuthenticator} needs. */
export interface AuthenticatorDependencies {
  readonly config: Config;
  readonly ownTokens: OwnTokenVerifier;
  readonly trustedIssuers: TrustedIssuers;
  /**
   * The DPoP proof replay cache's bounds (tests make them small). Default the verifier's: 100,000
   * proofs, a tenth of them per caller.
   */
  readonly dpopReplay?: { readonly size: number; readonly perCaller: number };
}

/** The parts of an HTTP request that carry its credentials. */
export interface CredentialRequest {
  /** The `Authorization` header, if any. */
  readonly authorization: string | undefined;
  /** The `DPoP` header, if any (RFC 9449 §7.1: required with a DPoP-bound credential). */
  readonly dpop: string | undefined;
  /** The HTTP method, upper case. */
  readonly method: string;
  /** The request's path (no query): the DPoP proof's `htu` is `<issuer><path>`. */
  readonly path: string;
}

/** The credentials of a Koa request. */
export function credentialsOf(ctx: {
  get(field: string): string;
  readonly method: string;
  readonly path: string;
}): CredentialRequest {
  return {
    authorization: ctx.get("Authorization") || undefined,
    dpop: ctx.get("DPoP") || undefined,
    method: ctx.method.toUpperCase(),
    path: ctx.path,
  };
}

/**
 * Turns a request's credentials into a {@link Principal}, or throws an {@link ApiError}
 * (401, 403 for an authenticated approver without the approver claim, 503).
 */
export type Authenticator = (request: CredentialRequest) => Promise<Principal>;

function quoted(value: string): string {
  return value.replace(/["\\]/g, "");
}

/**
 * A 401 with its RFC 6750 §3 challenge. With no credentials at all the challenge carries no error
 * (RFC 6750 §3.1: "SHOULD NOT include an error code"); the JSON body still names one.
 */
function unauthorized(
  error: "invalid_request" | "invalid_token",
  description: string,
  reason: AuthRefusalReason,
): ApiError<AuthRefusalReason> {
  const challenge =
    reason === "credentials_missing"
      ? `Bearer realm="${REALM}"`
      : `Bearer realm="${REALM}", error="${error}", error_description="${quoted(description)}"`;
  return new ApiError<AuthRefusalReason>(401, error, description, reason, {
    "WWW-Authenticate": challenge,
  });
}

/** A 403 for a caller whose role does not allow the call (RFC 6750 §3.1 `insufficient_scope`). */
export function wrongRole(needed: "agent" | "approver"): ApiError<AuthRefusalReason> {
  const description =
    needed === "agent"
      ? `this call needs an agent's ${APPROVALS_SCOPE} token, not an approver's`
      : "this call needs an approver; agents may not decide approvals";
  return new ApiError<AuthRefusalReason>(403, "insufficient_scope", description, `role_${needed}_required`, {
    "WWW-Authenticate": `Bearer realm="${REALM}", error="insufficient_scope", error_description="${quoted(description)}"`,
  });
}

const IDENTITY_REASONS: Partial<Record<IdentityTokenError["reason"], AuthRefusalReason>> = {
  token_expired: "credentials_expired",
  token_too_old: "credentials_stale",
  auth_time_missing: "credentials_stale",
  audience_mismatch: "credentials_wrong_audience",
  audience_ambiguous: "credentials_wrong_audience",
  usage_not_allowed: "approver_not_allowed",
};

/** The `cnf.jkt` a credential is bound to (RFC 9449 §6.1), if any. */
function boundKey(claims: JWTPayload): string | undefined | null {
  const cnf = claims.cnf;
  if (cnf === undefined) return undefined;
  if (typeof cnf !== "object" || cnf === null) return null;
  const jkt = (cnf as { jkt?: unknown }).jkt;
  if (jkt === undefined) return undefined;
  return typeof jkt === "string" && jkt.length > 0 ? jkt : null;
}

/**
 * Builds the approval API's authenticator. The unverified `iss` only picks the verifier: this STS's
 * own issuer means an agent's `client_credentials` token (RFC 9068, audience `<issuer>/approvals`,
 * scope `approvals:request`); any other issuer means a human's JWT from a trusted issuer with usage
 * `approver`. Either way the token is then fully verified.
 */
export function createAuthenticator({
  config,
  ownTokens,
  trustedIssuers,
  dpopReplay,
}: AuthenticatorDependencies): Authenticator {
  const audience = approvalsResource(config.issuer);
  const clients = new Set(config.clients.map((client) => client.client_id));

  const dpop = new DpopChecker(
    dpopReplay ? { replayCacheSize: dpopReplay.size, replayCachePerClient: dpopReplay.perCaller } : {},
    5,
  );
  const retryAfter = { "Retry-After": String(dpop.shareRetryAfterSeconds) };

  /**
   * RFC 9449 §7.1: a credential bound to a key (`cnf.jkt`) is accepted only as `Authorization: DPoP`
   * with a proof of that key for this request; a bound credential sent as Bearer is refused, so a
   * stolen copy alone never acts. An unbound credential sent with the DPoP scheme is refused too.
   */
  function checkBinding(
    claims: JWTPayload,
    holder: string,
    token: string,
    scheme: string,
    request: CredentialRequest,
  ): void {
    const jkt = boundKey(claims);
    if (jkt === null) {
      throw unauthorized("invalid_token", "the token's cnf claim is malformed", "credentials_invalid");
    }
    if (jkt === undefined) {
      if (scheme === "dpop") {
        throw unauthorized(
          "invalid_token",
          "the token is not DPoP-bound: send it as Bearer",
          "credentials_invalid",
        );
      }
      return;
    }
    if (scheme !== "dpop" || request.dpop === undefined) {
      throw unauthorized(
        "invalid_token",
        "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof of its key",
        "credentials_dpop_bound",
      );
    }
    const reason = dpop.check({
      proof: request.dpop,
      accessToken: token,
      jkt,
      clientId: holder,
      method: request.method,
      url: `${config.issuer}${request.path}`,
      nowMs: Date.now(),
    });
    // The replay cache refuses rather than forgets a live proof: those two refusals are about load,
    // not the credential, so they are 429 and 503 with Retry-After (a client keeps its token).
    if (reason === "dpop_client_share_exceeded") {
      throw new ApiError<AuthRefusalReason>(
        429,
        "slow_down",
        "too many DPoP proofs from this caller in the proof window; retry later",
        reason,
        retryAfter,
      );
    }
    if (reason === "dpop_replay_cache_full") {
      throw new ApiError<AuthRefusalReason>(
        503,
        "temporarily_unavailable",
        "the DPoP proof replay cache is full; retry later",
        reason,
        retryAfter,
      );
    }
    if (reason !== undefined) {
      throw unauthorized(
        "invalid_token",
        `the DPoP proof is not acceptable (${reason})`,
        "dpop_proof_invalid",
      );
    }
  }

  async function authenticateAgent(token: string): Promise<Principal> {
    let claims: Awaited<ReturnType<OwnTokenVerifier["verify"]>>;
    try {
      claims = await ownTokens.verify(token, { audience });
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) {
        throw unauthorized("invalid_token", "the access token has expired", "credentials_expired");
      }
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === "aud") {
        throw unauthorized(
          "invalid_token",
          `the access token's audience is not ${audience}`,
          "credentials_wrong_audience",
        );
      }
      throw unauthorized("invalid_token", "the access token is invalid", "credentials_invalid");
    }
    if (typeof claims.scope !== "string" || !parseScope(claims.scope).includes(APPROVALS_SCOPE)) {
      // RFC 6750 §3.1: a valid token without the needed scope is 403 insufficient_scope.
      const description = `the access token lacks the ${APPROVALS_SCOPE} scope`;
      throw new ApiError<AuthRefusalReason>(
        403,
        "insufficient_scope",
        description,
        "credentials_missing_scope",
        {
          "WWW-Authenticate": `Bearer realm="${REALM}", error="insufficient_scope", error_description="${description}", scope="${APPROVALS_SCOPE}"`,
        },
      );
    }
    const clientId = claims.client_id;
    if (typeof clientId !== "string" || !clients.has(clientId)) {
      throw unauthorized("invalid_token", "the access token's client is not configured", "client_unknown");
    }
    return { kind: "agent", clientId, claims };
  }

  async function authenticateApprover(token: string): Promise<Principal> {
    try {
      const identity = await trustedIssuers.verify(token, "approver");
      return { kind: "approver", subject: identity.subject, identity };
    } catch (error) {
      if (!(error instanceof IdentityTokenError)) throw error;
      if (error.reason === "approver_claim_missing") {
        // Authenticated, but not an approver: RFC 6750 §3.1 insufficient_scope, not 401.
        const description = `${error.message}: this account may not decide approvals`;
        throw new ApiError<AuthRefusalReason>(
          403,
          "insufficient_scope",
          description,
          "approver_claim_missing",
          {
            "WWW-Authenticate": `Bearer realm="${REALM}", error="insufficient_scope", error_description="${quoted(description)}"`,
          },
        );
      }
      if (error.reason === "issuer_keys_unavailable") {
        // Fail closed, but say it is temporary: the credential may well be good.
        throw new ApiError<AuthRefusalReason>(
          503,
          "temporarily_unavailable",
          "the approver token's issuer keys could not be fetched",
          "issuer_keys_unavailable",
          { "Retry-After": "5" },
        );
      }
      throw unauthorized(
        "invalid_token",
        error.message,
        IDENTITY_REASONS[error.reason] ?? "credentials_invalid",
      );
    }
  }

  return async (request) => {
    const { authorization } = request;
    if (authorization === undefined || authorization === "") {
      throw unauthorized("invalid_request", "a Bearer token is required", "credentials_missing");
    }
    if (Buffer.byteLength(authorization) > MAX_AUTHORIZATION_BYTES) {
      throw unauthorized(
        "invalid_token",
        `the Authorization header exceeds ${MAX_AUTHORIZATION_BYTES} bytes`,
        "credentials_invalid",
      );
    }
    // RFC 6750 §2.1 / RFC 9449 §7.1: "Bearer" or "DPoP" 1*SP token68; the scheme is case-insensitive.
    const match = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
    if (!match) {
      if (!/^(Bearer|DPoP)(\s|$)/i.test(authorization)) {
        throw unauthorized("invalid_request", "a Bearer token is required", "credentials_missing");
      }
      throw unauthorized("invalid_token", "the Bearer token is malformed", "credentials_invalid");
    }
    const scheme = (match[1] as string).toLowerCase();
    const token = match[2] as string;
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw unauthorized("invalid_token", "the Bearer token is not a JWT", "credentials_invalid");
    }
    const principal =
      iss === config.issuer ? await authenticateAgent(token) : await authenticateApprover(token);
    // Whose share of the DPoP replay cache the proof counts against: one agent, or one approver.
    const holder =
      principal.kind === "agent"
        ? `agent ${principal.clientId}`
        : `approver ${principal.identity.issuer.length}:${principal.identity.issuer}${principal.identity.subject}`;
    checkBinding(
      principal.kind === "agent" ? principal.claims : principal.identity.claims,
      holder,
      token,
      scheme,
      request,
    );
    return principal;
  };
}
