import type { Kysely } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/** When a key stopped signing: it stays published until every token it signed has expired. */
export async function up(db: Db): Promise<void> {
  await db.schema.alterTable("signing_keys").addColumn("deactivated_at", "timestamptz").execute();
}

export async function down(db: Db): Promise<void> {
  await db.schema.alterTable("signing_keys").dropColumn("deactivated_at").execute();
}
