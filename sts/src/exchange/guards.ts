import type { Approval } from "../db/schema.js";
import type { ActClaim, SubjectIdentity } from "./token_validators.js";

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

/** A limiter's answer: admitted, or refused with the seconds to wait. */
export type LimitOutcome = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/**
 * One point to take from each of two fixed-window counters (agent, then approval) in
 * `issuance_rate_limits`, in the same database call that takes the budget.
 */
export interface LimitTake {
  /** Counter keys, agent first: rows are always locked in this order. */
  readonly keys: readonly [string, string];
  /** Each window's length, in milliseconds, when it starts. */
  readonly durationsMs: readonly [number, number];
  /** The points each window admits. */
  readonly points: readonly [number, number];
}

/** Issuance rate and burst limits (per agent and per approval), shared across instances. */
export interface IssuanceLimiter {
  consume(clientId: string, approvalId: string): Promise<LimitOutcome>;
  /**
   * For a limiter whose counters live in the exchange's own Postgres: the counters to take inside the
   * budget's database call (one round trip for limits and budget). Absent: the grant calls
   * {@link consume} first.
   */
  prepareTake?(clientId: string, approvalId: string): LimitTake;
}

/** Optional runtime controls plugged into the token exchange grant. */
export interface ExchangeGuards {
  policy?: ExchangePolicy;
  limiter?: IssuanceLimiter;
}
