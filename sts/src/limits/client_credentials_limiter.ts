import type pg from "pg";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimit } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { unavailable } from "../oidc/refusal.js";
import { retryAfterSeconds, windowOf } from "./issuance_limiter.js";
import type { LimitOutcome } from "./types.js";

/** The `client_credentials` issuance limit per agent. */
export interface ClientCredentialsLimiter {
  /**
   * Takes one point from `clientId`'s window. Call only for an authenticated client, just before a
   * token is minted.
   * @throws a 503 `temporarily_unavailable` refusal when the counter store fails (fail closed).
   */
  consume(clientId: string): Promise<LimitOutcome>;
}

/** Options for {@link createClientCredentialsLimiter}. */
export interface ClientCredentialsLimiterOptions {
  /** The agent's bucket (`issuance_limits.client_credentials`). */
  readonly limit: RateLimit;
  /**
   * The pg pool of a real Postgres: the counter is a row of `issuance_rate_limits` (key
   * `client_credentials:<client_id>`), shared by every instance and cleaned up with the exchange's
   * counters. Without it (PGlite) the counter is in this process only.
   */
  readonly pool: pg.Pool | undefined;
}

/**
 * A fixed window of `burst` tokens per `burst / per_second` seconds per agent
 * ({@link windowOf}), taken atomically by `countersign_take_point` (migration 0006) on Postgres, or by
 * rate-limiter-flexible's memory limiter on PGlite.
 */
export function createClientCredentialsLimiter(
  options: ClientCredentialsLimiterOptions,
): ClientCredentialsLimiter {
  const { pool } = options;
  const window = windowOf(options.limit);
  const storeUnavailable = (error: unknown) =>
    unavailable(
      isDatabaseUnavailable(error) ? "database_unavailable" : "rate_limit_store_unavailable",
      "the issuance rate limit store is unavailable, retry shortly",
    );

  if (pool === undefined) {
    const limiter = new RateLimiterMemory({ keyPrefix: "client_credentials", ...window });
    return {
      async consume(clientId) {
        try {
          await limiter.consume(clientId, 1);
          return { allowed: true };
        } catch (error) {
          if (error instanceof RateLimiterRes) {
            return { allowed: false, retryAfterSeconds: retryAfterSeconds(error.msBeforeNext) };
          }
          throw storeUnavailable(error);
        }
      },
    };
  }

  return {
    async consume(clientId) {
      const now = Date.now();
      let row: { points: string; expire: string } | undefined;
      try {
        ({
          rows: [row],
        } = await pool.query<{ points: string; expire: string }>({
          name: "countersign-client-credentials-limit",
          text: "select points, expire from countersign_take_point($1, $2, $3)",
          values: [`client_credentials:${clientId}`, now + Math.ceil(window.duration * 1000), now],
        }));
      } catch (error) {
        throw storeUnavailable(error);
      }
      if (row === undefined) throw storeUnavailable(new Error("countersign_take_point returned no row"));
      if (Number(row.points) <= window.points) return { allowed: true };
      return { allowed: false, retryAfterSeconds: retryAfterSeconds(Number(row.expire) - Date.now()) };
    },
  };
}
