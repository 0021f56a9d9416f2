/**
 * Every stable reason code the STS gives a refusal, in one table: the machine code written to the
 * audit trail and the log line behind each wire error. Codes read subject first, then what is wrong
 * with it (`approval_revoked`, `signature_invalid`, `policy_denied`). They are part of the public
 * reference (docs/reference.md, checked against this table by a test): safe to alert on, never
 * reused with another meaning.
 *
 * `token` is the wire answer at `POST /token`; `approvals` the one at the approval API. A code used on
 * both names both.
 */

/** An OAuth-style wire error: the HTTP status and the `error` member. */
export interface WireError {
  readonly status: number;
  readonly error: string;
}

interface ReasonEntry {
  readonly token?: WireError;
  readonly approvals?: WireError;
  /** What happened, for operators. */
  readonly meaning: string;
}

const invalidRequest = { status: 400, error: "invalid_request" } as const;
const invalidGrant = { status: 400, error: "invalid_grant" } as const;
const invalidTarget = { status: 400, error: "invalid_target" } as const;
const invalidScope = { status: 400, error: "invalid_scope" } as const;
const unavailable = { status: 503, error: "temporarily_unavailable" } as const;
const invalidToken = { status: 401, error: "invalid_token" } as const;
const insufficientScope = { status: 403, error: "insufficient_scope" } as const;
const accessDenied = { status: 403, error: "access_denied" } as const;

/** Subject- and actor-token reasons share their meanings; only the token named differs. */
function identityReasons<const P extends "subject" | "actor">(prefix: P) {
  const entry = (meaning: string, wire: WireError = invalidGrant): ReasonEntry => ({
    token: wire,
    meaning: `the ${prefix} token ${meaning}`,
  });
  return {
    [`${prefix}_token_malformed`]: entry("is not a JWT"),
    [`${prefix}_token_too_large`]: entry("is larger than 16 KiB"),
    [`${prefix}_token_issuer_untrusted`]: entry("comes from an issuer that is not trusted"),
    [`${prefix}_token_audience_mismatch`]: entry("carries no audience of its issuer's entries"),
    [`${prefix}_token_audience_ambiguous`]: entry("carries the audiences of several of its issuer's entries"),
    [`${prefix}_token_usage_not_allowed`]: entry(`comes through an entry not trusted for ${prefix} tokens`),
    [`${prefix}_token_algorithm_not_allowed`]: entry("is signed with an algorithm that is not accepted"),
    [`${prefix}_token_signature_invalid`]: entry("has a signature that does not verify"),
    [`${prefix}_token_expired`]: entry("has expired"),
    [`${prefix}_token_not_yet_valid`]: entry("has nbf, iat or auth_time in the future"),
    [`${prefix}_token_too_old`]: entry("was issued longer ago than its entry's max_token_age_seconds"),
    [`${prefix}_token_auth_time_missing`]: entry("has no auth_time, which its entry requires"),
    [`${prefix}_token_claim_missing`]: entry(
      "lacks a required claim (exp, a usable sub, iat under an age bound)",
    ),
    [`${prefix}_token_approver_claim_missing`]: entry("lacks its entry's approver claim"),
    [`${prefix}_token_issuer_keys_unavailable`]: entry(
      "could not be checked: its issuer's keys could not be fetched",
      unavailable,
    ),
    [`${prefix}_act_invalid`]: entry("has a malformed act claim"),
    [`${prefix}_act_too_deep`]: entry("has a delegation chain (act) nested deeper than 8"),
  } as { [K in `${P}_${IdentitySuffix}`]: { readonly token: WireError; readonly meaning: string } };
}

type IdentitySuffix =
  | "token_malformed"
  | "token_too_large"
  | "token_issuer_untrusted"
  | "token_audience_mismatch"
  | "token_audience_ambiguous"
  | "token_usage_not_allowed"
  | "token_algorithm_not_allowed"
  | "token_signature_invalid"
  | "token_expired"
  | "token_not_yet_valid"
  | "token_too_old"
  | "token_auth_time_missing"
  | "token_claim_missing"
  | "token_approver_claim_missing"
  | "token_issuer_keys_unavailable"
  | "act_invalid"
  | "act_too_deep";

/** The table. Keys are the reason codes. */
export const REASONS = {
  // The token endpoint: the request itself (RFC 8693 §2.1).
  parameter_missing: { token: invalidRequest, meaning: "a required parameter is missing" },
  parameter_repeated: {
    token: invalidRequest,
    meaning: "a parameter that must appear once appears several times",
  },
  parameter_too_large: {
    token: invalidRequest,
    meaning: "a token or authorization_details parameter is too large",
  },
  token_type_unsupported: {
    token: invalidRequest,
    meaning: "subject_token_type, actor_token_type or requested_token_type is not supported",
  },
  actor_token_type_missing: {
    token: invalidRequest,
    meaning: "actor_token and actor_token_type were not given together",
  },
  authorization_details_invalid: {
    token: invalidRequest,
    meaning: "authorization_details is not one agent_task with an approval_id",
  },
  target_invalid: { token: invalidTarget, meaning: "not exactly one resource or audience was named" },
  // The token endpoint: what the request asks for.
  resource_unknown: {
    token: invalidTarget,
    approvals: invalidTarget,
    meaning: "the resource is not configured",
  },
  resource_not_approved: { token: invalidTarget, meaning: "the approval is for another resource" },
  scope_not_approved: {
    token: invalidScope,
    meaning: "a requested scope lies outside the approval and the resource",
  },
  approval_not_found: {
    token: invalidGrant,
    meaning: "no such approval for this client (another client's approval answers the same)",
  },
  approval_pending: {
    token: { status: 400, error: "authorization_pending" },
    meaning: "the approval still waits for a human decision",
  },
  approval_denied: { token: invalidGrant, meaning: "the approval was denied" },
  approval_revoked: { token: invalidGrant, meaning: "the approval was revoked" },
  approval_expired: { token: invalidGrant, meaning: "the approval has expired" },
  approval_used_up: { token: invalidGrant, meaning: "the approval's token budget (max_tokens) is used up" },
  approval_changed: {
    token: unavailable,
    meaning: "the approval changed while the exchange was decided; a retry decides on the new terms",
  },
  // The token endpoint: MCP clients (client_credentials with an MCP resource, ID-JAG redemption).
  scope_missing: {
    token: invalidScope,
    meaning: "the request names no scope and the resource has no default_scopes",
  },
  scope_unknown: { token: invalidScope, meaning: "a requested scope is not one of the resource's scopes" },
  approval_requested: {
    token: { status: 400, error: "authorization_pending" },
    meaning:
      "no approved approval for this (client, resource, scope, and for an ID-JAG the subject) yet: a pending one was recorded, or already waits (error_description and approval_id name it)",
  },
  approval_cooldown: {
    token: { status: 400, error: "access_denied" },
    meaning:
      "a human denied or revoked the approval for this (client, resource, scope, and for an ID-JAG the subject) less than mcp.request_cooldown_seconds ago; no new one is recorded until then",
  },
  // The token endpoint: the jwt-bearer grant redeeming an ID-JAG (RFC 7523 §3.1: invalid_grant).
  id_jag_malformed: { token: invalidGrant, meaning: "the assertion is not a JWT" },
  id_jag_too_large: { token: invalidGrant, meaning: "the assertion is larger than 16 KiB" },
  id_jag_type_invalid: {
    token: invalidGrant,
    meaning: "the assertion's typ header is not oauth-id-jag+jwt (compared case-insensitively)",
  },
  id_jag_issuer_untrusted: {
    token: invalidGrant,
    meaning: "the assertion comes from an issuer that is not trusted",
  },
  id_jag_audience_mismatch: {
    token: invalidGrant,
    meaning: "the assertion's aud is not this STS's issuer (no id_jag entry of its issuer accepts it)",
  },
  id_jag_audience_ambiguous: {
    token: invalidGrant,
    meaning: "the assertion carries the audiences of several of its issuer's entries",
  },
  id_jag_usage_not_allowed: {
    token: invalidGrant,
    meaning:
      "the assertion comes through an entry not trusted for id_jag (e.g. one trusted for subject tokens)",
  },
  id_jag_algorithm_not_allowed: {
    token: invalidGrant,
    meaning: "the assertion is signed with an algorithm that is not accepted (never none or HMAC)",
  },
  id_jag_signature_invalid: { token: invalidGrant, meaning: "the assertion's signature does not verify" },
  id_jag_expired: { token: invalidGrant, meaning: "the assertion has expired" },
  id_jag_not_yet_valid: { token: invalidGrant, meaning: "the assertion has nbf or iat in the future" },
  id_jag_too_old: {
    token: invalidGrant,
    meaning: "the assertion was issued longer ago than its entry's max_token_age_seconds (default 300)",
  },
  id_jag_lifetime_too_long: {
    token: invalidGrant,
    meaning: "the assertion's exp lies further after its iat than its entry's max_token_age_seconds",
  },
  id_jag_claim_missing: {
    token: invalidGrant,
    meaning:
      "the assertion lacks a required claim (exp, iat, jti, client_id, a usable sub) or one is malformed",
  },
  id_jag_client_mismatch: {
    token: invalidGrant,
    meaning: "the assertion's client_id is not the authenticated client",
  },
  id_jag_replayed: {
    token: invalidGrant,
    meaning: "a token was already issued for the assertion's (iss, jti)",
  },
  id_jag_resource_mismatch: {
    token: invalidTarget,
    meaning: "the request's resource is not one the assertion names, or neither names exactly one",
  },
  id_jag_scope_exceeded: {
    token: invalidScope,
    meaning: "the request's scope is not within the assertion's scope",
  },
  id_jag_issuer_keys_unavailable: {
    token: unavailable,
    meaning: "the assertion could not be checked: its issuer's keys could not be fetched",
  },
  subject_mismatch: {
    token: invalidGrant,
    meaning: "the subject token's (issuer, sub) is not the approval's subject",
  },
  subject_act_untrusted: {
    token: invalidGrant,
    meaning: "the subject token carries act, but its issuer is not trusted for actor tokens",
  },
  subject_token_type_mismatch: {
    token: invalidRequest,
    meaning: "a token this STS issued was not presented as an access_token",
  },
  subject_token_invalid: { token: invalidGrant, meaning: "a token this STS issued does not verify" },
  subject_token_not_exchangeable: {
    token: invalidGrant,
    meaning: "a token this STS issued that delegates nothing (e.g. an approval API credential)",
  },
  subject_token_other_approval: {
    token: invalidGrant,
    meaning: "the subject token belongs to another approval or client",
  },
  subject_token_other_resource: {
    token: invalidTarget,
    meaning: "the subject token is for another resource",
  },
  subject_token_dpop_key_mismatch: {
    token: invalidGrant,
    meaning: "the subject token is DPoP-bound and the request has no proof of its key",
  },
  ...identityReasons("subject"),
  ...identityReasons("actor"),
  delegation_too_deep: {
    token: invalidGrant,
    meaning: "the act chain would exceed tokens.max_delegation_depth",
  },
  token_too_large: {
    token: invalidGrant,
    meaning: "the access token would exceed 8192 bytes; refused before the budget is taken",
  },
  dpop_proof_replayed: { token: invalidGrant, meaning: "the DPoP proof was used before" },
  policy_denied: {
    token: invalidGrant,
    approvals: accessDenied,
    meaning: "a Cedar policy forbids it (the description names the policy), or no policy permits it",
  },
  policy_error: {
    approvals: accessDenied,
    meaning: "the policies could not be evaluated; refused (fail closed)",
  },
  rate_limited: {
    token: { status: 429, error: "slow_down" },
    meaning: "an issuance rate limit (per agent or per approval) refused; Retry-After says when to retry",
  },
  issuance_busy: {
    token: unavailable,
    meaning: "too many of this agent's token requests wait for the database; retry after a second",
  },
  rate_limit_store_unavailable: {
    token: unavailable,
    meaning: "the issuance limiter's store is unreachable (fail closed)",
  },
  database_unavailable: {
    token: unavailable,
    approvals: unavailable,
    meaning: "the database is unreachable (fail closed)",
  },
  // The approval API: credentials.
  credentials_missing: { approvals: { status: 401, error: "invalid_request" }, meaning: "no Bearer token" },
  credentials_invalid: { approvals: invalidToken, meaning: "a malformed, badly signed or unknown token" },
  credentials_expired: { approvals: invalidToken, meaning: "the token has expired" },
  credentials_stale: {
    approvals: invalidToken,
    meaning:
      "an approver token older than approver_max_age_seconds (iat or auth_time), or without a required auth_time",
  },
  credentials_wrong_audience: {
    approvals: invalidToken,
    meaning: "the token's audience is wrong or ambiguous",
  },
  credentials_dpop_bound: {
    approvals: invalidToken,
    meaning: "a DPoP-bound token sent as Bearer or without a DPoP proof",
  },
  dpop_proof_invalid: {
    approvals: invalidToken,
    meaning: "the DPoP proof does not fit the token or the request",
  },
  dpop_client_share_exceeded: {
    approvals: { status: 429, error: "slow_down" },
    meaning:
      "the caller's DPoP proofs fill its share of the proof replay cache (a tenth); Retry-After says when they have expired",
  },
  dpop_replay_cache_full: {
    approvals: unavailable,
    meaning: "the DPoP proof replay cache is full of unexpired proofs (fail closed); Retry-After",
  },
  credentials_missing_scope: {
    approvals: insufficientScope,
    meaning: "an agent token without approvals:request",
  },
  client_unknown: { approvals: invalidToken, meaning: "the agent token's client is not configured" },
  approver_not_allowed: { approvals: invalidToken, meaning: "the token is not trusted for approver use" },
  approver_claim_missing: {
    approvals: insufficientScope,
    meaning: "an approver-audience token without the entry's approver_claim",
  },
  role_agent_required: { approvals: insufficientScope, meaning: "an approver called an agent's endpoint" },
  role_approver_required: { approvals: insufficientScope, meaning: "an agent called an approver's endpoint" },
  issuer_keys_unavailable: {
    approvals: unavailable,
    meaning: "the approver token's issuer keys could not be fetched",
  },
  // The approval API: the request.
  body_invalid: { approvals: invalidRequest, meaning: "the JSON body or a query parameter is invalid" },
  call_max_tokens_conflict: {
    approvals: invalidRequest,
    meaning:
      "a request binding one call (call) names a max_tokens other than 1: a call approval mints one token",
  },
  cursor_invalid: { approvals: invalidRequest, meaning: "the list cursor is not one this API returned" },
  body_too_large: {
    approvals: { status: 413, error: "invalid_request" },
    meaning: "the body is larger than allowed",
  },
  content_type_unsupported: {
    approvals: { status: 415, error: "invalid_request" },
    meaning: "the body is not application/json",
  },
  scope_invalid: { approvals: invalidScope, meaning: "a scope is not one of the resource's" },
  not_found: { approvals: { status: 404, error: "not_found" }, meaning: "no such approval" },
  not_owner: {
    approvals: { status: 404, error: "not_found" },
    meaning: "another agent's approval (answered like a missing one)",
  },
  not_narrowing: {
    approvals: invalidRequest,
    meaning: "an approver tried to widen what the agent asked for",
  },
  already_expired: {
    approvals: { status: 409, error: "invalid_state" },
    meaning: "the approval has expired",
  },
  ttl_elapsed: { approvals: invalidRequest, meaning: "the narrowed lifetime has already elapsed" },
  state_conflict: {
    approvals: { status: 409, error: "invalid_state" },
    meaning: "the approval is not in a state that allows the decision",
  },
  // The approval API: bounds per agent.
  request_rate_limited: {
    approvals: { status: 429, error: "slow_down" },
    meaning:
      "the agent called POST /approvals faster than approvals.request_rate_limit; Retry-After says when to retry",
  },
  pending_cap_reached: {
    token: { status: 429, error: "slow_down" },
    approvals: { status: 429, error: "too_many_pending" },
    meaning:
      "the agent already has approvals.max_pending_per_agent pending approvals (asked at POST /approvals, or by a token request that would record one); Retry-After says when to retry",
  },
} as const satisfies Record<string, ReasonEntry>;

/** A reason code of the STS. */
export type StsReason = keyof typeof REASONS;

/** The reason codes of the token endpoint. */
export type TokenReason = {
  [K in StsReason]: (typeof REASONS)[K] extends { token: WireError } ? K : never;
}[StsReason];

/** The reason codes of the approval API. */
export type ApprovalReason = {
  [K in StsReason]: (typeof REASONS)[K] extends { approvals: WireError } ? K : never;
}[StsReason];
