import type { Kysely, Transaction } from "kysely";
import type { Database } from "../db/schema.js";
import { toStorableText, utf8Prefix } from "../db/text.js";

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
 * Most UTF-8 bytes of a refusal's stored detail (as compact JSON). A refusal may echo what the caller
 * sent (a scope, a parameter); whatever they send, its audit row stays this small.
 */
export const MAX_REFUSAL_DETAIL_BYTES = 512;

/** Most UTF-8 bytes of one string in a bounded detail; longer strings are cut and end with `…`. */
export const MAX_DETAIL_STRING_BYTES = 256;

/**
 * An event's detail as stored: JSON in which every string Postgres cannot store (NUL, lone surrogates)
 * has U+FFFD instead, since details may echo request text. The one text rule of every audit row,
 * whether written here or by the exchange's database function.
 */
export function auditDetailJson(detail: Record<string, unknown>): string {
  return JSON.stringify(detail, storable);
}

function storable(_key: string, value: unknown): unknown {
  return typeof value === "string" ? toStorableText(value) : value;
}

/** `text` cut to at most `maxBytes` of UTF-8 on a code point boundary, ending with `…` when cut. */
function cutToBytes(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  return `${utf8Prefix(text, maxBytes - Buffer.byteLength("…"))}…`;
}

/**
 * {@link auditDetailJson} bounded to `maxBytes` UTF-8 bytes (default {@link MAX_REFUSAL_DETAIL_BYTES}):
 * every string is cut to {@link MAX_DETAIL_STRING_BYTES}; if the JSON is still too long, the members
 * that do not fit are left out (in order) and `"truncated": true` is added. Never longer than
 * `maxBytes` (for any `maxBytes` ≥ 17, the size of `{"truncated":true}`).
 */
export function boundedDetailJson(
  detail: Record<string, unknown>,
  maxBytes: number = MAX_REFUSAL_DETAIL_BYTES,
): string {
  const replacer = (_key: string, value: unknown): unknown =>
    typeof value === "string" ? cutToBytes(toStorableText(value), MAX_DETAIL_STRING_BYTES) : value;
  const whole = JSON.stringify(detail, replacer);
  if (Buffer.byteLength(whole) <= maxBytes) return whole;
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(detail)) {
    const trial = JSON.stringify({ ...kept, [key]: value, truncated: true }, replacer);
    if (Buffer.byteLength(trial) <= maxBytes) kept[key] = value;
  }
  return JSON.stringify({ ...kept, truncated: true }, replacer);
}

/**
 * Appends an audit event; pass a transaction to commit it atomically with the change it records.
 * A refusal's detail is bounded ({@link boundedDetailJson}): refusals are what a caller can provoke.
 */
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
      detail: event.detail
        ? event.outcome === "refused"
          ? boundedDetailJson(event.detail)
          : auditDetailJson(event.detail)
        : null,
    })
    .execute();
}
