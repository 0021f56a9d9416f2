import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * Indexes for the per-agent bounds on approval requests:
 *
 * - `approvals_pending_client_idx`: an agent's pending, unexpired approvals, counted under a per-agent
 *   lock at every `POST /approvals` (the cap), without scanning its history or its expired requests.
 * - `approvals_decided_idx`: approvals decided after a moment, which a pending list's later pages count
 *   back into the snapshot their first page ranked (so their order does not move between pages).
 */
export async function up(db: Db): Promise<void> {
  await sql`create index approvals_pending_client_idx on approvals (client_id, expires_at)
    where status = 'pending'`.execute(db);
  await sql`create index approvals_decided_idx on approvals (decided_at)
    where decided_at is not null`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop index if exists approvals_decided_idx`.execute(db);
  await sql`drop index if exists approvals_pending_client_idx`.execute(db);
}
