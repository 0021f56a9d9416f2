import type { ServerResponse } from "node:http";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../ops/logger.js";
import { latestCursor, MAX_FEED_PAGE, type RevocationEntry, readFeed } from "./feed.js";

/** Options for {@link RevocationHub}. */
export interface RevocationHubOptions {
  readonly db: Kysely<Database>;
  readonly logger: Logger;
  /** Most concurrent subscribers. */
  readonly maxSubscribers: number;
  /** Heartbeat comment interval, in milliseconds. */
  readonly heartbeatMs: number;
  /** Re-read interval without a wake-up, in milliseconds (safety net for lost notifications). */
  readonly pollMs: number;
  /** A subscriber whose unsent output exceeds this many bytes is disconnected. Default 1 MiB. */
  readonly maxBufferedBytes?: number;
  /** Most feed pages replayed to one resuming subscriber before it is asked to reconnect. Default 200. */
  readonly maxReplayPages?: number;
}

interface Subscriber {
  readonly res: ServerResponse;
  /** Last cursor written to this subscriber. */
  sent: bigint;
  /** Live events held while the subscriber replays its backlog. */
  queue: RevocationEntry[] | undefined;
}

/** Formats one revocation as a server-sent event (HTML Living Standard §9.2.5). */
export function formatEvent(entry: RevocationEntry): string {
  return `id: ${entry.cursor}\ndata: ${JSON.stringify(entry)}\n\n`;
}

/**
 * The per-instance fan-out behind `GET /revocations/stream`. It follows the feed table from the latest
 * cursor, woken by LISTEN/NOTIFY (and a periodic re-read), and writes every new entry to every
 * subscriber in cursor order. A resuming subscriber first replays the backlog after its cursor from the
 * table, holding live events meanwhile, so nothing is lost or sent twice.
 */
export class RevocationHub {
  readonly #options: RevocationHubOptions;
  readonly #subscribers = new Set<Subscriber>();
  #cursor = 0n;
  #started = false;
  #closed = false;
  #reading: Promise<void> | undefined;
  #again = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #lastErrorLog = 0;

  constructor(options: RevocationHubOptions) {
    this.#options = options;
  }

  /** How many subscribers are connected. */
  get size(): number {
    return this.#subscribers.size;
  }

  /** Whether another subscriber may connect. */
  get acceptsSubscribers(): boolean {
    return !this.#closed && this.#subscribers.size < this.#options.maxSubscribers;
  }

  /** Reads the latest cursor and starts the timers. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#cursor = BigInt(await latestCursor(this.#options.db));
    this.#heartbeat = setInterval(() => this.#broadcastRaw(": heartbeat\n\n"), this.#options.heartbeatMs);
    this.#heartbeat.unref();
    this.#poll = setInterval(() => this.wake(), this.#options.pollMs);
    this.#poll.unref();
  }

  /** Reads new feed entries and fans them out. Coalesces: calls during a read cause one more read. */
  wake(): void {
    if (this.#closed || !this.#started) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    this.#reading = this.#readNew().finally(() => {
      this.#reading = undefined;
      if (this.#again) {
        this.#again = false;
        this.wake();
      }
    });
  }

  /** Resolves when no read is in progress (tests). */
  async settled(): Promise<void> {
    for (let i = 0; i < 100 && this.#reading; i++) await this.#reading;
  }

  async #readNew(): Promise<void> {
    try {
      for (let page = 0; page < 100; page++) {
        const entries = await readFeed(this.#options.db, this.#cursor.toString(), MAX_FEED_PAGE);
        for (const entry of entries) {
          const cursor = BigInt(entry.cursor);
          if (cursor <= this.#cursor) continue;
          this.#cursor = cursor;
          this.#deliver(entry);
        }
        if (entries.length < MAX_FEED_PAGE) return;
      }
      this.#again = true;
    } catch (error) {
      const now = Date.now();
      if (now - this.#lastErrorLog > 10_000) {
        this.#lastErrorLog = now;
        this.#options.logger.warn(
          { err: { message: (error as Error).message } },
          "revocation feed read failed; retrying",
        );
      }
    }
  }

  #deliver(entry: RevocationEntry): void {
    const cursor = BigInt(entry.cursor);
    for (const subscriber of this.#subscribers) {
      if (subscriber.queue) subscriber.queue.push(entry);
      else if (cursor > subscriber.sent) this.#write(subscriber, formatEvent(entry), cursor);
    }
  }

  #write(subscriber: Subscriber, text: string, cursor?: bigint): void {
    const { res } = subscriber;
    if (res.destroyed || res.writableEnded) {
      this.#subscribers.delete(subscriber);
      return;
    }
    if (res.writableLength > (this.#options.maxBufferedBytes ?? 1024 * 1024)) {
      // A consumer this far behind would only fall further: it reconnects with Last-Event-ID.
      this.#subscribers.delete(subscriber);
      res.destroy();
      return;
    }
    res.write(text);
    if (cursor !== undefined) subscriber.sent = cursor;
  }

  #broadcastRaw(text: string): void {
    for (const subscriber of this.#subscribers) if (!subscriber.queue) this.#write(subscriber, text);
  }

  /**
   * Adds a subscriber whose response headers are already sent. With `after`, the backlog after it is
   * replayed first; without, only entries newer than now are sent.
   * @returns false when the hub is closed or full (nothing was written).
   */
  async subscribe(res: ServerResponse, after: string | undefined): Promise<boolean> {
    if (!this.acceptsSubscribers) return false;
    const subscriber: Subscriber = {
      res,
      sent: after === undefined ? this.#cursor : BigInt(after),
      queue: after === undefined ? undefined : [],
    };
    this.#subscribers.add(subscriber);
    res.once("close", () => this.#subscribers.delete(subscriber));
    if (subscriber.queue === undefined) return true;
    try {
      const maxPages = this.#options.maxReplayPages ?? 200;
      for (let page = 0; page < maxPages; page++) {
        const entries = await readFeed(this.#options.db, subscriber.sent.toString(), MAX_FEED_PAGE);
        for (const entry of entries) {
          if (res.destroyed) return true;
          res.write(formatEvent(entry));
          subscriber.sent = BigInt(entry.cursor);
        }
        if (entries.length < MAX_FEED_PAGE) {
          const held = subscriber.queue;
          subscriber.queue = undefined;
          for (const entry of held) {
            const cursor = BigInt(entry.cursor);
            if (cursor > subscriber.sent) this.#write(subscriber, formatEvent(entry), cursor);
          }
          return true;
        }
        if (res.writableLength > (this.#options.maxBufferedBytes ?? 1024 * 1024)) {
          await new Promise<void>((resolve) => {
            res.once("drain", resolve);
            res.once("close", resolve);
          });
        }
      }
      // A very long backlog: end this stream; the client resumes from its Last-Event-ID.
      this.#subscribers.delete(subscriber);
      res.end();
      return true;
    } catch (error) {
      this.#options.logger.warn({ err: { message: (error as Error).message } }, "revocation replay failed");
      this.#subscribers.delete(subscriber);
      res.destroy();
      return true;
    }
  }

  /** Ends every stream and refuses new ones (draining: open streams must not hold the server open). */
  endStreams(): void {
    this.#closed = true;
    for (const subscriber of this.#subscribers) {
      if (!subscriber.res.writableEnded) subscriber.res.end();
    }
    this.#subscribers.clear();
  }

  /** Ends every stream and stops the timers. */
  async close(): Promise<void> {
    this.endStreams();
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    if (this.#poll !== undefined) clearInterval(this.#poll);
    this.#heartbeat = undefined;
    this.#poll = undefined;
    await this.settled();
  }
}
