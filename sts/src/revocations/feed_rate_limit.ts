import { LRUCache } from "lru-cache";
import { retryAfterSeconds } from "../limits/issuance_limiter.js";

/** Length of one counting window, in milliseconds. */
const WINDOW_MS = 60_000;

/** Options for {@link FeedReadLimiter}. */
export interface FeedReadLimiterOptions {
  /** `revocations.max_feed_reads_per_address_per_minute`: reads per client address per window. */
  readonly perMinute: number;
  /** Most client addresses counted at once (the least recently seen is forgotten first). Default 100 000. */
  readonly maxAddresses?: number;
  /** The clock, in milliseconds since the epoch. Default `Date.now` (tests freeze it). */
  readonly now?: () => number;
}

/** One address's window: reads taken in it, and when it ends (epoch milliseconds). */
interface Window {
  reads: number;
  readonly endsAt: number;
}

/**
 * How often each client address may read `GET /revocations`: `perMinute` reads per fixed window of 60
 * seconds, starting at the address's first read (in this instance only). An anonymous caller can read
 * the feed, and each read costs the database two statements, so one address polling in a loop is held
 * to this rate. At most `maxAddresses` addresses are counted (an LRU of their windows): past it the
 * least recently seen address is forgotten (it starts again with a full window), so a caller cycling
 * through addresses cannot grow the instance's memory.
 */
export class FeedReadLimiter {
  readonly #windows: LRUCache<string, Window>;
  readonly #perMinute: number;
  readonly #now: () => number;

  constructor(options: FeedReadLimiterOptions) {
    this.#perMinute = options.perMinute;
    this.#now = options.now ?? Date.now;
    this.#windows = new LRUCache<string, Window>({ max: options.maxAddresses ?? 100_000 });
  }

  /**
   * Takes one read for `address`.
   * @returns 0 when taken; otherwise the whole seconds until the address's window ends (nothing is taken).
   */
  take(address: string): number {
    const now = this.#now();
    let window = this.#windows.get(address);
    if (window === undefined || window.endsAt <= now) {
      window = { reads: 0, endsAt: now + WINDOW_MS };
      this.#windows.set(address, window);
    }
    if (window.reads >= this.#perMinute) return retryAfterSeconds(window.endsAt - now);
    window.reads++;
    return 0;
  }

  /** How many addresses are counted now (at most `maxAddresses`). */
  get size(): number {
    return this.#windows.size;
  }
}
