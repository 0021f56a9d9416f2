import { decodeProtectedHeader, type JWTPayload } from "jose";
import { isStorableText } from "../db/text.js";
import {
  CLOCK_TOLERANCE_SECONDS,
  IdentityTokenError,
  type IdentityTokenReason,
  isUsableSubject,
  MAX_IDENTITY_TOKEN_BYTES,
  type TrustedIssuers,
} from "../identity/trusted_issuers.js";
import { parseScope } from "../oauth/scope.js";
import { refuse } from "../oidc/refusal.js";
import type { TokenReason } from "../reasons.js";

/** The JWT `typ` of an Identity Assertion JWT Authorization Grant (draft-ietf-oauth-identity-assertion-authz-grant). */
export const ID_JAG_TYP = "oauth-id-jag+jwt";

/** Most resource indicators an ID-JAG's `resource` claim may name. */
const MAX_ASSERTION_RESOURCES = 16;

/** A verified ID-JAG, with the claims the grant acts on. */
export interface IdJag {
  /** The IdP (`iss`), as configured. */
  readonly issuer: string;
  /** The user (`sub`) at that IdP. */
  readonly subject: string;
  readonly jti: string;
  /** Epoch seconds. */
  readonly iat: number;
  /** Epoch seconds. */
  readonly exp: number;
  /** The resource indicators the assertion names (`resource`; RFC 8707), none when absent. */
  readonly resources: readonly string[];
  /** The scopes the assertion names (`scope`), undefined when absent. */
  readonly scopes: readonly string[] | undefined;
}

/**
 * RFC 8725 §3.11 / RFC 7515 §4.1.9: `typ` compares case-insensitively, and an `application/` prefix
 * may be left out.
 */
function isIdJagType(typ: unknown): boolean {
  if (typeof typ !== "string") return false;
  const lower = typ.toLowerCase();
  return (lower.startsWith("application/") ? lower.slice("application/".length) : lower) === ID_JAG_TYP;
}

/** The `id_jag_*` reason of each identity-token refusal. */
const ID_JAG_REASONS = {
  token_malformed: "id_jag_malformed",
  token_too_large: "id_jag_too_large",
  issuer_untrusted: "id_jag_issuer_untrusted",
  usage_not_allowed: "id_jag_usage_not_allowed",
  algorithm_not_allowed: "id_jag_algorithm_not_allowed",
  signature_invalid: "id_jag_signature_invalid",
  audience_mismatch: "id_jag_audience_mismatch",
  audience_ambiguous: "id_jag_audience_ambiguous",
  token_expired: "id_jag_expired",
  token_not_yet_valid: "id_jag_not_yet_valid",
  token_too_old: "id_jag_too_old",
  // Approver-only checks: an id_jag entry has no approver usage, so these never apply.
  auth_time_missing: "id_jag_claim_missing",
  approver_claim_missing: "id_jag_claim_missing",
  claim_missing: "id_jag_claim_missing",
  issuer_keys_unavailable: "id_jag_issuer_keys_unavailable",
} as const satisfies Record<IdentityTokenReason, TokenReason>;

/** A string claim an identifier can be: 1 to 255 characters Postgres can store. */
function isIdentifier(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= 255 && isStorableText(value);
}

function claimMissing(description: string): Error {
  return refuse("id_jag_claim_missing", description);
}

/** The assertion's `resource` claim: one URI or an array of them (draft §3). */
function resourcesOf(claims: JWTPayload): string[] {
  const value = claims.resource;
  if (value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  if (
    list.length > MAX_ASSERTION_RESOURCES ||
    !list.every((item): item is string => typeof item === "string" && item.length > 0 && item.length <= 2048)
  ) {
    throw claimMissing(
      `the assertion's resource claim must be a URI or an array of at most ${MAX_ASSERTION_RESOURCES} URIs`,
    );
  }
  return list;
}

/**
 * Verifies an ID-JAG presented by `clientId` (draft-ietf-oauth-identity-assertion-authz-grant §4.4 and
 * RFC 7523 §3), in order: size; `typ` `oauth-id-jag+jwt`; a trusted issuer entry with usage `id_jag`
 * whose audience (this STS's issuer) the token carries; signature with an accepted algorithm (never
 * `none`); `exp`, `iat` not in the future and within the entry's `max_token_age_seconds` (default 300),
 * `exp` at most that long after `iat`; `sub`, `jti`; `client_id` = the authenticated client. Every
 * refusal is `invalid_grant` with an `id_jag_*` reason (503 when the issuer's keys cannot be fetched).
 * Replay (`jti`) is the caller's: a `jti` is spent only by a token issued.
 */
export async function verifyIdJag(
  trustedIssuers: TrustedIssuers,
  assertion: string,
  clientId: string,
): Promise<IdJag> {
  if (assertion.length > MAX_IDENTITY_TOKEN_BYTES) {
    throw refuse("id_jag_too_large", `the assertion exceeds ${MAX_IDENTITY_TOKEN_BYTES} bytes`);
  }
  let typ: unknown;
  try {
    ({ typ } = decodeProtectedHeader(assertion));
  } catch {
    throw refuse("id_jag_malformed", "the assertion is not a JWT");
  }
  if (!isIdJagType(typ)) {
    throw refuse("id_jag_type_invalid", `the assertion's typ header must be ${ID_JAG_TYP}`);
  }
  let verified: Awaited<ReturnType<TrustedIssuers["verify"]>>;
  try {
    verified = await trustedIssuers.verify(assertion, "id_jag");
  } catch (error) {
    if (error instanceof IdentityTokenError) {
      throw refuse(ID_JAG_REASONS[error.reason], error.message.replace("the id_jag token", "the assertion"));
    }
    throw error;
  }
  const { claims } = verified;
  // The verifier requires exp, and iat under the entry's age bound, which id_jag entries always have.
  const exp = claims.exp as number;
  const iat = claims.iat as number;
  const maxAge = verified.maxAgeSeconds as number;
  if (exp - iat > maxAge + CLOCK_TOLERANCE_SECONDS) {
    throw refuse(
      "id_jag_lifetime_too_long",
      `the assertion's exp lies more than ${maxAge} seconds after its iat: ID-JAGs are short-lived`,
    );
  }
  if (!isIdentifier(claims.jti)) throw claimMissing("the assertion has no usable jti claim");
  if (!isIdentifier(claims.client_id)) throw claimMissing("the assertion has no usable client_id claim");
  if (!isUsableSubject(verified.subject)) throw claimMissing("the assertion has no usable sub claim");
  if (claims.client_id !== clientId) {
    throw refuse("id_jag_client_mismatch", "the assertion was issued to another client (client_id)");
  }
  if (claims.scope !== undefined && typeof claims.scope !== "string") {
    throw claimMissing("the assertion's scope claim must be a space-separated string");
  }
  return {
    issuer: verified.issuer,
    subject: verified.subject,
    jti: claims.jti,
    iat,
    exp,
    resources: resourcesOf(claims),
    scopes: typeof claims.scope === "string" ? parseScope(claims.scope) : undefined,
  };
}
