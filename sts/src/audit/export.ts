import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { auditTables } from "./tables.js";

/** Rows read per query by {@link exportAuditEvents}. */
export const EXPORT_PAGE_SIZE = 1000;

/** One audit event as `countersign audit export` prints it (one JSON line). */
export interface ExportedAuditEvent {
  /** The row's id (a decimal integer, increasing in insertion order). */
  readonly id: string;
  /** When it happened, ISO 8601 (for a counted row: the start of its window). */
  readonly at: string;
  readonly event: string;
  readonly outcome: "granted" | "refused" | "info";
  readonly reason: string | null;
  readonly approval_id: string | null;
  readonly client_id: string | null;
  readonly actor: string | null;
  /** The stored, non-secret detail. */
  readonly detail: Record<string, unknown> | null;
  /** How many events the row stands for (1, or more for counted refusals). */
  readonly count: number;
  /** When the last of them happened (counted refusals), ISO 8601; else null. */
  readonly last_at: string | null;
  /** The counting window's length in seconds (counted refusals); else null. */
  readonly window_seconds: number | null;
}

/** Options for {@link exportAuditEvents}. */
export interface ExportOptions {
  /** Events at or after this time. */
  readonly since: Date;
  /** Events before this time. Default: when the export starts. */
  readonly until?: Date;
  /** Rows per query. Default {@link EXPORT_PAGE_SIZE}. */
  readonly pageSize?: number;
}

/**
 * The audit events with `since` ≤ `at` < `until`, in id order, read a page at a time (keyset
 * pagination on the primary key, `id > last`): memory stays one page whatever the table's size, and no
 * transaction stays open while the caller writes them out. Events committed during the export with an
 * id below one already read are not included: export a range that has ended.
 */
export async function* exportAuditEvents(
  db: Kysely<Database>,
  options: ExportOptions,
): AsyncGenerator<ExportedAuditEvent> {
  const until = options.until ?? new Date();
  const pageSize = options.pageSize ?? EXPORT_PAGE_SIZE;
  let after: string | undefined;
  for (;;) {
    let query = auditTables(db)
      .selectFrom("audit_events")
      .selectAll()
      .where("at", ">=", options.since)
      .where("at", "<", until);
    if (after !== undefined) query = query.where("id", ">", after);
    const rows = await query.orderBy("id").limit(pageSize).execute();
    for (const row of rows) {
      yield {
        id: String(row.id),
        at: row.at.toISOString(),
        event: row.event,
        outcome: row.outcome,
        reason: row.reason,
        approval_id: row.approval_id,
        client_id: row.client_id,
        actor: row.actor,
        detail: row.detail,
        count: row.occurrences,
        last_at: row.last_at ? row.last_at.toISOString() : null,
        window_seconds: row.window_seconds,
      };
    }
    if (rows.length < pageSize) return;
    after = String(rows.at(-1)?.id);
  }
}
