import type { RateDecision, RateLimit, RateLimitStore } from "./types.js";

interface Bucket {
  tokens: number;
  /** Milliseconds since the epoch. */
  updatedAt: number;
  limit: RateLimit;
}

/** Options of {@link createMemoryRateLimitStore}. */
export interface MemoryRateLimitStoreOptions {
  /**
   * Most buckets kept. Buckets that have refilled completely are dropped first (losslessly: a full
   * bucket equals a new one); past that the oldest go. Default 100,000.
   */
  maxKeys?: number;
}

const ALLOWED: RateDecision = Object.freeze({ allowed: true, retryAfterSeconds: 0 });

/**
 * An in-process token bucket per key: capacity `burst`, refilled continuously at `perSecond`.
 * Exact within one process; use the Redis store to share limits across gateway instances.
 */
export function createMemoryRateLimitStore(options: MemoryRateLimitStoreOptions = {}): RateLimitStore {
  const maxKeys = Math.max(1, options.maxKeys ?? 100_000);
  const buckets = new Map<string, Bucket>();

  function makeRoom(nowMs: number): void {
    for (const [key, bucket] of buckets) {
      const refilled = bucket.tokens + ((nowMs - bucket.updatedAt) / 1000) * bucket.limit.perSecond;
      if (refilled >= bucket.limit.burst) buckets.delete(key);
    }
    while (buckets.size >= maxKeys) {
      const oldest = buckets.keys().next();
      if (oldest.done === true) break;
      buckets.delete(oldest.value);
    }
  }

  return {
    consume(key, limit, nowMs) {
      let bucket = buckets.get(key);
      if (bucket === undefined) {
        if (buckets.size >= maxKeys) makeRoom(nowMs);
        bucket = { tokens: limit.burst, updatedAt: nowMs, limit };
        buckets.set(key, bucket);
      } else {
        const elapsed = nowMs - bucket.updatedAt;
        let tokens = bucket.tokens;
        if (elapsed > 0) {
          tokens += (elapsed / 1000) * limit.perSecond;
          bucket.updatedAt = nowMs;
        }
        bucket.tokens = Math.min(tokens, limit.burst);
        bucket.limit = limit;
      }
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return ALLOWED;
      }
      return {
        allowed: false,
        retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / limit.perSecond)),
      };
    },
  };
}
