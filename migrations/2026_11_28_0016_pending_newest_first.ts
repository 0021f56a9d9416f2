import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * The pending list reads its snapshot newest first and stops once its page is known, instead of ranking
 * every pending approval:
 *
 * - `approvals_pending_newest_idx`: pending approvals by request time and id (read backwards), with the
 *   agent and expiry, so a page reads this index only. Lapsed approvals leave it: the retention job
 *   sets a pending approval past its expiry to `expired`, so an agent requesting short-lived approvals
 *   cannot fill it with rows every listing has to skip. That sweep finds them through
 *   `approvals_pending_rank_idx` (0015: pending approvals by expiry), which the list no longer reads.
 * - `lapsed_at`: when that sweep set the approval to `expired` (null for every other approval), and
 *   `approvals_lapsed_idx` on it: a later page of a pending list counts the approvals that lapsed since
 *   its snapshot back in, as it does those decided since (`approvals_decided_idx`).
 */
export async function up(db: Db): Promise<void> {
  await sql`create index approvals_pending_newest_idx on approvals (created_at, id)
    include (client_id, expires_at) where status = 'pending'`.execute(db);
  await db.schema.alterTable("approvals").addColumn("lapsed_at", "timestamptz").execute();
  await sql`create index approvals_lapsed_idx on approvals (lapsed_at) where lapsed_at is not null`.execute(
    db,
  );
}

export async function down(db: Db): Promise<void> {
  await sql`drop index if exists approvals_lapsed_idx`.execute(db);
  await db.schema.alterTable("approvals").dropColumn("lapsed_at").execute();
  await sql`drop index if exists approvals_pending_newest_idx`.execute(db);
}
