import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

export async function up(db: Db): Promise<void> {
  await db.schema
    .createTable("approvals")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("status", "text", (c) =>
      c.notNull().check(sql`status in ('pending', 'approved', 'denied', 'revoked', 'expired')`),
    )
    .addColumn("client_id", "text", (c) => c.notNull())
    .addColumn("resource", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("requested_scope", "text", (c) => c.notNull())
    .addColumn("task", "text", (c) => c.notNull())
    .addColumn("subject", "text")
    .addColumn("max_tokens", "integer", (c) => c.notNull().check(sql`max_tokens > 0`))
    .addColumn("tokens_issued", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("rate_limit", "jsonb")
    .addColumn("requested_by", "text", (c) => c.notNull())
    .addColumn("approved_by", "text")
    .addColumn("decided_by", "text")
    .addColumn("decision_reason", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("decided_at", "timestamptz")
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addColumn("revoked_at", "timestamptz")
    .addCheckConstraint("approvals_budget", sql`tokens_issued >= 0 and tokens_issued <= max_tokens`)
    .execute();
  await db.schema
    .createIndex("approvals_status_idx")
    .on("approvals")
    .columns(["status", "created_at"])
    .execute();
  await db.schema.createIndex("approvals_client_idx").on("approvals").column("client_id").execute();

  await db.schema
    .createTable("issued_tokens")
    .addColumn("jti", "text", (c) => c.primaryKey())
    .addColumn("approval_id", "text", (c) => c.notNull().references("approvals.id"))
    .addColumn("client_id", "text", (c) => c.notNull())
    .addColumn("sub", "text", (c) => c.notNull())
    .addColumn("aud", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("jkt", "text")
    .addColumn("iat", "timestamptz", (c) => c.notNull())
    .addColumn("exp", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("issued_tokens_approval_idx")
    .on("issued_tokens")
    .column("approval_id")
    .execute();

  await db.schema
    .createTable("audit_events")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("outcome", "text", (c) => c.notNull().check(sql`outcome in ('granted', 'refused', 'info')`))
    .addColumn("reason", "text")
    .addColumn("approval_id", "text")
    .addColumn("client_id", "text")
    .addColumn("actor", "text")
    .addColumn("detail", "jsonb")
    .execute();
  await db.schema
    .createIndex("audit_events_approval_idx")
    .on("audit_events")
    .columns(["approval_id", "id"])
    .execute();

  await db.schema
    .createTable("signing_keys")
    .addColumn("kid", "text", (c) => c.primaryKey())
    .addColumn("alg", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) =>
      c.notNull().check(sql`status in ('next', 'current', 'previous', 'retired')`),
    )
    .addColumn("public_jwk", "jsonb", (c) => c.notNull())
    .addColumn("private_jwk_enc", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("activated_at", "timestamptz")
    .addColumn("retired_at", "timestamptz")
    .execute();
  // At most one current key per algorithm.
  await sql`create unique index signing_keys_one_current on signing_keys (alg) where status = 'current'`.execute(
    db,
  );

  await db.schema
    .createTable("revocations")
    .addColumn("cursor", "bigserial", (c) => c.primaryKey())
    .addColumn("approval_id", "text", (c) => c.notNull().unique().references("approvals.id"))
    .addColumn("reason", "text", (c) => c.notNull().check(sql`reason in ('revoked', 'expired')`))
    .addColumn("revoked_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("oidc_payloads")
    .addColumn("id", "text", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("payload", "jsonb", (c) => c.notNull())
    .addColumn("grant_id", "text")
    .addColumn("user_code", "text")
    .addColumn("uid", "text")
    .addColumn("expires_at", "timestamptz")
    .addColumn("consumed_at", "timestamptz")
    .addPrimaryKeyConstraint("oidc_payloads_pkey", ["id", "type"])
    .execute();
  await db.schema.createIndex("oidc_payloads_grant_idx").on("oidc_payloads").column("grant_id").execute();
  await db.schema.createIndex("oidc_payloads_expires_idx").on("oidc_payloads").column("expires_at").execute();
}

export async function down(db: Db): Promise<void> {
  for (const table of [
    "oidc_payloads",
    "revocations",
    "signing_keys",
    "audit_events",
    "issued_tokens",
    "approvals",
  ]) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
