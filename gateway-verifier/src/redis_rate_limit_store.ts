import type { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import type { RateDecision, RateLimit, RateLimitStore } from "./types.js";

/** Options of {@link createRedisRateLimitStore}. */
export interface RedisRateLimitStoreOptions {
  /**
   * An `ioredis` client you create and own (the store never closes it). Several gateway instances
   * pointing at the same Redis share every limit.
   */
  client: object;
  /** Prefix of the Redis keys. Default `"countersign:rl"`. */
  keyPrefix?: string;
  /** Most distinct (rate, burst) limiters kept. Default 1000. */
  maxLimiters?: number;
}

/**
 * A shared rate-limit store on Redis through `rate-limiter-flexible` (atomic Lua `INCR` + TTL), for
 * several gateway instances. `rate-limiter-flexible` is loaded on first use, so the verifier's core
 * keeps `jose` as its only hard dependency.
 *
 * Semantics: a fixed window per (client, approval) of W = ceil(burst / perSecond) whole seconds
 * allowing `burst` requests. The average rate never exceeds `perSecond` (it is tighter when W rounds
 * up); the in-memory store is an exact token bucket. Redis errors make the verifier fail closed (503).
 */
export function createRedisRateLimitStore(options: RedisRateLimitStoreOptions): RateLimitStore {
  const prefix = options.keyPrefix ?? "countersign:rl";
  const maxLimiters = options.maxLimiters ?? 1000;
  const limiters = new Map<string, RateLimiterRedis>();
  let module: Promise<typeof import("rate-limiter-flexible")> | undefined;

  async function limiterFor(limit: RateLimit): Promise<RateLimiterRedis> {
    const points = Math.max(1, Math.floor(limit.burst));
    const duration = Math.max(1, Math.ceil(points / limit.perSecond));
    const id = `${points}:${duration}`;
    const existing = limiters.get(id);
    if (existing !== undefined) return existing;
    module ??= import("rate-limiter-flexible");
    const { RateLimiterRedis: Limiter } = await module;
    const created = limiters.get(id);
    if (created !== undefined) return created;
    const limiter = new Limiter({
      storeClient: options.client,
      keyPrefix: `${prefix}:${id}`,
      points,
      duration,
      rejectIfRedisNotReady: true,
    });
    if (limiters.size >= maxLimiters) {
      const oldest = limiters.keys().next();
      if (oldest.done !== true) limiters.delete(oldest.value);
    }
    limiters.set(id, limiter);
    return limiter;
  }

  return {
    async consume(key, limit): Promise<RateDecision> {
      const limiter = await limiterFor(limit);
      try {
        await limiter.consume(key, 1);
        return { allowed: true, retryAfterSeconds: 0 };
      } catch (rejection) {
        if (rejection instanceof Error) throw rejection;
        const { msBeforeNext } = rejection as RateLimiterRes;
        return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(msBeforeNext / 1000)) };
      }
    },
  };
}
