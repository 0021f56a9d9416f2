import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * Refusals are counted per caller, approvers included. `audit_events_refusal_window_key` (0009) keyed a
 * counted refusal row by agent (`client_id`), event, reason, approval and window; an approver's
 * refusals have no `client_id`, so they were written one row each. The key now has `actor` too (an
 * agent's is its `client_id`, an approver's its subject), so one approver's refusals of one kind add to
 * one row per window, and two approvers' never share a row.
 *
 * Replaced in one transaction (the migrator's), so no upsert ever runs without a key to conflict on. On
 * a large `audit_events` the new index is built on every partition before the migration ends.
 */
export async function up(db: Db): Promise<void> {
  await sql`drop index audit_events_refusal_window_key`.execute(db);
  await sql`create unique index audit_events_refusal_window_key on audit_events
    (coalesce(client_id, ''), coalesce(actor, ''), event, coalesce(reason, ''), coalesce(approval_id, ''), at)
    where window_seconds is not null`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop index audit_events_refusal_window_key`.execute(db);
  await sql`create unique index audit_events_refusal_window_key on audit_events
    (coalesce(client_id, ''), event, coalesce(reason, ''), coalesce(approval_id, ''), at)
    where window_seconds is not null`.execute(db);
}
