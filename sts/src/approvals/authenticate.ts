import { decodeJwt, errors as joseErrors } from "jose";
import type { Config } from "../config/load.js";
import {
  IdentityTokenError,
  type TrustedIssuers,
  type VerifiedIdentity,
} from "../identity/trusted_issuers.js";
import type { OwnTokenVerifier } from "../keys/own_tokens.js";
import { APPROVALS_SCOPE, approvalsResource } from "../oidc/provider.js";
import { ApprovalError, type ApprovalRefusalReason } from "./errors.js";
import { parseScope } from "./model.js";

/**
 * Largest `Authorization` header accepted, in bytes. Larger headers are refused as `invalid_token`
 * without being parsed (Node's own limit on all headers, 16 KiB, answers 431 beyond that).
 */
export const MAX_AUTHORIZATION_BYTES = 8 * 1024;

/** The realm in `WWW-Authenticate` challenges (RFC 6750 §3). */
export const REALM = "countersign";

/** A caller of the approval API: an agent (OAuth client) or a human approver. */
export type Principal =
  | { readonly kind: "agent"; readonly clientId: string }
  | { readonly kind: "approver"; readonly subject: string; readonly identity: VerifiedIdentity };

/** What {@link createAuthenticator} needs. */
export interface AuthenticatorDependencies {
  readonly config: Config;
  readonly ownTokens: OwnTokenVerifier;
  readonly trustedIssuers: TrustedIssuers;
}

/** Turns an `Authorization` header into a {@link Principal}, or throws an {@link ApprovalError} (401/503). */
export type Authenticator = (authorization: string | undefined) => Promise<Principal>;

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
  reason: ApprovalRefusalReason,
): ApprovalError {
  const challenge =
    reason === "credentials_missing"
      ? `Bearer realm="${REALM}"`
      : `Bearer realm="${REALM}", error="${error}", error_description="${quoted(description)}"`;
  return new ApprovalError(401, error, description, reason, { headers: { "WWW-Authenticate": challenge } });
}

/** A 403 for a caller whose role does not allow the call (RFC 6750 §3.1 `insufficient_scope`). */
export function wrongRole(needed: "agent" | "approver"): ApprovalError {
  const description =
    needed === "agent"
      ? `this call needs an agent's ${APPROVALS_SCOPE} token, not an approver's`
      : "this call needs an approver; agents may not decide approvals";
  return new ApprovalError(403, "insufficient_scope", description, `role_${needed}_required`, {
    headers: {
      "WWW-Authenticate": `Bearer realm="${REALM}", error="insufficient_scope", error_description="${quoted(description)}"`,
    },
  });
}

const IDENTITY_REASONS: Partial<Record<IdentityTokenError["reason"], ApprovalRefusalReason>> = {
  token_expired: "credentials_expired",
  audience_mismatch: "credentials_wrong_audience",
  usage_not_allowed: "approver_not_allowed",
  approver_claim_missing: "approver_not_allowed",
};

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
}: AuthenticatorDependencies): Authenticator {
  const audience = approvalsResource(config.issuer);
  const clients = new Set(config.clients.map((client) => client.client_id));

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
      throw new ApprovalError(403, "insufficient_scope", description, "credentials_missing_scope", {
        headers: {
          "WWW-Authenticate": `Bearer realm="${REALM}", error="insufficient_scope", error_description="${description}", scope="${APPROVALS_SCOPE}"`,
        },
      });
    }
    const clientId = claims.client_id;
    if (typeof clientId !== "string" || !clients.has(clientId)) {
      throw unauthorized("invalid_token", "the access token's client is not configured", "client_unknown");
    }
    return { kind: "agent", clientId };
  }

  async function authenticateApprover(token: string): Promise<Principal> {
    try {
      const identity = await trustedIssuers.verify(token, "approver");
      return { kind: "approver", subject: identity.subject, identity };
    } catch (error) {
      if (!(error instanceof IdentityTokenError)) throw error;
      if (error.reason === "jwks_unavailable") {
        // Fail closed, but say it is temporary: the credential may well be good.
        throw new ApprovalError(
          503,
          "temporarily_unavailable",
          "the approver token's issuer keys could not be fetched",
          "issuer_keys_unavailable",
          { headers: { "Retry-After": "5" } },
        );
      }
      throw unauthorized(
        "invalid_token",
        error.message,
        IDENTITY_REASONS[error.reason] ?? "credentials_invalid",
      );
    }
  }

  return async (authorization) => {
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
    // RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive.
    const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
    if (!match) {
      if (!/^Bearer(\s|$)/i.test(authorization)) {
        throw unauthorized("invalid_request", "a Bearer token is required", "credentials_missing");
      }
      throw unauthorized("invalid_token", "the Bearer token is malformed", "credentials_invalid");
    }
    const token = match[1] as string;
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw unauthorized("invalid_token", "the Bearer token is not a JWT", "credentials_invalid");
    }
    return iss === config.issuer ? authenticateAgent(token) : authenticateApprover(token);
  };
}
