import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/**
 * An approval's lifecycle events (outcome `granted`): what its trail always shows, however many other
 * events it has. `audit_events_lifecycle_idx` (migration 0009) indexes exactly these.
 */
export const LIFECYCLE_EVENTS = [
  "approval.requested",
  "approval.approved",
  "approval.denied",
  "approval.revoked",
] as const;

/** One row of an approval's audit trail (no `detail`: it stays server-side). */
export interface AuditTrailRow {
  readonly id: string;
  readonly at: Date;
  readonly event: string;
  readonly outcome: "granted" | "refused" | "info";
  readonly reason: string | null;
  readonly actor: string | null;
  /** How many events the row stands for (more than 1 only for counted refusals). */
  readonly occurrences: number;
  /** When the last of them happened (counted refusals only). */
  readonly last_at: Date | null;
}

/** An approval's audit trail: at most `max` rows, oldest first, and whether any was left out. */
export interface AuditTrail {
  readonly rows: AuditTrailRow[];
  readonly truncated: boolean;
}

const COLUMNS = sql`id::text as id, at, event, outcome, reason, actor, occurrences, last_at`;
const LIFECYCLE = sql.raw(
  `event in (${LIFECYCLE_EVENTS.map((event) => `'${event}'`).join(", ")}) and outcome = 'granted'`,
);
/** Most lifecycle rows read (an approval has at most one of each, but the table does not enforce it). */
const MAX_LIFECYCLE_ROWS = 16;

/**
 * The audit trail of approval `approvalId`, oldest first, at most `max` rows: first its lifecycle
 * events ({@link LIFECYCLE_EVENTS}) and its first and last granted token requests, then as many of
 * its latest other events as fit. So its history is never pushed out by refusals, which besides only
 * its own agent can write under it, counted per window. `truncated` says that events were left out.
 * One query of four indexed parts: the lifecycle events (`audit_events_lifecycle_idx`), the first and
 * the last grant, the latest `max + 1` events (`audit_events_approval_idx`).
 */
export async function approvalAuditTrail(
  db: Kysely<Database>,
  approvalId: string,
  max: number,
): Promise<AuditTrail> {
  const grant = sql`approval_id = ${approvalId} and outcome = 'granted' and not (${LIFECYCLE})`;
  const { rows: read } = await sql<AuditTrailRow & { part: "pinned" | "latest" }>`
    (select ${COLUMNS}, 'pinned' as part from audit_events where approval_id = ${approvalId} and ${LIFECYCLE}
      order by id limit ${MAX_LIFECYCLE_ROWS})
    union all (select ${COLUMNS}, 'pinned' as part from audit_events where ${grant} order by id limit 1)
    union all (select ${COLUMNS}, 'pinned' as part from audit_events where ${grant} order by id desc limit 1)
    union all (select ${COLUMNS}, 'latest' as part from audit_events where approval_id = ${approvalId}
      order by id desc limit ${max + 1})`.execute(db);
  const strip = ({ part: _part, ...row }: AuditTrailRow & { part: string }): AuditTrailRow => row;
  const pinned = read.filter((row) => row.part === "pinned").map(strip);
  const latest = read.filter((row) => row.part === "latest").map(strip);
  const chosen = new Map<string, AuditTrailRow>();
  for (const row of pinned) {
    if (chosen.size < max) chosen.set(row.id, row);
  }
  for (const row of latest) {
    if (chosen.size >= max) break;
    chosen.set(row.id, row);
  }
  const rows = [...chosen.values()].sort((a, b) => compareIds(a.id, b.id));
  // Fewer than max + 1 latest rows means they are all of the approval's rows, and all fit.
  return { rows, truncated: latest.length > max };
}

/** Orders decimal bigint ids. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
