import type { RateLimit } from "../config/schema.js";
import type { Approval, ApprovalStatus } from "../db/schema.js";

/** An approval as the approval API returns it (docs/reference.md#approval). Times are ISO 8601. */
export interface ApprovalJson {
  id: string;
  status: ApprovalStatus;
  client_id: string;
  resource: string;
  scope: string;
  task: string;
  subject: string | null;
  /** The issuer whose `sub` `subject` is, when the approval binds a subject. */
  subject_issuer: string | null;
  max_tokens: number;
  tokens_issued: number;
  rate_limit: RateLimit | null;
  requested_by: string;
  approved_by: string | null;
  created_at: string;
  decided_at: string | null;
  expires_at: string;
  /** The scope the agent asked for (`scope` is what was approved; equal while pending). */
  requested_scope: string;
  /** The deny or revoke reason, when one was given. */
  decision_reason: string | null;
  revoked_at: string | null;
  /** The MCP tools the approval names; null: every tool its scopes allow. */
  tools: string[] | null;
  /** The MCP resource URIs the approval names; null: every resource its scopes allow. */
  resources: string[] | null;
  /** The MCP prompts the approval names; null: every prompt its scopes allow. */
  prompts: string[] | null;
  /** The one MCP `tools/call` the approval binds (its exact arguments, shown to the approver); null: none. */
  call: ApprovalCallJson | null;
}

/** The call an approval binds, as the API shows it. */
export interface ApprovalCallJson {
  tool: string;
  arguments: Record<string, unknown>;
  /** base64url(SHA-256(RFC 8785 canonical JSON of `arguments`)). */
  arguments_digest: string;
}

// An approval's id: its shape and its making live in a leaf (db/approval_id.ts) the audit writer uses too.
export { APPROVAL_ID_PATTERN, newApprovalId } from "../db/approval_id.js";

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
    subject_issuer: approval.subject_issuer,
    max_tokens: approval.max_tokens,
    tokens_issued: approval.tokens_issued,
    rate_limit: approval.rate_limit,
    requested_by: approval.requested_by,
    approved_by: approval.approved_by,
    created_at: approval.created_at.toISOString(),
    decided_at: approval.decided_at?.toISOString() ?? null,
    expires_at: approval.expires_at.toISOString(),
    requested_scope: approval.requested_scope,
    decision_reason: approval.decision_reason,
    revoked_at: approval.revoked_at?.toISOString() ?? null,
    tools: approval.tools,
    resources: approval.resources,
    prompts: approval.prompts,
    call:
      approval.call_tool !== null &&
      approval.call_arguments !== null &&
      approval.call_arguments_digest !== null
        ? {
            tool: approval.call_tool,
            arguments: JSON.parse(approval.call_arguments) as Record<string, unknown>,
            arguments_digest: approval.call_arguments_digest,
          }
        : null,
  };
}
