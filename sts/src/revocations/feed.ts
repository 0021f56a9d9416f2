import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** One entry of the revocation feed (docs/reference.md#the-revocation-feed), as served on the wire. */
export interface RevocationEntry {
  readonly approval_id: string;
  /** ISO 8601: when the approval was revoked, or when it expired. */
  readonly revoked_at: string;
  /** Position in the feed: `<epoch>.<n>` ({@link formatCursor}), strictly increasing in commit order. */
  readonly cursor: string;
  /** Extension: `revoked` (an approver revoked it) or `expired` (its `expires_at` passed). */
  readonly reason: "revoked" | "expired";
}

/** Largest page of the feed. Also the default page size. */
export const MAX_FEED_PAGE = 500;

const MAX_BIGINT = 9_223_372_036_854_775_807n;
/** `<epoch>.<n>`, or the plain `<n>` of earlier versions (read as the current epoch). */
const CURSOR_PATTERN = /^(?:([0-9a-f]{16})\.)?(0|[1-9][0-9]{0,18})$/;

/** A cursor as a gateway sent it. */
export interface FeedCursor {
  /** The feed's epoch it was issued under; undefined for a plain numeric cursor. */
  readonly epoch: string | undefined;
  /** The position: every entry at or below it has been read. */
  readonly position: bigint;
}

/** Parses `<epoch>.<n>` or a plain `<n>`; undefined when it is neither. */
export function parseCursor(value: string): FeedCursor | undefined {
  const match = CURSOR_PATTERN.exec(value);
  if (match === null) return undefined;
  const position = BigInt(match[2] as string);
  if (position > MAX_BIGINT) return undefined;
  return { epoch: match[1], position };
}

/** The wire form of a position in the feed of `epoch`: `<epoch>.<n>`. */
export function formatCursor(epoch: string, position: bigint): string {
  return `${epoch}.${position}`;
}

/** Where the feed stands, read from the database. */
export interface FeedState {
  /** The feed's epoch: a random id drawn when the database was created (or rotated after a restore). */
  readonly epoch: string;
  /**
   * The low-water mark: the largest cursor compacted away (0 before any compaction). Compaction removes
   * only a prefix, so the feed holds every entry above it: reading after it returns the current snapshot.
   */
  readonly lowWater: bigint;
  /** The largest cursor ever committed (held or compacted away). */
  readonly head: bigint;
}

/** Reads the feed's epoch, low-water mark and head. */
export async function readFeedState(db: Kysely<Database>): Promise<FeedState> {
  const row = await db
    .selectFrom("revocation_feed")
    .select((eb) => [
      "epoch",
      sql<string>`compacted_through::text`.as("compacted_through"),
      eb
        .selectFrom("revocations")
        .select(sql<string | null>`max("cursor")::text`.as("max_held"))
        .as("max_held"),
    ])
    .executeTakeFirst();
  if (row === undefined) throw new Error("the revocation_feed row is missing");
  const lowWater = BigInt(row.compacted_through);
  const maxHeld = row.max_held === null || row.max_held === undefined ? 0n : BigInt(row.max_held);
  return { epoch: row.epoch, lowWater, head: maxHeld > lowWater ? maxHeld : lowWater };
}

/** Why a cursor cannot be continued from (the `reason` of a 410 `cursor_reset`). */
export type CursorResetReason =
  | "cursor_epoch_mismatch"
  | "cursor_below_low_water"
  | "cursor_ahead_of_head"
  | "cursor_beyond_replay";

/** A cursor the feed cannot continue from, and where to restart. */
export interface CursorReset {
  readonly reason: CursorResetReason;
  readonly description: string;
  /** The low-water mark of the current epoch: reading after it returns the whole current snapshot. */
  readonly restart: string;
}

/**
 * Checks that reading after `cursor` misses nothing the feed holds: same epoch (a plain numeric cursor
 * is taken as the current one), not below the low-water mark, not ahead of the head.
 * @returns undefined when it may be continued from.
 */
export function checkCursor(cursor: FeedCursor, state: FeedState): CursorReset | undefined {
  const restart = formatCursor(state.epoch, state.lowWater);
  if (cursor.epoch !== undefined && cursor.epoch !== state.epoch) {
    return {
      reason: "cursor_epoch_mismatch",
      description: "the cursor is from another epoch of the feed (the database was restored or replaced)",
      restart,
    };
  }
  if (cursor.position < state.lowWater) {
    return {
      reason: "cursor_below_low_water",
      description: "the cursor is below the feed's low-water mark: older entries were compacted away",
      restart,
    };
  }
  if (cursor.position > state.head) {
    return {
      reason: "cursor_ahead_of_head",
      description: "the cursor is ahead of the feed's head (the database was restored to an earlier point)",
      restart,
    };
  }
  return undefined;
}

interface FeedRow {
  cursor: string;
  approval_id: string;
  reason: "revoked" | "expired";
  revoked_at: Date | string;
}

function toEntry(epoch: string, row: FeedRow): RevocationEntry {
  return {
    approval_id: row.approval_id,
    revoked_at: new Date(row.revoked_at).toISOString(),
    cursor: formatCursor(epoch, BigInt(row.cursor)),
    reason: row.reason,
  };
}

function clampLimit(limit: number): number {
  return Math.min(Math.max(1, Math.trunc(limit)), MAX_FEED_PAGE);
}

/**
 * Reads up to `limit` entries after `after` (exclusive), oldest first, labelled with `epoch`. Cursors
 * commit in order (the `revocations_ordered_cursor` trigger), so continuing after the last cursor read
 * never skips an entry.
 * @param limit - 1 to {@link MAX_FEED_PAGE}.
 */
export async function readFeed(
  db: Kysely<Database>,
  epoch: string,
  after: bigint,
  limit: number,
): Promise<RevocationEntry[]> {
  const rows = await db
    .selectFrom("revocations")
    .select([sql<string>`"cursor"::text`.as("cursor"), "approval_id", "reason", "revoked_at"])
    .where("cursor", ">", after.toString())
    .orderBy("revocations.cursor", "asc")
    .limit(clampLimit(limit))
    .execute();
  return rows.map((row) => toEntry(epoch, row));
}

/**
 * Reads the newest `limit` entries after `after` (exclusive), returned oldest first: the tail of the
 * feed a stream can replay from memory. Any `limit` ≥ 1 (one statement, not paged).
 */
export async function readFeedTail(
  db: Kysely<Database>,
  epoch: string,
  after: bigint,
  limit: number,
): Promise<RevocationEntry[]> {
  const rows = await db
    .selectFrom("revocations")
    .select([sql<string>`"cursor"::text`.as("cursor"), "approval_id", "reason", "revoked_at"])
    .where("cursor", ">", after.toString())
    .orderBy("revocations.cursor", "desc")
    .limit(Math.max(1, Math.trunc(limit)))
    .execute();
  return rows.reverse().map((row) => toEntry(epoch, row));
}

/**
 * Draws a new epoch if the feed's is still `expected` (compare-and-set, so instances that notice the
 * same restore agree on one new epoch).
 * @returns the epoch now in force.
 */
export async function rotateEpoch(db: Kysely<Database>, expected: string): Promise<string> {
  await db
    .updateTable("revocation_feed")
    .set({ epoch: sql<string>`substr(md5(gen_random_uuid()::text), 1, 16)` })
    .where("epoch", "=", expected)
    .execute();
  return (await readFeedState(db)).epoch;
}
