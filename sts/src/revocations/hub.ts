import type { ServerResponse } from "node:http";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../ops/logger.js";
import {
  type CursorReset,
  checkCursor,
  type FeedCursor,
  type FeedState,
  formatCursor,
  MAX_FEED_PAGE,
  type RevocationEntry,
  readFeed,
  readFeedState,
  readFeedTail,
  rotateEpoch,
} from "./feed.js";
import { ReplayScheduler } from "./replay.js";
import { ReplayBudget } from "./replay_budget.js";

/** Options for {@link RevocationHub}. */
export interface RevocationHubOptions {
  readonly db: Kysely<Database>;
  readonly logger: Logger;
  /** Most concurrent subscribers. */
  readonly maxSubscribers: number;
  /** Most concurrent subscribers per client address ({@link clientAddress}). */
  readonly maxPerAddress: number;
  /**
   * Most replays per client address per minute (bursts of `maxPerAddress`): a subscriber that resumes
   * with a backlog, or with a cursor that makes the hub re-read the feed (ahead of what it has read, or
   * of another epoch), beyond it is refused ({@link ReplayBudget}).
   */
  readonly maxReplaysPerMinute: number;
  /**
   * Most entries kept in memory for replay, and so most entries replayed to one subscriber. A subscriber
   * further behind is told to read `GET /revocations` instead (410 `cursor_reset`).
   */
  readonly maxReplayEntries: number;
  /** Heartbeat comment interval, in milliseconds. */
  readonly heartbeatMs: number;
  /** Re-read interval without a wake-up, in milliseconds (safety net for lost notifications). */
  readonly pollMs: number;
  /** A subscriber whose unsent output exceeds this many bytes is disconnected. Default 1 MiB. */
  readonly maxBufferedBytes?: number;
  /** The replay budget's clock, in milliseconds since the epoch. Default `Date.now` (tests freeze it). */
  readonly now?: () => number;
}

/** An entry as held in memory: its cursor and its server-sent event, formatted and encoded once. */
interface HeldEntry {
  readonly cursor: bigint;
  readonly text: string;
  readonly bytes: Buffer;
  /** Position in memory: consecutive for consecutive entries (blocks of replay are cut by it). */
  readonly seq: number;
}

/** A part of a replay: the events of consecutive entries, and the last one's cursor. */
interface Piece {
  readonly bytes: Buffer;
  readonly last: bigint;
}

/** Entries per replay block (one write; a whole block is encoded once and shared by every replay). */
const BLOCK = 100;

interface Subscriber {
  readonly res: ServerResponse;
  readonly address: string;
  /** Last cursor written to this subscriber. */
  sent: bigint;
  /** Live events held while the subscriber replays its backlog. */
  queue: HeldEntry[] | undefined;
  /** The backlog to replay (taken from memory when admitted). */
  replay: Piece[];
  released: boolean;
}

/** Formats one revocation as a server-sent event (HTML Living Standard §9.2.5). */
export function formatEvent(entry: RevocationEntry): string {
  return `id: ${entry.cursor}\ndata: ${JSON.stringify(entry)}\n\n`;
}

/** The answer to a subscription request. */
export type Admission =
  | { readonly outcome: "admitted"; readonly subscription: Subscription }
  /** Every slot of the instance is taken. */
  | { readonly outcome: "full" }
  /** Every slot of this client address is taken. */
  | { readonly outcome: "address_full" }
  /**
   * This client address has resumed too often (replays and feed re-reads, {@link ReplayBudget}); one
   * more is available in `retryAfterSeconds`.
   */
  | { readonly outcome: "replays_exhausted"; readonly retryAfterSeconds: number }
  /** The cursor cannot be continued from here. */
  | { readonly outcome: "reset"; readonly reset: CursorReset };

/** An admitted subscriber, registered (live events are held for it) but not yet replayed to. */
export interface Subscription {
  /**
   * Replays the backlog (from memory, through the instance's {@link ReplayScheduler}), then delivers
   * live events.
   */
  run(): Promise<void>;
}

/**
 * The per-instance fan-out behind `GET /revocations/stream`. It follows the feed table from the latest
 * cursor, woken by LISTEN/NOTIFY (and a periodic re-read), keeps the newest `maxReplayEntries` entries
 * in memory, and writes every new entry to every subscriber in cursor order. A resuming subscriber is
 * replayed its backlog from that memory (never from the database, so a crowd of resuming subscribers
 * costs the database nothing), live events held meanwhile, so nothing is lost or sent twice.
 *
 * It also watches the feed's epoch: when the epoch changes, or the head moves backwards under the same
 * epoch (a restore to an earlier point, which then draws a new epoch), every stream is ended, so
 * subscribers reconnect with their old cursors and are told to resynchronise.
 */
export class RevocationHub {
  readonly #options: RevocationHubOptions;
  readonly #subscribers = new Set<Subscriber>();
  readonly #perAddress = new Map<string, number>();
  readonly #replays = new ReplayScheduler();
  readonly #replayBudget: ReplayBudget;
  /** Admissions in progress (their slots are taken). */
  #admitting = 0;
  #epoch = "";
  #lowWater = 0n;
  #head = 0n;
  /** The newest held entries, oldest first: every entry the feed held in (#floor, #head] when read. */
  #window: HeldEntry[] = [];
  #floor = 0n;
  #nextSeq = 0;
  /** Whole blocks of the window, encoded once: block `k` holds the entries of seq `k × BLOCK` onwards. */
  readonly #blocks = new Map<number, Buffer>();
  #started = false;
  #closed = false;
  #reading: Promise<void> | undefined;
  #again = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #lastErrorLog = 0;

  constructor(options: RevocationHubOptions) {
    this.#options = options;
    this.#replayBudget = new ReplayBudget(
      options.maxReplaysPerMinute,
      options.maxPerAddress,
      undefined,
      options.now,
    );
  }

  /** How many subscribers are connected. */
  get size(): number {
    return this.#subscribers.size;
  }

  /** The epoch the hub follows (tests). */
  get epoch(): string {
    return this.#epoch;
  }

  /** How many entries are held in memory for replay (tests). */
  get held(): number {
    return this.#window.length;
  }

  /** Reads the feed's state and its tail, and starts the timers. */
  async start(): Promise<void> {
    if (this.#started) return;
    await this.#load(await readFeedState(this.#options.db));
    this.#started = true;
    this.#heartbeat = setInterval(() => this.#broadcastRaw(": heartbeat\n\n"), this.#options.heartbeatMs);
    this.#heartbeat.unref();
    this.#poll = setInterval(() => this.wake(), this.#options.pollMs);
    this.#poll.unref();
  }

  /** Replaces the memory with the tail of the feed as `state` describes it. */
  async #load(state: FeedState): Promise<void> {
    const max = this.#options.maxReplayEntries;
    const tail = await readFeedTail(this.#options.db, state.epoch, state.lowWater, max + 1);
    this.#blocks.clear();
    const held = tail.map((entry) => this.#entry(entry));
    let floor = state.lowWater;
    if (held.length > max) floor = held.splice(0, held.length - max).at(-1)?.cursor ?? floor;
    this.#epoch = state.epoch;
    this.#lowWater = state.lowWater;
    this.#window = held;
    this.#floor = floor;
    const last = held.at(-1)?.cursor ?? 0n;
    this.#head = last > state.head ? last : state.head;
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

  /** Reads the feed now and waits for it. */
  async refresh(): Promise<void> {
    this.wake();
    await this.settled();
  }

  async #readNew(): Promise<void> {
    const { db, logger } = this.#options;
    try {
      const state = await readFeedState(db);
      if (state.epoch !== this.#epoch) {
        logger.warn({ event: "revocations.epoch_changed" }, "revocation feed epoch changed; streams reset");
        await this.#load(state);
        this.endStreams(false);
        return;
      }
      if (state.head < this.#head) {
        // The head never moves backwards (compaction records what it removed): the database was restored
        // to an earlier point. Gateways holding cursors of the lost future must resynchronise.
        logger.warn(
          { event: "revocations.head_moved_back", head: state.head.toString(), seen: this.#head.toString() },
          "revocation feed moved backwards (database restored?); drawing a new epoch",
        );
        await rotateEpoch(db, state.epoch);
        await this.#load(await readFeedState(db));
        this.endStreams(false);
        return;
      }
      this.#lowWater = state.lowWater;
      this.#dropThrough(state.lowWater);
      for (let page = 0; page < 100; page++) {
        const entries = await readFeed(db, this.#epoch, this.#head, MAX_FEED_PAGE);
        for (const entry of entries) {
          const cursor = cursorOf(entry);
          if (cursor <= this.#head) continue;
          this.#head = cursor;
          const held = this.#entry(entry);
          this.#hold(held);
          this.#deliver(held);
        }
        if (entries.length < MAX_FEED_PAGE) {
          // Entries written and compacted between two reads leave the head above the last one read.
          if (state.head > this.#head) this.#head = state.head;
          return;
        }
      }
      this.#again = true;
    } catch (error) {
      const now = Date.now();
      if (now - this.#lastErrorLog > 10_000) {
        this.#lastErrorLog = now;
        logger.warn({ err: { message: (error as Error).message } }, "revocation feed read failed; retrying");
      }
    }
  }

  #entry(entry: RevocationEntry): HeldEntry {
    const text = formatEvent(entry);
    return { cursor: cursorOf(entry), text, bytes: Buffer.from(text), seq: this.#nextSeq++ };
  }

  #hold(entry: HeldEntry): void {
    this.#window.push(entry);
    const excess = this.#window.length - this.#options.maxReplayEntries;
    if (excess > 0) {
      this.#floor = this.#window.splice(0, excess).at(-1)?.cursor ?? this.#floor;
      this.#pruneBlocks();
    }
  }

  /** Forgets held entries at or below `lowWater` (compacted away). */
  #dropThrough(lowWater: bigint): void {
    if (lowWater <= this.#floor) return;
    this.#floor = lowWater;
    const keep = firstAfter(this.#window, lowWater);
    if (keep > 0) {
      this.#window.splice(0, keep);
      this.#pruneBlocks();
    }
  }

  /** Drops encoded blocks whose first entry has left the window. */
  #pruneBlocks(): void {
    const first = this.#window[0]?.seq ?? this.#nextSeq;
    for (const block of this.#blocks.keys()) if (block * BLOCK < first) this.#blocks.delete(block);
  }

  /**
   * The window from index `from` on, as replay pieces: whole blocks from the shared encoded copy (built
   * on first use), partial blocks at either end concatenated for this replay.
   */
  #pieces(from: number): Piece[] {
    const window = this.#window;
    const pieces: Piece[] = [];
    let i = from;
    while (i < window.length) {
      const { seq } = window[i] as HeldEntry;
      const block = Math.floor(seq / BLOCK);
      const end = Math.min(window.length, i + (block + 1) * BLOCK - seq);
      const last = (window[end - 1] as HeldEntry).cursor;
      const whole = seq === block * BLOCK && end - i === BLOCK;
      let bytes = whole ? this.#blocks.get(block) : undefined;
      if (bytes === undefined) {
        bytes = Buffer.concat(window.slice(i, end).map((entry) => entry.bytes));
        if (whole) this.#blocks.set(block, bytes);
      }
      pieces.push({ bytes, last });
      i = end;
    }
    return pieces;
  }

  #deliver(entry: HeldEntry): void {
    for (const subscriber of this.#subscribers) {
      if (subscriber.queue === undefined) {
        if (entry.cursor > subscriber.sent) this.#write(subscriber, entry.text, entry.cursor);
      } else if (subscriber.queue.length < this.#options.maxReplayEntries) {
        subscriber.queue.push(entry);
      } else {
        // More live entries than a replay holds arrived while it replayed: it resumes by reconnecting.
        this.#release(subscriber);
        subscriber.res.destroy();
      }
    }
  }

  #write(subscriber: Subscriber, text: string, cursor?: bigint): void {
    const { res } = subscriber;
    if (res.destroyed || res.writableEnded) {
      this.#release(subscriber);
      return;
    }
    if (res.writableLength > (this.#options.maxBufferedBytes ?? 1024 * 1024)) {
      // A consumer this far behind would only fall further: it reconnects with Last-Event-ID.
      this.#release(subscriber);
      res.destroy();
      return;
    }
    res.write(text);
    if (cursor !== undefined) subscriber.sent = cursor;
  }

  #broadcastRaw(text: string): void {
    for (const subscriber of this.#subscribers) if (!subscriber.queue) this.#write(subscriber, text);
  }

  #release(subscriber: Subscriber): void {
    if (subscriber.released) return;
    subscriber.released = true;
    this.#subscribers.delete(subscriber);
    this.#releaseSlot(subscriber.address);
  }

  #releaseSlot(address: string): void {
    const count = (this.#perAddress.get(address) ?? 1) - 1;
    if (count > 0) this.#perAddress.set(address, count);
    else this.#perAddress.delete(address);
  }

  /** Whether `cursor` can be replayed from memory; the reset to answer when not. */
  #check(cursor: FeedCursor): CursorReset | undefined {
    const reset = checkCursor(cursor, { epoch: this.#epoch, lowWater: this.#lowWater, head: this.#head });
    if (reset !== undefined) return reset;
    if (cursor.position < this.#floor) {
      return {
        reason: "cursor_beyond_replay",
        description:
          `the cursor is more than ${this.#options.maxReplayEntries} entries behind: read ` +
          "GET /revocations after the cursor given, then resume the stream",
        restart: formatCursor(this.#epoch, cursor.position),
      };
    }
    return undefined;
  }

  /**
   * Admits a subscriber on `res` (headers not yet sent) from `address`: takes one of the instance's
   * slots and one of the address's, then checks `after` against the feed, then, when there is a
   * backlog to replay, takes one of the address's replays. When `after` is ahead of what this instance
   * has read, or of another epoch, the feed is read first (another instance may have written it):
   * that re-read takes the address's replay instead (taken before reading; refused, nothing is read),
   * so a caller reconnecting in a loop with such a cursor makes the database work no more often than
   * its replays allow. Concurrent re-reads are merged into one ({@link wake}). An admission takes at
   * most one replay. Admitted, it is registered at once, its backlog (every held entry after `after`)
   * taken from memory; without `after`, only entries newer than now are sent. Refused, nothing is held.
   */
  async admit(res: ServerResponse, address: string, after: FeedCursor | undefined): Promise<Admission> {
    if (this.#closed || this.#subscribers.size + this.#admitting >= this.#options.maxSubscribers) {
      return { outcome: "full" };
    }
    const taken = this.#perAddress.get(address) ?? 0;
    if (taken >= this.#options.maxPerAddress) return { outcome: "address_full" };
    this.#perAddress.set(address, taken + 1);
    this.#admitting++;
    let admitted = false;
    try {
      let charged = false;
      // Another instance may have written it, or drawn a new epoch, since this one last read.
      if (
        after !== undefined &&
        (after.position > this.#head || (after.epoch ?? this.#epoch) !== this.#epoch)
      ) {
        const retryAfterSeconds = this.#replayBudget.take(address);
        if (retryAfterSeconds > 0) return { outcome: "replays_exhausted", retryAfterSeconds };
        charged = true;
        await this.refresh();
      }
      if (this.#closed) return { outcome: "full" };
      const reset = after === undefined ? undefined : this.#check(after);
      if (reset !== undefined) return { outcome: "reset", reset };
      const replay = after === undefined ? [] : this.#pieces(firstAfter(this.#window, after.position));
      if (replay.length > 0 && !charged) {
        const retryAfterSeconds = this.#replayBudget.take(address);
        if (retryAfterSeconds > 0) return { outcome: "replays_exhausted", retryAfterSeconds };
      }
      const subscriber: Subscriber = {
        res,
        address,
        sent: after === undefined ? this.#head : after.position,
        queue: after === undefined ? undefined : [],
        replay,
        released: false,
      };
      this.#subscribers.add(subscriber);
      admitted = true;
      res.once("close", () => this.#release(subscriber));
      return { outcome: "admitted", subscription: { run: () => this.#replay(subscriber) } };
    } finally {
      this.#admitting--;
      if (!admitted) this.#releaseSlot(address);
    }
  }

  async #replay(subscriber: Subscriber): Promise<void> {
    const { res } = subscriber;
    const backlog = subscriber.replay;
    subscriber.replay = [];
    const written = await this.#replays.replay(
      res,
      backlog.map((piece) => piece.bytes),
    );
    if (written > 0) subscriber.sent = (backlog[written - 1] as Piece).last;
    if (subscriber.released || res.destroyed || res.writableEnded) return;
    const held = subscriber.queue ?? [];
    subscriber.queue = undefined;
    for (const entry of held) {
      if (entry.cursor > subscriber.sent) this.#write(subscriber, entry.text, entry.cursor);
    }
  }

  /**
   * Ends every stream. With `refuse` (draining: open streams must not hold the server open) new ones are
   * refused from then on.
   */
  endStreams(refuse = true): void {
    if (refuse) this.#closed = true;
    for (const subscriber of [...this.#subscribers]) {
      this.#release(subscriber);
      if (!subscriber.res.writableEnded) subscriber.res.end();
    }
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

function cursorOf(entry: RevocationEntry): bigint {
  return BigInt(entry.cursor.slice(entry.cursor.indexOf(".") + 1));
}

/** Index of the first entry whose cursor is above `position` (binary search; entries ascend). */
function firstAfter(entries: readonly HeldEntry[], position: bigint): number {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((entries[middle] as HeldEntry).cursor <= position) low = middle + 1;
    else high = middle;
  }
  return low;
}
