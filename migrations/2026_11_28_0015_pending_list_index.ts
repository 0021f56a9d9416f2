import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * `approvals_pending_rank_idx`: what the pending list ranks by (agent, request time, id) for the
 * approvals pending at a moment, in one index, so ranking reads the index only and never the scattered
 * heap rows of every pending approval (among hundreds of thousands of decided ones). Only the page's rows
 * are then read from the table.
 */
export async function up(db: Db): Promise<void> {
  await sql`create index approvals_pending_rank_idx on approvals (expires_at)
    include (client_id, created_at, id) where status = 'pending'`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop index if exists approvals_pending_rank_idx`.execute(db);
}
