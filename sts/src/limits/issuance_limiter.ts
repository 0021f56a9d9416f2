import type pg from "pg";
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimit } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { IssuanceLimiter, LimitOutcome, LimitTake } from "../exchange/guards.js";
import { unavailable } from "../exchange/refusal.js";

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
  /** How often expired counter rows are deleted, in milliseconds. Default 300 000 (5 minutes). */
  readonly cleanupIntervalMs?: number;
}

/** An {@link IssuanceLimiter} that also says where its state lives and can stop its timers. */
export interface StoppableIssuanceLimiter extends IssuanceLimiter {
  /** `postgres` (shared across instances) or `memory` (this process only). */
  readonly store: "postgres" | "memory";
  /** Stops the cleanup timer. Idempotent. */
  close(): void;
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

/** A counter after a take: the points now counted in its window, and when the window ends (epoch ms). */
interface WindowState {
  readonly points: number;
  readonly expire: number;
}

/**
 * Takes one point from each of two fixed-window counters in ONE statement: a two-row
 * `INSERT … ON CONFLICT (key) DO UPDATE … RETURNING`, in rate-limiter-flexible's table layout and key
 * format (`<prefix>:<key>`, `points`, `expire` in epoch ms). Atomic per row like rate-limiter-flexible's
 * own upsert, with one round trip for both buckets instead of one each. Rows are always locked in the
 * same order (agent, then approval), so concurrent statements cannot deadlock.
 */
async function takeBoth(
  pool: pg.Pool,
  keys: readonly [string, string],
  durationsMs: readonly [number, number],
): Promise<[WindowState, WindowState]> {
  const now = Date.now();
  const { rows } = await pool.query<{ key: string; points: number; expire: string }>({
    name: "countersign-issuance-limit-take",
    text: `insert into ${ISSUANCE_RATE_LIMITS_TABLE} as t (key, points, expire)
             values ($1, 1, $3), ($2, 1, $4)
           on conflict (key) do update set
             points = case when coalesce(t.expire, 0) <= $5 then 1 else t.points + 1 end,
             expire = case when coalesce(t.expire, 0) <= $5 then excluded.expire else t.expire end
           returning key, points, expire`,
    values: [keys[0], keys[1], now + Math.ceil(durationsMs[0]), now + Math.ceil(durationsMs[1]), now],
  });
  const state = (key: string): WindowState => {
    const row = rows.find((candidate) => candidate.key === key);
    if (!row) throw new Error("issuance limit upsert returned no row");
    return { points: Number(row.points), expire: Number(row.expire) };
  };
  return [state(keys[0]), state(keys[1])];
}

/** Gives back the point {@link takeBoth} took from `key` (its request was refused by the other bucket). */
async function giveBack(pool: pg.Pool, key: string): Promise<void> {
  await pool.query({
    name: "countersign-issuance-limit-give-back",
    text: `update ${ISSUANCE_RATE_LIMITS_TABLE} set points = points - 1 where key = $1 and points > 0`,
    values: [key],
  });
}

/**
 * Issuance rate and burst limits per agent and per approval, as fixed windows
 * ({@link windowOf}). On real Postgres both counters are taken by one atomic two-row upsert in
 * {@link ISSUANCE_RATE_LIMITS_TABLE} (rate-limiter-flexible's layout; correct across any number of
 * instances; windows are timed by each instance's clock, so keep clocks in sync); on PGlite,
 * rate-limiter-flexible's memory limiter. Both buckets must admit the request; the point a refused
 * request took from the other bucket is given back. A store failure fails closed: 503
 * `temporarily_unavailable`, never a token.
 */
export function createIssuanceLimiter(options: IssuanceLimiterOptions): StoppableIssuanceLimiter {
  const { pool } = options;
  const clientWindow = windowOf(options.perClient);
  const approvalWindow = windowOf(options.perApproval);

  let timer: NodeJS.Timeout | undefined;
  if (pool !== undefined) {
    timer = setInterval(() => {
      // Not critical: a failed cleanup is retried at the next interval. Both prefixes share the table.
      pool
        .query(`delete from ${ISSUANCE_RATE_LIMITS_TABLE} where expire < $1`, [Date.now() - 60_000])
        .catch(() => {});
    }, options.cleanupIntervalMs ?? 300_000);
    timer.unref();
  }

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
      store: "memory",
      async consume(clientId, approvalId) {
        const client = await take(perClient, clientId);
        if (!client.allowed) return client;
        const approval = await take(perApproval, approvalId);
        if (!approval.allowed) await perClient.reward(clientId, 1).catch(() => {});
        return approval;
      },
      close() {},
    };
  }

  const keysOf = (clientId: string, approvalId: string) =>
    [`client:${clientId}`, `approval:${approvalId}`] as const;
  const judge = async (
    keys: readonly [string, string],
    [client, approval]: readonly [WindowState, WindowState],
  ): Promise<Outcome> => {
    const now = Date.now();
    if (client.points > clientWindow.points) {
      await giveBack(pool, keys[1]).catch(() => {});
      return { allowed: false, retryAfterSeconds: retryAfterSeconds(client.expire - now) };
    }
    if (approval.points > approvalWindow.points) {
      await giveBack(pool, keys[0]).catch(() => {});
      return { allowed: false, retryAfterSeconds: retryAfterSeconds(approval.expire - now) };
    }
    return { allowed: true };
  };
  return {
    store: "postgres",
    async consume(clientId, approvalId) {
      const keys = keysOf(clientId, approvalId);
      let states: [WindowState, WindowState];
      try {
        states = await takeBoth(pool, keys, [clientWindow.duration * 1000, approvalWindow.duration * 1000]);
      } catch (error) {
        throw storeUnavailable(error);
      }
      return judge(keys, states);
    },
    prepareTake(clientId, approvalId): LimitTake {
      return {
        keys: keysOf(clientId, approvalId),
        durationsMs: [clientWindow.duration * 1000, approvalWindow.duration * 1000],
        points: [clientWindow.points, approvalWindow.points],
      };
    },
    close() {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
