import type { Kysely } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * An approval may bind one MCP `tools/call`: `call_tool` is the tool, `call_arguments` the RFC 8785
 * canonical JSON text of its `arguments` (text, not jsonb, so that what the approver saw is kept
 * byte for byte), and `call_arguments_digest` base64url(SHA-256) of that text. All three are null
 * when the approval binds no call, as for every approval created before this migration.
 */
export async function up(db: Db): Promise<void> {
  await db.schema
    .alterTable("approvals")
    .addColumn("call_tool", "text")
    .addColumn("call_arguments", "text")
    .addColumn("call_arguments_digest", "text")
    .execute();
}

export async function down(db: Db): Promise<void> {
  await db.schema
    .alterTable("approvals")
    .dropColumn("call_tool")
    .dropColumn("call_arguments")
    .dropColumn("call_arguments_digest")
    .execute();
}
