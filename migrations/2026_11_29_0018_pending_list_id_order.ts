import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * The pending list orders approvals requested in the same instant by id, and compares a page's position
 * both in SQL and in the application. SQL compared ids in the database's collation, the application by
 * code unit: on a database created with a language's collation (`en_US.UTF-8`, ICU) the two disagree
 * (`apr_a…` sorts before `apr_B…` in one, after it in the other), and a page could skip approvals.
 *
 * The list now compares and orders ids with the `C` collation (byte order, which for the ASCII ids of
 * approvals is code-unit order) whatever the database's, and `approvals_pending_newest_idx` (0016) is
 * rebuilt on `id collate "C"` so the list still reads that index alone. On a database already using
 * `C` the order is unchanged.
 */
export async function up(db: Db): Promise<void> {
  await sql`drop index approvals_pending_newest_idx`.execute(db);
  await sql`create index approvals_pending_newest_idx on approvals (created_at, (id collate "C"))
    include (client_id, expires_at) where status = 'pending'`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop index approvals_pending_newest_idx`.execute(db);
  await sql`create index approvals_pending_newest_idx on approvals (created_at, id)
    include (client_id, expires_at) where status = 'pending'`.execute(db);
}
