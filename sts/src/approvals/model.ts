import { randomBytes } from "node:crypto";
import type { Approval, ApprovalStatus } from "../db/schema.js";

/** An approval as the approval API returns it (CONTRACT §3). Times are ISO 8601. */
export interface ApprovalJson {
  id: string;
  status: ApprovalStatus;
  client_id: string;
  resource: string;
  scope: string;
  task: string;
  subject: string | null;
  max_tokens: number;
  tokens_issued: number;
  rate_limit: { per_second: number; burst: number } | null;
  requested_by: string;
  approved_by: string | null;
  created_at: string;
  decided_at: string | null;
  expires_at: string;
}

/** Approval ids: `apr_` and 128 random bits, base64url. */
export function newApprovalId(): string {
  return `apr_${randomBytes(16).toString("base64url")}`;
}

/** The status a reader sees: a pending or approved approval past `expires_at` reads as `expired`. */
export function effectiveStatus(
  approval: Pick<Approval, "status" | "expires_at">,
  now = Date.now(),
): ApprovalStatus {
  if (
    (approval.status === "pending" || approval.status === "approved") &&
    approval.expires_at.getTime() <= now
  ) {
    return "expired";
  }
  return approval.status;
}

/** Serialises a row for the wire. */
export function toApprovalJson(approval: Approval, now = Date.now()): ApprovalJson {
  return {
    id: approval.id,
    status: effectiveStatus(approval, now),
    client_id: approval.client_id,
    resource: approval.resource,
    scope: approval.scope,
    task: approval.task,
    subject: approval.subject,
    max_tokens: approval.max_tokens,
    tokens_issued: approval.tokens_issued,
    rate_limit: approval.rate_limit,
    requested_by: approval.requested_by,
    approved_by: approval.approved_by,
    created_at: approval.created_at.toISOString(),
    decided_at: approval.decided_at?.toISOString() ?? null,
    expires_at: approval.expires_at.toISOString(),
  };
}

/** Splits a space-separated scope string into distinct scope tokens (RFC 6749 §3.3). */
export function parseScope(scope: string): string[] {
  return [...new Set(scope.split(" ").filter(Boolean))];
}
