import type { Kysely } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * An index for the Cedar context's `recent_exchanges_per_minute`: the tokens issued to one agent since
 * a moment, counted at every exchange.
 */
export async function up(db: Db): Promise<void> {
  await db.schema
    .createIndex("issued_tokens_client_iat_idx")
    .on("issued_tokens")
    .columns(["client_id", "iat"])
    .execute();
}

export async function down(db: Db): Promise<void> {
  await db.schema.dropIndex("issued_tokens_client_iat_idx").execute();
}
