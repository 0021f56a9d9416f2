import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.js";

/** Rows one statement of {@link expireLapsedPending} changes by default (about 35 ms on Postgres). */
export const EXPIRE_BATCH = 1_000;

/**
 * Rows per statement on the embedded database: PGlite runs one statement at a time for the whole
 * process, and changes a row of `approvals` in about 0.7 ms, so a statement stays near 150 ms.
 */
export const EXPIRE_BATCH_EMBEDDED = 200;

/**
 * Sets pending approvals whose `expires_at` has passed to `expired`, at most `maxBatches` statements of
 * `batchSize` rows (default {@link EXPIRE_BATCH}) (found by `approvals_pending_rank_idx`, pending approvals by expiry), and returns how many. Nothing else changes but `lapsed_at` (now): no
 * decider, no `decided_at`; readers already saw them as `expired` (an approval's effective status), so only the
 * stored status catches up. This keeps the partial indexes of pending approvals (the pending list's,
 * the per-agent cap's) to the live ones plus at most one retention interval of lapsed ones, whatever an
 * agent requests.
 *
 * Safe alongside decisions and other instances: each statement locks the rows it picks (by `ctid`,
 * skipping those another transaction holds) and changes a row only if it is still `pending` and lapsed
 * (a decision on a live approval and this sweep never match the same row; a row changed meanwhile has a
 * new `ctid` and is left for the next run).
 */
export async function expireLapsedPending(
  db: Kysely<Database>,
  limits: { readonly maxBatches: number; readonly batchSize?: number },
): Promise<number> {
  const batchSize = limits.batchSize ?? EXPIRE_BATCH;
  let total = 0;
  for (let batch = 0; batch < limits.maxBatches; batch++) {
    const result = await sql`
      update approvals set status = 'expired', lapsed_at = now()
      where ctid = any(array(
        select ctid from approvals where status = 'pending' and expires_at <= now()
        limit ${batchSize} for update skip locked))
        and status = 'pending' and expires_at <= now()`.execute(db);
    const updated = Number(result.numAffectedRows ?? 0n);
    total += updated;
    if (updated < batchSize) break;
  }
  return total;
}
