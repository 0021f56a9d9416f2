import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

export async function up(db: Db): Promise<void> {
  // The webhook outbox: one row per (event, webhook). `body` is the exact JSON sent (and signed) on every
  // attempt, so retries are byte-identical. Any instance may deliver a row after claiming it with a
  // lease (`locked_until`), so a crash mid-delivery only delays it.
  await db.schema
    .createTable("webhook_deliveries")
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("webhook_url", "text", (c) => c.notNull())
    .addColumn("event_type", "text", (c) => c.notNull())
    .addColumn("approval_id", "text")
    .addColumn("body", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) =>
      c.notNull().defaultTo("pending").check(sql`status in ('pending', 'delivered', 'failed')`),
    )
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0).check(sql`attempts >= 0`))
    .addColumn("next_attempt_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("locked_until", "timestamptz")
    .addColumn("last_error", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("delivered_at", "timestamptz")
    .addPrimaryKeyConstraint("webhook_deliveries_pkey", ["event_id", "webhook_url"])
    .execute();
  // The dispatcher's scan: due pending deliveries.
  await sql`create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at)
    where status = 'pending'`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await db.schema.dropTable("webhook_deliveries").ifExists().execute();
}
