import type { Approval } from "../db/schema.js";
import type { IssuanceLimiter } from "../limits/types.js";
import type { ActClaim, SubjectIdentity } from "./token_validators.js";

export type { IssuanceLimiter, LimitOutcome, LimitTake } from "../limits/types.js";

/** What the exchange policy decides on (the Cedar context is built from this). */
export interface ExchangeDecisionInput {
  readonly clientId: string;
  readonly subject: SubjectIdentity;
  readonly actor: ActClaim | undefined;
  readonly approval: Approval;
  readonly resource: string;
  readonly scopes: readonly string[];
  /** Lifetime the token would get, in seconds. */
  readonly ttlSeconds: number;
  readonly now: Date;
}

/** A policy decision: allowed, or forbidden naming the policy that forbade it. */
export type PolicyDecision = { allowed: true } | { allowed: false; policyId: string; reason: string };

/** Policy-as-code at every exchange. Must fail closed: an evaluation error is a refusal. */
export interface ExchangePolicy {
  /**
   * Whether a decision can depend on the approval's live budget (`tokens_issued`). When false the
   * grant may decide on a recently read copy of an approved approval (its terms never change once
   * approved; the budget statement re-checks status, expiry and budget atomically). Default true.
   */
  readonly readsApprovalBudget?: boolean;
  authorizeExchange(input: ExchangeDecisionInput): Promise<PolicyDecision>;
}

/** Optional runtime controls plugged into the token exchange grant. */
export interface ExchangeGuards {
  policy?: ExchangePolicy;
  limiter?: IssuanceLimiter;
}
