import { type Kysely, sql, type Transaction } from "kysely";
import type { Database } from "../db/schema.js";

/** One point taken from a fixed-window counter: the points now counted and when the window ends. */
export interface WindowPoint {
  /** Points counted in the current window, this one included (1 for the first of a window). */
  readonly points: number;
  /** When the window ends (and the count starts again at the next point). */
  readonly windowEnd: Date;
  /** The database's `now()` when the point was taken. */
  readonly now: Date;
}

/**
 * Takes one point from the fixed-window counter `key` (a row of `issuance_rate_limits`, in
 * rate-limiter-flexible's layout, through `countersign_take_point` of migration 0006): a window that has
 * ended restarts at 1 and ends `durationMs` later. Atomic (one upsert), so concurrent takes on any
 * number of instances are each counted once. Timed by the database's clock, so instances' clocks do not
 * matter. Works on Postgres and PGlite alike; one row per key, reused window after window (expired rows
 * are deleted by the issuance limiter's cleanup on Postgres).
 */
export async function takeWindowPoint(
  db: Kysely<Database> | Transaction<Database>,
  key: string,
  durationMs: number,
): Promise<WindowPoint> {
  const { rows } = await sql<{ points: string | number; expire: string | number; now: Date }>`
    select t.points, t.expire, c.now
    from (select now() as now, floor(extract(epoch from now()) * 1000)::bigint as now_ms) as c,
      lateral countersign_take_point(${key}, c.now_ms + ${Math.ceil(durationMs)}::bigint, c.now_ms) as t`.execute(
    db,
  );
  const row = rows[0];
  if (row === undefined) throw new Error("countersign_take_point returned no row");
  return { points: Number(row.points), windowEnd: new Date(Number(row.expire)), now: row.now };
}
