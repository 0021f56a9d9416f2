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
 * `issuance_rate_limits`, inside the exchange's budget statement instead of a statement of its own.
 */
export interface LimitTake {
  /** Counter keys, agent first: rows are always locked in this order. */
  readonly keys: readonly [string, string];
  /** The window end (epoch ms) each counter gets when its window starts now. */
  readonly expires: readonly [number, number];
  /** The points each window admits. */
  readonly points: readonly [number, number];
  /** The time (epoch ms) windows are judged at. */
  readonly now: number;
}

/** A counter after the take: the points now counted in its window, and when the window ends (epoch ms). */
export interface WindowState {
  readonly points: number;
  readonly expire: number;
}

/** Issuance rate and burst limits (per agent and per approval), shared across instances. */
export interface IssuanceLimiter {
  consume(clientId: string, approvalId: string): Promise<LimitOutcome>;
  /**
   * For a limiter whose counters live in the exchange's own Postgres: the take to run inside the budget
   * statement (one round trip for limits and budget). Absent: the grant calls {@link consume}.
   */
  prepareTake?(clientId: string, approvalId: string): LimitTake;
  /**
   * Judges the counters a {@link prepareTake} left (agent, approval). On a refusal it gives back the
   * point taken from the bucket that did not refuse, as {@link consume} does.
   */
  judgeTake?(take: LimitTake, states: readonly [WindowState, WindowState]): Promise<LimitOutcome>;
}

/** Optional runtime controls plugged into the token exchange grant. */
export interface ExchangeGuards {
  policy?: ExchangePolicy;
  limiter?: IssuanceLimiter;
}
