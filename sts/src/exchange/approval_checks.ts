import { effectiveStatus } from "../approvals/model.js";
import type { Approval } from "../db/schema.js";
import { issueRefusal } from "./rules.js";

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
  if (!approval || approval.client_id !== clientId) throw issueRefusal("not_found");
  const status = effectiveStatus(approval, now);
  if (status !== "approved") throw issueRefusal(status);
  if (approval.tokens_issued >= approval.max_tokens) throw issueRefusal("used_up");
  return approval;
}
