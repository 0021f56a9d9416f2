import type { Kysely } from "kysely";
import type { RateLimit } from "../config/schema.js";
import type { Database } from "../db/schema.js";
import { retryAfterSeconds, windowOf } from "../limits/issuance_limiter.js";
import { takeWindowPoint } from "../limits/window_counter.js";

/** Whether an agent may make another approval request now, and if not, when to retry. */
export type RequestAdmission =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly retryAfterSeconds: number };

/** The counter key of an agent's approval requests in `issuance_rate_limits`. */
export function requestCounterKey(clientId: string): string {
  return `approval_request:${clientId}`;
}

/**
 * Takes one point from the agent's approval-request window (`approvals.request_rate_limit`, mapped onto
 * a fixed window like the issuance limits: `burst` requests per `burst / per_second` seconds). The
 * counter is a row of `issuance_rate_limits` shared by every instance ({@link takeWindowPoint}); a
 * refused request still counts, so an agent that keeps trying waits out the window. Throws when the
 * database fails (the caller answers 503: fail closed).
 */
export async function admitRequest(
  db: Kysely<Database>,
  clientId: string,
  limit: RateLimit,
): Promise<RequestAdmission> {
  const window = windowOf(limit);
  const point = await takeWindowPoint(db, requestCounterKey(clientId), window.duration * 1000);
  if (point.points <= window.points) return { allowed: true };
  return {
    allowed: false,
    retryAfterSeconds: retryAfterSeconds(point.windowEnd.getTime() - point.now.getTime()),
  };
}

/** The longest `Retry-After` of a refusal at the pending cap, in seconds. */
export const PENDING_CAP_MAX_RETRY_AFTER_SECONDS = 60;

/**
 * `Retry-After` for an agent at its pending cap: until its soonest pending approval expires (a slot is
 * free by then at the latest), but at most {@link PENDING_CAP_MAX_RETRY_AFTER_SECONDS}, since a human may
 * decide one sooner. At least 1.
 */
export function pendingCapRetryAfter(soonestExpiry: Date, now: Date): number {
  return Math.min(
    PENDING_CAP_MAX_RETRY_AFTER_SECONDS,
    retryAfterSeconds(soonestExpiry.getTime() - now.getTime()),
  );
}
