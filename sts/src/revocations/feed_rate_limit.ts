import { LRUCache } from "lru-cache";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { retryAfterSeconds } from "../limits/issuance_limiter.js";

/** Options for {@link FeedReadLimiter}. */
export interface FeedReadLimiterOptions {
  /** `revocations.max_feed_reads_per_address_per_minute`: reads per client address per window. */
  readonly perMinute: number;
  /** Most client addresses counted at once (the least recently seen is forgotten first). Default 100 000. */
  readonly maxAddresses?: number;
}

/**
 * How often each client address may read `GET /revocations`: `perMinute` reads per fixed window of 60
 * seconds starting at the address's first read (rate-limiter-flexible's memory limiter, in this
 * instance only; it reads `Date.now()`). A refused read does not move the window. An anonymous caller
 * can read the feed, and each read costs the database two statements, so one address polling in a loop
 * is held to this rate. At most `maxAddresses` addresses are counted: past it the least recently seen
 * address's counter is dropped (it starts again with a full window), so a caller cycling through
 * addresses cannot grow the instance's memory.
 */
export class FeedReadLimiter {
  readonly #limiter: RateLimiterMemory;
  readonly #addresses: LRUCache<string, true>;

  constructor(options: FeedReadLimiterOptions) {
    this.#limiter = new RateLimiterMemory({
      keyPrefix: "revocation_feed",
      points: options.perMinute,
      duration: 60,
    });
    this.#addresses = new LRUCache<string, true>({
      max: options.maxAddresses ?? 100_000,
      // An address forgotten here loses its counter too: the limiter holds no more keys than this.
      dispose: (_value, address, reason) => {
        if (reason === "evict") void this.#limiter.delete(address);
      },
    });
  }

  /**
   * Takes one read for `address`.
   * @returns 0 when taken; otherwise the whole seconds (at least 1) until the address's window ends.
   */
  async take(address: string): Promise<number> {
    this.#addresses.set(address, true);
    try {
      await this.#limiter.consume(address, 1);
      return 0;
    } catch (error) {
      if (error instanceof RateLimiterRes) return retryAfterSeconds(error.msBeforeNext);
      throw error;
    }
  }

  /** How many addresses are counted now (at most `maxAddresses`). */
  get size(): number {
    return this.#addresses.size;
  }

  /** How many counters the limiter itself holds (at most {@link size}); walks them all, for tests. */
  counters(): number {
    return this.#limiter.dump().storage.length;
  }
}
