import { LRUCache } from "lru-cache";

interface Bucket {
  tokens: number;
  /** When `tokens` was computed, epoch milliseconds. */
  at: number;
}

/**
 * How many costly stream resumptions each client address may cause: a token bucket per address holding
 * `burst` replays, refilled at `perMinute`. A replay is the stream's costly part: a connection that
 * resumes with a backlog (it is written up to `max_replay_entries` entries), or with a cursor ahead of
 * what the instance has read or of another epoch (the instance re-reads the feed from the database).
 * So a caller reconnecting in a loop is held to this rate whatever its slots. The most recently used
 * `maxAddresses` buckets are kept (an evicted address starts again with a full bucket).
 */
export class ReplayBudget {
  readonly #buckets: LRUCache<string, Bucket>;
  readonly #perMinute: number;
  readonly #burst: number;
  readonly #now: () => number;

  constructor(perMinute: number, burst: number, maxAddresses = 100_000, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#burst = burst;
    this.#now = now;
    this.#buckets = new LRUCache({ max: maxAddresses });
  }

  /**
   * Takes one replay for `address`.
   * @returns 0 when taken; otherwise the whole seconds until one is available (nothing is taken).
   */
  take(address: string): number {
    const now = this.#now();
    const bucket = this.#buckets.get(address) ?? { tokens: this.#burst, at: now };
    const tokens = Math.min(this.#burst, bucket.tokens + ((now - bucket.at) * this.#perMinute) / 60_000);
    if (tokens >= 1) {
      this.#buckets.set(address, { tokens: tokens - 1, at: now });
      return 0;
    }
    this.#buckets.set(address, { tokens, at: now });
    return Math.max(1, Math.ceil(((1 - tokens) * 60) / this.#perMinute));
  }
}
