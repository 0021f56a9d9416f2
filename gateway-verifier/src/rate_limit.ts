import { LruCache } from "./lru.js";
import type { RateDecision, RateLimitStore } from "./types.js";

interface Bucket {
  tokens: number;
  /** Milliseconds since the epoch. */
  updatedAt: number;
}

/** Options of {@link createMemoryRateLimitStore}. */
export interface MemoryRateLimitStoreOptions {
  /**
   * Most buckets kept. Past it the least recently used bucket is dropped to admit a new key (in O(1),
   * never a scan); a dropped key starts again with a full bucket, which loses nothing when it had
   * refilled, as an idle key's bucket has. Default 100,000.
   */
  maxKeys?: number;
}

/** The in-process store: a {@link RateLimitStore} that says how many buckets it holds. */
export interface MemoryRateLimitStore extends RateLimitStore {
  /** Buckets held now: at most `maxKeys`. */
  readonly size: number;
}

const ALLOWED: RateDecision = Object.freeze({ allowed: true, retryAfterSeconds: 0 });

/**
 * An in-process token bucket per key: capacity `burst`, refilled continuously at `perSecond`.
 * Exact within one process; use the Redis store to share limits across gateway instances. Buckets are
 * kept in least-recently-used order (a `Map` whose insertion order is refreshed on each use), so
 * eviction takes the first key: constant time whatever the number of keys, so a flood of new agents
 * costs each request the same.
 */
export function createMemoryRateLimitStore(options: MemoryRateLimitStoreOptions = {}): MemoryRateLimitStore {
  const maxKeys = Math.max(1, Math.floor(options.maxKeys ?? 100_000));
  const buckets = new LruCache<string, Bucket>(maxKeys);

  return {
    get size() {
      return buckets.size;
    },
    consume(key, limit, nowMs) {
      let bucket = buckets.get(key);
      if (bucket === undefined) {
        bucket = { tokens: limit.burst, updatedAt: nowMs };
        buckets.set(key, bucket);
      } else {
        const elapsed = nowMs - bucket.updatedAt;
        let tokens = bucket.tokens;
        if (elapsed > 0) {
          tokens += (elapsed / 1000) * limit.perSecond;
          bucket.updatedAt = nowMs;
        }
        bucket.tokens = Math.min(tokens, limit.burst);
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
