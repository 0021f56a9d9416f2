import type pg from "pg";
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimit } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { unavailable } from "../oidc/refusal.js";
import type { IssuanceLimiter, LimitOutcome, LimitTake } from "./types.js";

/** The table the migration `2026_11_25_0003` creates in rate-limiter-flexible's layout. */
export const ISSUANCE_RATE_LIMITS_TABLE = "issuance_rate_limits";

/** Options for {@link createIssuanceLimiter}. */
export interface IssuanceLimiterOptions {
  /** Per agent (`client_id`), across all its approvals. */
  readonly perClient: RateLimit;
  /** Per approval. */
  readonly perApproval: RateLimit;
  /**
   * The pg pool of a real Postgres: the counters live in {@link ISSUANCE_RATE_LIMITS_TABLE}, shared by
   * every instance. Without it (PGlite) the counters are in this process only: exact for the single
   * process that an embedded database allows, but not shared if several processes were ever pointed at
   * copies of the data.
   */
  readonly pool: pg.Pool | undefined;
}

/**
 * Maps a token bucket (`per_second`, `burst`) onto rate-limiter-flexible's fixed windows: `burst`
 * points per window of `burst / per_second` seconds. At most `burst` issuances at once and `per_second`
 * sustained; like any fixed window, two full bursts may meet at a window boundary.
 */
export function windowOf(limit: RateLimit): { points: number; duration: number } {
  return { points: limit.burst, duration: limit.burst / limit.per_second };
}

/** Whole seconds to wait, at least 1 (RFC 9110 §10.2.3 `Retry-After` is an integer of seconds). */
export function retryAfterSeconds(msBeforeNext: number): number {
  return Math.max(1, Math.ceil(msBeforeNext / 1000));
}

type Outcome = LimitOutcome;

/**
 * Takes one point from the agent's and then the approval's counter, giving back the point of the
 * bucket that did not refuse, in one call to `countersign_take_limits` (migration 0006; the same
 * function the exchange's batched write uses). Atomic: one statement.
 */
async function takeLimits(pool: pg.Pool, take: LimitTake): Promise<Outcome> {
  const now = Date.now();
  const { rows } = await pool.query<{ outcome: string; expire: string | null }>({
    name: "countersign-issuance-limits",
    text: "select outcome, expire from countersign_take_limits($1, $2, $3, $4, $5, $6, $7)",
    values: [
      take.keys[0],
      take.keys[1],
      now + Math.ceil(take.durationsMs[0]),
      now + Math.ceil(take.durationsMs[1]),
      take.points[0],
      take.points[1],
      now,
    ],
  });
  const row = rows[0];
  if (row === undefined) throw new Error("countersign_take_limits returned no row");
  if (row.outcome === "admitted") return { allowed: true };
  return { allowed: false, retryAfterSeconds: retryAfterSeconds(Number(row.expire) - Date.now()) };
}

/**
 * Issuance rate and burst limits per agent and per approval, as fixed windows
 * ({@link windowOf}). On real Postgres the counters live in {@link ISSUANCE_RATE_LIMITS_TABLE}
 * (rate-limiter-flexible's layout; correct across any number of instances; windows are timed by each
 * instance's clock, so keep clocks in sync) and are taken by `countersign_take_limits`, inside the
 * exchange's batched write ({@link IssuanceLimiter.prepareTake}) or alone ({@link takeLimits}); on PGlite,
 * rate-limiter-flexible's memory limiter. Both buckets must admit the request; the point a refused
 * request took from the other bucket is given back. A store failure fails closed: 503
 * `temporarily_unavailable`, never a token. The limiter starts no timer: counter rows whose window
 * ended are deleted in batches by the retention job (sts/src/ops/retention.ts).
 */
export function createIssuanceLimiter(options: IssuanceLimiterOptions): IssuanceLimiter {
  const { pool } = options;
  const clientWindow = windowOf(options.perClient);
  const approvalWindow = windowOf(options.perApproval);

  const storeUnavailable = (error: unknown) =>
    unavailable(
      isDatabaseUnavailable(error) ? "database_unavailable" : "rate_limit_store_unavailable",
      "the issuance rate limit store is unavailable, retry shortly",
    );

  if (pool === undefined) {
    const perClient = new RateLimiterMemory({ keyPrefix: "client", ...clientWindow });
    const perApproval = new RateLimiterMemory({ keyPrefix: "approval", ...approvalWindow });
    const take = async (limiter: RateLimiterAbstract, key: string): Promise<Outcome> => {
      try {
        await limiter.consume(key, 1);
        return { allowed: true };
      } catch (error) {
        if (error instanceof RateLimiterRes) {
          return { allowed: false, retryAfterSeconds: retryAfterSeconds(error.msBeforeNext) };
        }
        throw storeUnavailable(error);
      }
    };
    return {
      async consume(clientId, approvalId) {
        const client = await take(perClient, clientId);
        if (!client.allowed) return client;
        const approval = await take(perApproval, approvalId);
        if (!approval.allowed) await perClient.reward(clientId, 1).catch(() => {});
        return approval;
      },
    };
  }

  const prepareTake = (clientId: string, approvalId: string): LimitTake => ({
    keys: [`client:${clientId}`, `approval:${approvalId}`],
    durationsMs: [clientWindow.duration * 1000, approvalWindow.duration * 1000],
    points: [clientWindow.points, approvalWindow.points],
  });
  return {
    async consume(clientId, approvalId) {
      try {
        return await takeLimits(pool, prepareTake(clientId, approvalId));
      } catch (error) {
        throw storeUnavailable(error);
      }
    },
    prepareTake,
  };
}
