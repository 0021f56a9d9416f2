import { HttpError } from "../http/errors.js";

/**
 * Stable reason codes for approval API refusals, written to the audit log (`audit_events.reason`).
 * The wire `error` is the OAuth-style code; the reason is the finer machine code behind it.
 */
export type ApprovalRefusalReason =
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
  | "body_invalid"
  | "call_max_tokens_conflict"
  | "cursor_invalid"
  | "body_too_large"
  | "content_type_unsupported"
  | "resource_unknown"
  | "scope_invalid"
  | "not_found"
  | "not_owner"
  | "not_narrowing"
  | "already_expired"
  | "ttl_elapsed"
  | "state_conflict"
  | "policy_denied"
  | "policy_error"
  | "request_rate_limited"
  | "pending_cap_reached";

/**
 * An approval API refusal: an {@link HttpError} (rendered as `{"error", "error_description"}`) that also
 * carries a stable audit `reason` and, when known, the approval it concerns.
 */
export class ApprovalError extends HttpError {
  /** The approval the refusal concerns, when the request named one that exists. */
  readonly approvalId: string | undefined;
  constructor(
    status: number,
    error: string,
    description: string,
    readonly reason: ApprovalRefusalReason,
    options: { headers?: Record<string, string>; approvalId?: string } = {},
  ) {
    super(status, error, description, options.headers ?? {});
    this.name = "ApprovalError";
    this.approvalId = options.approvalId;
  }
}

/**
 * The `error` code of a 409: the approval is not in a state that allows the call (e.g. approving a
 * denied approval). Not an RFC code; the API's own, stable.
 */
export const INVALID_STATE = "invalid_state";

/**
 * The `error` code of a 429 at `POST /approvals` when the agent already has
 * `approvals.max_pending_per_agent` pending approvals. Not an RFC code; the API's own, stable.
 */
export const TOO_MANY_PENDING = "too_many_pending";

/** 400 `invalid_request` with a stable reason. */
export function invalidRequest(description: string, reason: ApprovalRefusalReason = "body_invalid") {
  return new ApprovalError(400, "invalid_request", description, reason);
}

/** 404 `not_found`: also answered when the caller may not know the approval exists. */
export function approvalNotFound(): ApprovalError {
  return new ApprovalError(404, "not_found", "no such approval", "not_found");
}
