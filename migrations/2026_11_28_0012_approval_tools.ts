import type { Kysely } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * An approval may name the MCP tools, resources and prompts of its task: `tools`, `resources` and
 * `prompts` are JSON arrays of names (URIs for resources), null when the approval names none (then
 * every one its scopes allow). Approvals created before this migration name none.
 */
export async function up(db: Db): Promise<void> {
  await db.schema
    .alterTable("approvals")
    .addColumn("tools", "jsonb")
    .addColumn("resources", "jsonb")
    .addColumn("prompts", "jsonb")
    .execute();
}

export async function down(db: Db): Promise<void> {
  await db.schema
    .alterTable("approvals")
    .dropColumn("tools")
    .dropColumn("resources")
    .dropColumn("prompts")
    .execute();
}
