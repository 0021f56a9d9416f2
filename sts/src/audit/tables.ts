import type { ColumnType, Kysely } from "kysely";
import type { Database } from "../db/schema.js";

/**
 * The columns migration `2026_11_28_0009_retention` adds to `audit_events`: a counted row stands for
 * `occurrences` refusals of one (client, event, reason, approval) in the window of `window_seconds`
 * seconds starting at `at`, the last of them at `last_at`. A single event has 1, null and null.
 */
export interface CountedAuditColumns {
  occurrences: ColumnType<number, number | undefined, number>;
  last_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  window_seconds: ColumnType<number | null, number | null | undefined, number | null>;
}

/** {@link Database} with the counted-refusal columns of `audit_events`. */
export type AuditTables = { audit_events: CountedAuditColumns };

/** `db` typed with {@link AuditTables}. */
export function auditTables(db: Kysely<Database>): Kysely<Database & AuditTables> {
  return db.withTables<AuditTables>();
}
