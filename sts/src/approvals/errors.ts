import type { AuthRefusalReason } from "../auth/authenticate.js";
import { ApiError } from "../http/errors.js";
import type { JsonBodyRefusalReason } from "../http/json_body.js";

/**
 * Stable reason codes for approval API refusals, written to the audit log (`audit_events.reason`):
 * the authenticator's, the JSON body reader's and the approval API's own.
 * The wire `error` is the OAuth-style code; the reason is the finer machine code behind it.
 */
export type ApprovalRefusalReason =
  | AuthRefusalReason
  | JsonBodyRefusalReason
  | "call_max_tokens_conflict"
  | "cursor_invalid"
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
 * An approval API refusal: an {@link ApiError} (rendered as `{"error", "error_description"}`, with a
 * stable audit `reason`) that also carries, when known, the approval it concerns.
 */
export class ApprovalError extends ApiError<ApprovalRefusalReason> {
  /** The approval the refusal concerns, when the request named one that exists. */
  readonly approvalId: string | undefined;
  constructor(
    status: number,
    error: string,
    description: string,
    reason: ApprovalRefusalReason,
    options: { headers?: Record<string, string>; approvalId?: string } = {},
  ) {
    super(status, error, description, reason, options.headers ?? {});
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
