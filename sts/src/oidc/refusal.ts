import { errors } from "oidc-provider";
import type { IdentityTokenReason } from "../identity/trusted_issuers.js";
import { REASONS, type TokenReason } from "../reasons.js";

/**
 * A token endpoint refusal: an oidc-provider wire error plus its stable reason code (sts/src/reasons.ts)
 * and, when it is about one approval the client may know of, that approval's id.
 */
export type Refusal = InstanceType<typeof errors.OIDCProviderError> & {
  reason: TokenReason;
  approvalId?: string;
};

type ErrorFactory = (description: string) => InstanceType<typeof errors.OIDCProviderError>;

/** oidc-provider's error for each wire `error` the token endpoint answers. */
const ERROR_CLASSES: Record<string, ErrorFactory> = {
  invalid_request: (description) => new errors.InvalidRequest(description),
  invalid_grant: (description) => new errors.InvalidGrant(description),
  invalid_target: (description) => new errors.InvalidTarget(description),
  // No `scope` member in the answer: the description names the scopes outside the approval.
  invalid_scope: (description) => new errors.InvalidScope(description, undefined as unknown as string),
  authorization_pending: (description) => new errors.AuthorizationPending(description),
  access_denied: (description) => new errors.AccessDenied(description),
  slow_down: (description) => new errors.SlowDown(description),
  temporarily_unavailable: (description) => new errors.TemporarilyUnavailable(description),
};

/**
 * The refusal for `reason`, with the wire status and `error` the reason table gives it, and
 * `description` as its `error_description`.
 */
export function refuse(reason: TokenReason, description: string): Refusal {
  const wire = REASONS[reason].token;
  const create = ERROR_CLASSES[wire.error];
  if (create === undefined) throw new TypeError(`no error class for ${wire.error}`);
  // Some oidc-provider errors keep a fixed error_description and put the argument in error_detail:
  // the reference wants the specific description on the wire.
  const error = Object.assign(create(description), { reason, error_description: description });
  if (error.status !== wire.status)
    Object.assign(error, { status: wire.status, statusCode: wire.status, expose: true });
  return error;
}

/**
 * Extra members of a token endpoint error answer, per request: oidc-provider renders only `error` and
 * `error_description`, so the provider's outermost middleware adds these (e.g. `approval_id`).
 */
const ERROR_MEMBERS = new WeakMap<object, Readonly<Record<string, string>>>();

/** Adds `members` to the error answer of the request of `ctx`. */
export function setErrorMembers(ctx: object, members: Readonly<Record<string, string>>): void {
  ERROR_MEMBERS.set(ctx, members);
}

/** The extra error members set for the request of `ctx`, if any. */
export function errorMembersOf(ctx: object): Readonly<Record<string, string>> | undefined {
  return ERROR_MEMBERS.get(ctx);
}

/** 503 `temporarily_unavailable`: fail closed when a dependency (database, issuer keys) is down. */
export function unavailable(
  reason: TokenReason,
  description = "the service is temporarily unavailable, retry shortly",
): Refusal {
  return refuse(reason, description);
}

/** True for errors built by {@link refuse}. */
export function isRefusal(error: unknown): error is Refusal {
  return (
    error instanceof errors.OIDCProviderError && typeof (error as { reason?: unknown }).reason === "string"
  );
}

/** The token endpoint's reason for an identity-token refusal of a subject or actor token. */
export function identityTokenReason(token: "subject" | "actor", reason: IdentityTokenReason): TokenReason {
  return `${token}_${IDENTITY_SUFFIX[reason]}`;
}

const IDENTITY_SUFFIX = {
  token_malformed: "token_malformed",
  token_too_large: "token_too_large",
  issuer_untrusted: "token_issuer_untrusted",
  usage_not_allowed: "token_usage_not_allowed",
  algorithm_not_allowed: "token_algorithm_not_allowed",
  signature_invalid: "token_signature_invalid",
  audience_mismatch: "token_audience_mismatch",
  audience_ambiguous: "token_audience_ambiguous",
  token_expired: "token_expired",
  token_not_yet_valid: "token_not_yet_valid",
  token_too_old: "token_too_old",
  auth_time_missing: "token_auth_time_missing",
  claim_missing: "token_claim_missing",
  approver_claim_missing: "token_approver_claim_missing",
  issuer_keys_unavailable: "token_issuer_keys_unavailable",
} as const satisfies Record<IdentityTokenReason, string>;
