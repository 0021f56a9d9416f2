import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * `approvals_pending_rank_idx`: what the pending list ranks the live pending approvals by (agent,
 * request time, id), keyed by expiry so that a range reads only the unexpired ones (a lapsed approval
 * keeps its `pending` status), so ranking reads this index only: not the heap rows of every pending
 * approval, scattered among the decided ones.
 */
export async function up(db: Db): Promise<void> {
  await sql`create index approvals_pending_rank_idx on approvals (expires_at)
    include (client_id, created_at, id) where status = 'pending'`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop index if exists approvals_pending_rank_idx`.execute(db);
}
