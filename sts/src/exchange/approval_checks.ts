import { effectiveStatus } from "../approvals/model.js";
import type { Approval } from "../db/schema.js";
import { refuse } from "../oidc/refusal.js";

/**
 * Checks that `approval` lets `clientId` mint a token now (docs/reference.md#order-of-checks, step 5). Unknown approvals and other
 * clients' approvals are refused alike, so an agent cannot probe for ids.
 * @throws a refusal with the documented error (docs/reference.md#reason-codes): `invalid_grant` or
 *   `authorization_pending`.
 */
export function assertApprovalUsable(
  approval: Approval | undefined,
  clientId: string,
  now = Date.now(),
): Approval {
  if (!approval || approval.client_id !== clientId) {
    throw refuse("approval_not_found", "no such approval for this client");
  }
  const status = effectiveStatus(approval, now);
  switch (status) {
    case "pending":
      throw refuse("approval_pending", "the approval is still pending a human decision");
    case "denied":
      throw refuse("approval_denied", "the approval was denied");
    case "revoked":
      throw refuse("approval_revoked", "the approval was revoked");
    case "expired":
      throw refuse("approval_expired", "the approval has expired");
    case "approved":
      break;
  }
  if (approval.tokens_issued >= approval.max_tokens) {
    throw refuse("approval_used_up", "the approval's token budget is used up");
  }
  return approval;
}
