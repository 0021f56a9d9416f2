import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/** Advisory lock key that serializes cursor assignment in `revocations` ("csrv" in ASCII). */
const REVOCATION_CURSOR_LOCK = 0x63737276;

export async function up(db: Db): Promise<void> {
  // rate-limiter-flexible's RateLimiterPostgres layout (key, points, expire in epoch ms), created here
  // so the library never runs DDL at request time (`tableCreated: true`). `key` is text, not the
  // library's varchar(255): client ids may be 255 characters before the prefix.
  await db.schema
    .createTable("issuance_rate_limits")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("points", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("expire", "bigint")
    .execute();
  await db.schema
    .createIndex("issuance_rate_limits_expire_idx")
    .on("issuance_rate_limits")
    .column("expire")
    .execute();

  // The expiry sweeper's scan: approvals that can still expire into the feed.
  await sql`create index approvals_expiring_idx on approvals (expires_at)
    where status in ('approved', 'pending')`.execute(db);
  // The sweeper's watermark: the latest expiry already in the feed.
  await sql`create index revocations_expired_at_idx on revocations (revoked_at)
    where reason = 'expired'`.execute(db);

  // Feed readers continue after the last cursor they saw, so a cursor must never commit after a larger
  // one (a bigserial default is drawn before commit order is known). Each inserting transaction takes a
  // transaction-scoped advisory lock and only then draws its cursor: cursors commit in order. Inserts
  // into revocations are rare (a revocation, an expiry sweep), so serializing them costs nothing.
  await sql`create function revocations_ordered_cursor() returns trigger language plpgsql as $$
    begin
      perform pg_advisory_xact_lock(${sql.lit(REVOCATION_CURSOR_LOCK)});
      new."cursor" := nextval(pg_get_serial_sequence('revocations', 'cursor'));
      return new;
    end
  $$`.execute(db);
  await sql`create trigger revocations_ordered_cursor before insert on revocations
    for each row execute function revocations_ordered_cursor()`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop trigger if exists revocations_ordered_cursor on revocations`.execute(db);
  await sql`drop function if exists revocations_ordered_cursor()`.execute(db);
  await sql`drop index if exists revocations_expired_at_idx`.execute(db);
  await sql`drop index if exists approvals_expiring_idx`.execute(db);
  await db.schema.dropTable("issuance_rate_limits").ifExists().execute();
}
