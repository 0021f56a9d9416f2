import type { Kysely } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * An approval's subject binding names the issuer too: `subject_issuer` is the `iss` a subject token must
 * carry besides `sub`. Null for approvals without a subject (and for those created before this column,
 * which bound `sub` alone).
 */
export async function up(db: Db): Promise<void> {
  await db.schema.alterTable("approvals").addColumn("subject_issuer", "text").execute();
}

export async function down(db: Db): Promise<void> {
  await db.schema.alterTable("approvals").dropColumn("subject_issuer").execute();
}
