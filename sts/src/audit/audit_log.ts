import type { Kysely, Transaction } from "kysely";
import type { Database } from "../db/schema.js";
import { toStorableText } from "../db/text.js";

/** One audit event: every decision, granted or refused, with its stable reason code. */
export interface AuditEvent {
  /** What happened, e.g. `approval.requested`, `approval.approved`, `token_exchange`. */
  event: string;
  outcome: "granted" | "refused" | "info";
  /** Stable reason code for refusals (e.g. `approval_revoked`); null when granted. */
  reason?: string | null;
  approval_id?: string | null;
  client_id?: string | null;
  /** Who acted: an approver's `sub`, an agent's `client_id`, `system`. */
  actor?: string | null;
  /** Extra, non-secret details (never tokens or secrets). */
  detail?: Record<string, unknown> | null;
}

/**
 * An event's detail as stored: JSON in which every string Postgres cannot store (NUL, lone surrogates)
 * has U+FFFD instead, since details may echo request text. The one text rule of every audit row,
 * whether written here or by the exchange's database function.
 */
export function auditDetailJson(detail: Record<string, unknown>): string {
  return JSON.stringify(detail, (_key, value: unknown) =>
    typeof value === "string" ? toStorableText(value) : value,
  );
}

/** Appends an audit event; pass a transaction to commit it atomically with the change it records. */
export async function recordAudit(
  db: Kysely<Database> | Transaction<Database>,
  event: AuditEvent,
): Promise<void> {
  await db
    .insertInto("audit_events")
    .values({
      event: event.event,
      outcome: event.outcome,
      reason: event.reason ?? null,
      approval_id: event.approval_id ?? null,
      client_id: event.client_id ?? null,
      actor: event.actor ?? null,
      // Details may echo request text: anything Postgres cannot store (NUL, lone surrogates) becomes U+FFFD.
      detail: event.detail ? auditDetailJson(event.detail) : null,
    })
    .execute();
}
