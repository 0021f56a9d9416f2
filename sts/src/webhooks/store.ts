import { type Generated, type Kysely, type Selectable, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** `webhook_deliveries` (migration 2026_11_25_0004): the webhook outbox, one row per (event, webhook). */
export interface WebhookDeliveriesTable {
  event_id: string;
  webhook_url: string;
  event_type: string;
  approval_id: string | null;
  /** The exact JSON body sent and signed on every attempt. */
  body: string;
  status: Generated<"pending" | "delivered" | "failed">;
  attempts: Generated<number>;
  next_attempt_at: Generated<Date>;
  /** A delivering instance's lease; others skip the row until it passes. */
  locked_until: Date | null;
  last_error: string | null;
  created_at: Generated<Date>;
  delivered_at: Date | null;
}

/** The tables this module adds to {@link Database}. */
export type WebhookTables = {
  webhook_deliveries: WebhookDeliveriesTable;
};

/** A delivery row as read. */
export type WebhookDelivery = Selectable<WebhookDeliveriesTable>;

/** A delivery to enqueue. */
export interface NewWebhookDelivery {
  readonly eventId: string;
  readonly webhookUrl: string;
  readonly eventType: string;
  readonly approvalId: string | null;
  readonly body: string;
}

function tables(db: Kysely<Database>): Kysely<Database & WebhookTables> {
  return db.withTables<WebhookTables>();
}

/** Inserts pending deliveries, due now. Idempotent per (event, webhook). */
export async function enqueueDeliveries(
  db: Kysely<Database>,
  deliveries: readonly NewWebhookDelivery[],
): Promise<void> {
  if (deliveries.length === 0) return;
  await tables(db)
    .insertInto("webhook_deliveries")
    .values(
      deliveries.map((d) => ({
        event_id: d.eventId,
        webhook_url: d.webhookUrl,
        event_type: d.eventType,
        approval_id: d.approvalId,
        body: d.body,
      })),
    )
    .onConflict((oc) => oc.columns(["event_id", "webhook_url"]).doNothing())
    .execute();
}

/**
 * A summary delivery to create, or to count one more event into (see {@link foldIntoSummaries}). Its
 * body's `latest_approval_id` names the event folded in now.
 */
export interface SummaryDelivery {
  readonly eventId: string;
  readonly webhookUrl: string;
  readonly eventType: string;
  /** The summary's body as first created (`folded` 1); later folds update it in the row. */
  readonly body: string;
  /** When the summary is sent: the end of its window. */
  readonly dueAt: Date;
}

/**
 * Folds one more event into each summary delivery: inserts it (due at `dueAt`) or, when it is already
 * there and still unsent, adds 1 to its body's `folded` and sets `latest_approval_id`. One statement per
 * call; concurrent folds into one row are serialised by the row lock of the upsert, so none is lost.
 * The body is stored as Postgres normalises JSON (`jsonb::text`), the same on every update.
 */
export async function foldIntoSummaries(
  db: Kysely<Database>,
  summaries: readonly SummaryDelivery[],
): Promise<void> {
  if (summaries.length === 0) return;
  const table = tables(db);
  await table
    .insertInto("webhook_deliveries")
    .values(
      summaries.map((d) => ({
        event_id: d.eventId,
        webhook_url: d.webhookUrl,
        event_type: d.eventType,
        approval_id: null,
        body: sql<string>`(${d.body}::jsonb)::text`,
        next_attempt_at: d.dueAt,
      })),
    )
    .onConflict((oc) =>
      oc
        .columns(["event_id", "webhook_url"])
        .doUpdateSet({
          body: sql<string>`jsonb_set(
            jsonb_set(webhook_deliveries.body::jsonb, '{folded}',
              to_jsonb(coalesce((webhook_deliveries.body::jsonb ->> 'folded')::integer, 0) + 1)),
            '{latest_approval_id}', excluded.body::jsonb -> 'latest_approval_id')::text`,
        })
        .where("webhook_deliveries.status", "=", "pending")
        .where("webhook_deliveries.attempts", "=", 0),
    )
    .execute();
}

/**
 * Claims up to `limit` due pending deliveries for `leaseSeconds`, oldest due first.
 *
 * Atomicity: one `UPDATE … WHERE (event_id, webhook_url) IN (SELECT … FOR UPDATE SKIP LOCKED)`; of any
 * number of instances claiming at once, each row goes to at most one until its lease passes (a crashed
 * deliverer's rows are retried after the lease).
 */
export async function claimDueDeliveries(
  db: Kysely<Database>,
  limit: number,
  leaseSeconds: number,
): Promise<WebhookDelivery[]> {
  const { rows } = await sql<WebhookDelivery>`
    update webhook_deliveries set locked_until = now() + make_interval(secs => ${leaseSeconds})
    where (event_id, webhook_url) in (
      select event_id, webhook_url from webhook_deliveries
      where status = 'pending' and next_attempt_at <= now()
        and (locked_until is null or locked_until <= now())
      order by next_attempt_at
      limit ${limit}
      for update skip locked
    )
    returning *`.execute(db);
  return rows;
}

/** Records a successful attempt. */
export async function markDelivered(db: Kysely<Database>, delivery: WebhookDelivery): Promise<void> {
  await tables(db)
    .updateTable("webhook_deliveries")
    .set({
      status: "delivered",
      attempts: delivery.attempts + 1,
      delivered_at: sql<Date>`now()`,
      locked_until: null,
      last_error: null,
    })
    .where("event_id", "=", delivery.event_id)
    .where("webhook_url", "=", delivery.webhook_url)
    .execute();
}

/**
 * Records a failed attempt: retried after `retryInSeconds`, or given up (`failed`) when it is null.
 */
export async function markAttemptFailed(
  db: Kysely<Database>,
  delivery: WebhookDelivery,
  error: string,
  retryInSeconds: number | null,
): Promise<void> {
  await tables(db)
    .updateTable("webhook_deliveries")
    .set({
      status: retryInSeconds === null ? "failed" : "pending",
      attempts: delivery.attempts + 1,
      next_attempt_at:
        retryInSeconds === null
          ? sql<Date>`now()`
          : sql<Date>`now() + make_interval(secs => ${retryInSeconds})`,
      locked_until: null,
      last_error: error.slice(0, 500),
    })
    .where("event_id", "=", delivery.event_id)
    .where("webhook_url", "=", delivery.webhook_url)
    .execute();
}

/** Gives a claimed delivery back without counting an attempt (shutdown interrupted it). */
export async function releaseDelivery(db: Kysely<Database>, delivery: WebhookDelivery): Promise<void> {
  await tables(db)
    .updateTable("webhook_deliveries")
    .set({ locked_until: null })
    .where("event_id", "=", delivery.event_id)
    .where("webhook_url", "=", delivery.webhook_url)
    .execute();
}

/** Every delivery of an event (tests and operators). */
export async function deliveriesOf(db: Kysely<Database>, eventId: string): Promise<WebhookDelivery[]> {
  return tables(db).selectFrom("webhook_deliveries").selectAll().where("event_id", "=", eventId).execute();
}
