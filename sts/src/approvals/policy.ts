import type { RateLimit } from "../config/schema.js";
import type { VerifiedIdentity } from "../identity/trusted_issuers.js";
import type { ApprovalJson } from "./model.js";

/** The decisions an approver makes. */
export type ApprovalDecisionAction = "approve" | "deny" | "revoke";

/**
 * The terms an approval carries, as an approver policy sees them: for `approve`, the narrowed terms
 * being granted (each within what was requested); for `deny` and `revoke`, its current terms.
 */
export interface ApprovalDecisionTerms {
  readonly scope: string;
  readonly max_tokens: number;
  readonly expires_at: string;
  readonly rate_limit: RateLimit | null;
  /** The MCP tools the approval names; null: it names none (every tool its scopes allow). */
  readonly tools: readonly string[] | null;
  /** The MCP resource URIs the approval names; null: every resource its scopes allow. */
  readonly resources: readonly string[] | null;
  /** The MCP prompts the approval names; null: every prompt its scopes allow. */
  readonly prompts: readonly string[] | null;
}

/**
 * What an approver is about to decide: the approval as it stands, and the terms it will carry (for
 * `approve`, the narrowed terms being granted; for `deny` and `revoke`, its current terms).
 */
export interface ApprovalDecisionInput {
  readonly action: ApprovalDecisionAction;
  /** The human deciding (a verified approver token). */
  readonly approver: VerifiedIdentity;
  /** The approval as it stands (pending for approve and deny, approved for revoke). */
  readonly approval: ApprovalJson;
  /** The terms the decision concerns: for approve, those being granted; else the current ones. */
  readonly terms: ApprovalDecisionTerms;
}

/** The answer of an {@link ApproverPolicy}: allowed, or forbidden by a named policy with a reason. */
export type ApprovalDecisionResult =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly policyId: string; readonly reason: string };

/**
 * Decides whether an approver may approve, deny or revoke an approval (e.g. Cedar policies: who may approve what, for
 * which resource and scope). Called after the request is validated and before the compare-and-set.
 * An exception is a refusal (fail closed).
 */
export interface ApproverPolicy {
  authorizeDecision(input: ApprovalDecisionInput): Promise<ApprovalDecisionResult>;
}

/** The default policy: any authenticated approver may decide anything within what was requested. */
export const allowAllApprovers: ApproverPolicy = {
  authorizeDecision: async () => ({ allowed: true }),
};
