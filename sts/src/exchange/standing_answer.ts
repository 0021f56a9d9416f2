import type { Approval } from "../db/schema.js";
import { refuse } from "../oidc/refusal.js";
import type { StandingRequestOutcome } from "./standing_requests.js";

/**
 * The approval to mint under, or the refusal an MCP client gets while there is none (`response` gets
 * `Retry-After` when the agent's pending approvals are capped): each other refusal names the approval (`approvalId`, rendered as `approval_id` and in `error_description`, since MCP
 * clients surface only the description).
 */
export function answerStanding(
  outcome: StandingRequestOutcome,
  response: { set(header: string, value: string): void },
): {
  approval: Approval;
  scopes: readonly string[];
} {
  if (outcome.kind === "capped") {
    // RFC 9110 §10.2.3: when one of the agent's pending approvals is decided or expires, at the latest.
    response.set("Retry-After", String(outcome.retryAfterSeconds));
    throw refuse(
      "pending_cap_reached",
      `this agent already has ${outcome.maxPending} pending approvals, the most allowed; retry when one is decided or expires`,
    );
  }
  const { approval } = outcome;
  switch (outcome.kind) {
    case "approved":
      return { approval, scopes: outcome.scopes };
    case "requested":
      throw Object.assign(
        refuse(
          "approval_requested",
          `approval ${approval.id} was requested: retry this request once a human has approved it`,
        ),
        { approvalId: approval.id },
      );
    case "pending":
      throw Object.assign(
        refuse(
          "approval_pending",
          `approval ${approval.id} still waits for a human decision: retry this request once it is approved`,
        ),
        { approvalId: approval.id },
      );
    case "refused":
      throw Object.assign(
        refuse(
          "approval_cooldown",
          `approval ${approval.id} was ${approval.status}: this request is refused and no new approval is requested for now`,
        ),
        { approvalId: approval.id },
      );
  }
}
