import { type JWTPayload, errors as joseErrors } from "jose";
import { IdentityTokenError, type TokenUsage } from "../identity/trusted_issuers.js";
import { parseScope } from "../oauth/scope.js";
import { identityTokenReason, type Refusal, refuse } from "../oidc/refusal.js";
import type { StsServices } from "../services.js";
import { TOKEN_TYPE } from "./parameters.js";
import { actDepth } from "./rules.js";
import type { VerifiedTokenCache } from "./verified_token_cache.js";

/** The RFC 8693 §4.1 `act` claim: the acting party, with prior actors nested inside. */
export interface ActClaim {
  sub: string;
  iss?: string;
  act?: ActClaim;
  [claim: string]: unknown;
}

/** Bounds of a subject token this STS issued: an exchange may only narrow them. */
export interface IssuedTokenBounds {
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly approvalId: string;
  readonly clientId: string;
  /** Expiry, seconds since the epoch. */
  readonly exp: number;
  /** DPoP key thumbprint the subject token is bound to (`cnf.jkt`), if any. */
  readonly jkt: string | undefined;
}

/** Who the new token is about. */
export interface SubjectIdentity {
  readonly sub: string;
  readonly issuer: string;
  /** Delegation chain the subject token already carried (RFC 8693 §4.1). */
  readonly act: ActClaim | undefined;
  /** Set when the subject token was issued by this STS. */
  readonly bounds: IssuedTokenBounds | undefined;
  /** The subject token's `iat` (seconds), when it has one. */
  readonly issuedAt: number | undefined;
}

/** Largest `act` nesting accepted from a presented token. */
export const MAX_ACT_DEPTH = 8;

/** What the validators need: this STS's issuer and the two token verifiers. */
export type TokenValidatorDependencies = Pick<StsServices, "config" | "trustedIssuers" | "ownTokens">;

function readAct(claims: JWTPayload, label: "subject" | "actor"): ActClaim | undefined {
  const act = claims.act;
  if (act === undefined) return undefined;
  if (typeof act !== "object" || act === null || typeof (act as ActClaim).sub !== "string") {
    throw refuse(
      label === "subject" ? "subject_act_invalid" : "actor_act_invalid",
      `the ${label} token's act claim is malformed`,
    );
  }
  if (actDepth(act, MAX_ACT_DEPTH) > MAX_ACT_DEPTH) {
    throw refuse(
      label === "subject" ? "subject_act_too_deep" : "actor_act_too_deep",
      `the ${label} token's delegation chain is too long`,
    );
  }
  return act as ActClaim;
}

function fromIdentityError(error: unknown, label: "subject" | "actor"): Refusal {
  if (error instanceof IdentityTokenError)
    return refuse(identityTokenReason(label, error.reason), error.message);
  throw error;
}

/**
 * Validates the subject token: an access token this STS issued (verified against its own keys; the
 * exchange may then only narrow it), or a JWT from a trusted issuer with usage `subject` (its
 * verification reused from `cache` while the same token is presented again).
 */
export async function validateSubjectToken(
  services: TokenValidatorDependencies,
  token: string,
  tokenType: string,
  cache?: VerifiedTokenCache,
): Promise<SubjectIdentity> {
  if (peekIssuer(token) !== services.config.issuer) {
    try {
      const usage: TokenUsage = "subject";
      const verify = () => services.trustedIssuers.verify(token, usage);
      const identity = await (cache ? cache.verify(token, usage, verify) : verify());
      const act = readAct(identity.claims, "subject");
      // An `act` claim widens trust (it names who acted before): it counts only from an issuer entry
      // trusted for actor tokens.
      if (act !== undefined && !identity.usages.includes("actor")) {
        throw refuse(
          "subject_act_untrusted",
          "the subject token carries an act claim, but its issuer is not trusted for actor tokens",
        );
      }
      return {
        sub: identity.subject,
        issuer: identity.issuer,
        act,
        bounds: undefined,
        issuedAt: identity.claims.iat,
      };
    } catch (error) {
      throw fromIdentityError(error, "subject");
    }
  }
  if (tokenType !== TOKEN_TYPE.accessToken) {
    throw refuse(
      "subject_token_type_mismatch",
      "a token issued by this STS must be presented as an access_token",
    );
  }
  let claims: JWTPayload;
  try {
    claims = await services.ownTokens.verify(token, {});
  } catch (error) {
    const reason = error instanceof joseErrors.JWTExpired ? "subject_token_expired" : "subject_token_invalid";
    throw refuse(
      reason,
      reason === "subject_token_expired" ? "the subject token has expired" : "the subject token is invalid",
    );
  }
  const approvalId = claims.approval_id;
  if (typeof approvalId !== "string" || typeof claims.sub !== "string" || typeof claims.aud !== "string") {
    // E.g. an approval API credential: it is not a delegation of anybody's authority.
    throw refuse("subject_token_not_exchangeable", "the subject token cannot be exchanged");
  }
  return {
    sub: claims.sub,
    issuer: services.config.issuer,
    act: readAct(claims, "subject"),
    bounds: {
      audience: claims.aud,
      scopes: parseScope(typeof claims.scope === "string" ? claims.scope : ""),
      approvalId,
      clientId: String(claims.client_id),
      exp: claims.exp as number,
      jkt:
        typeof (claims.cnf as { jkt?: unknown } | undefined)?.jkt === "string"
          ? (claims.cnf as { jkt: string }).jkt
          : undefined,
    },
    issuedAt: claims.iat,
  };
}

/** Validates the actor token (a JWT from a trusted issuer with usage `actor`) and returns it as `act`. */
export async function validateActorToken(
  services: TokenValidatorDependencies,
  token: string,
  cache?: VerifiedTokenCache,
): Promise<ActClaim> {
  try {
    const verify = () => services.trustedIssuers.verify(token, "actor");
    const identity = await (cache ? cache.verify(token, "actor", verify) : verify());
    const prior = readAct(identity.claims, "actor");
    return { sub: identity.subject, iss: identity.issuer, ...(prior ? { act: prior } : {}) };
  } catch (error) {
    throw fromIdentityError(error, "actor");
  }
}

/** Reads `iss` without verifying anything, only to route the token to its validator. */
function peekIssuer(token: string): string | undefined {
  const payload = token.split(".")[1];
  if (!payload || payload.length > 16 * 1024) return undefined;
  try {
    const iss = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { iss?: unknown }).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}
