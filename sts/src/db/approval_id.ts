import { randomBytes } from "node:crypto";

/**
 * The shape of an approval's id (`approvals.id`), the one {@link newApprovalId} makes; anything else
 * cannot name an approval. A leaf, so both the approvals that make ids and the audit writer that
 * checks a claimed one can use it.
 */
export const APPROVAL_ID_PATTERN = /^apr_[A-Za-z0-9_-]{22}$/;

/** Approval ids: `apr_` and 128 random bits, base64url. */
export function newApprovalId(): string {
  return `apr_${randomBytes(16).toString("base64url")}`;
}
