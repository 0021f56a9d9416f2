import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** Most expiries one sweep writes; the rest follow at the next sweep. */
export const SWEEP_BATCH = 1000;

/**
 * Writes an `expired` feed entry (revoked_at = `expires_at`) for every approved or pending approval whose
 * `expires_at` has passed and that is not in the feed yet, oldest first, at most {@link SWEEP_BATCH}.
 * Idempotent and safe with several instances sweeping at once (`ON CONFLICT (approval_id) DO NOTHING`).
 * Only approvals expiring after the latest expiry already swept (less an hour of slack for late commits)
 * are scanned, so the work stays proportional to what is new.
 * @returns the approval ids written by this sweep.
 */
export async function sweepExpiredApprovals(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ approval_id: string }>`
    insert into revocations (approval_id, reason, revoked_at)
    select a.id, 'expired', a.expires_at
    from approvals a
    where a.status in ('approved', 'pending')
      and a.expires_at <= now()
      and a.expires_at >= coalesce(
        (select max(r.revoked_at) from revocations r where r.reason = 'expired'),
        '-infinity'::timestamptz
      ) - interval '1 hour'
      and not exists (select 1 from revocations r where r.approval_id = a.id)
    order by a.expires_at
    limit ${SWEEP_BATCH}
    on conflict (approval_id) do nothing
    returning approval_id`.execute(db);
  return rows.map((row) => row.approval_id);
}
