import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** One entry of the revocation feed (docs/reference.md#the-revocation-feed), as served on the wire. */
export interface RevocationEntry {
  readonly approval_id: string;
  /** ISO 8601: when the approval was revoked, or when it expired. */
  readonly revoked_at: string;
  /** Position in the feed: a decimal string, strictly increasing in commit order. */
  readonly cursor: string;
  /** Extension: `revoked` (an approver revoked it) or `expired` (its `expires_at` passed). */
  readonly reason: "revoked" | "expired";
}

/** Largest page of the feed. Also the default page size. */
export const MAX_FEED_PAGE = 500;

const CURSOR_PATTERN = /^(0|[1-9][0-9]{0,18})$/;
const MAX_BIGINT = 9_223_372_036_854_775_807n;

/** True for a cursor this feed can have produced: a non-negative decimal bigint. */
export function isCursor(value: string): boolean {
  return CURSOR_PATTERN.test(value) && BigInt(value) <= MAX_BIGINT;
}

/**
 * Reads up to `limit` entries after `after` (exclusive), oldest first. Cursors commit in order (the
 * `revocations_ordered_cursor` trigger), so continuing after the last cursor read never skips an entry.
 * @param after - a cursor ({@link isCursor}); `"0"` reads from the beginning.
 * @param limit - 1 to {@link MAX_FEED_PAGE}.
 */
export async function readFeed(
  db: Kysely<Database>,
  after: string,
  limit: number,
): Promise<RevocationEntry[]> {
  const rows = await db
    .selectFrom("revocations")
    .select([sql<string>`"cursor"::text`.as("cursor"), "approval_id", "reason", "revoked_at"])
    .where("cursor", ">", after)
    .orderBy("revocations.cursor", "asc")
    .limit(Math.min(Math.max(1, Math.trunc(limit)), MAX_FEED_PAGE))
    .execute();
  return rows.map((row) => ({
    approval_id: row.approval_id,
    revoked_at: new Date(row.revoked_at).toISOString(),
    cursor: row.cursor,
    reason: row.reason,
  }));
}

/** The latest cursor in the feed, `"0"` when it is empty. */
export async function latestCursor(db: Kysely<Database>): Promise<string> {
  const { rows } = await sql<{
    cursor: string;
  }>`select coalesce(max("cursor"), 0)::text as "cursor" from revocations`.execute(db);
  return rows[0]?.cursor ?? "0";
}
