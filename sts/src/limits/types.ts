/** The issuance limiters' interfaces: what the grants call and what the database write takes. */

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
