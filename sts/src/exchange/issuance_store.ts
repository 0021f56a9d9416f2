import { type Kysely, sql } from "kysely";
import { type AuditEvent, recordAudit } from "../audit/audit_log.js";
import type { Approval, Database } from "../db/schema.js";

/** The record of a minted access token (`issued_tokens`). */
export interface IssuedTokenRecord {
  jti: string;
  approvalId: string;
  clientId: string;
  sub: string;
  aud: string;
  scope: string;
  jkt: string | null;
  iat: Date;
  exp: Date;
}

/** Reads one approval by id. */
export async function findApproval(db: Kysely<Database>, id: string): Promise<Approval | undefined> {
  return db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirst();
}

/**
 * Consumes one token of the approval's budget and records the issued token and its audit event, in one
 * transaction. Atomicity contract: the budget is taken by a single conditional
 * `UPDATE … WHERE status = 'approved' AND expires_at > now() AND tokens_issued < max_tokens`, so under
 * any concurrency and across instances `tokens_issued` never exceeds `max_tokens` and always equals
 * the number of `issued_tokens` rows committed for the approval. Nothing is written when it refuses.
 * @returns the new `tokens_issued`, or the approval as it now stands (to say why not).
 */
export async function consumeBudgetAndRecord(
  db: Kysely<Database>,
  record: IssuedTokenRecord,
  audit: AuditEvent,
): Promise<{ ok: true; tokensIssued: number } | { ok: false; approval: Approval | undefined }> {
  const result = await db.transaction().execute(async (trx) => {
    const taken = await trx
      .updateTable("approvals")
      .set({ tokens_issued: sql`tokens_issued + 1` })
      .where("id", "=", record.approvalId)
      .where("client_id", "=", record.clientId)
      .where("status", "=", "approved")
      .where("expires_at", ">", sql<Date>`now()`)
      .where("tokens_issued", "<", sql<number>`max_tokens`)
      .returning("tokens_issued")
      .executeTakeFirst();
    if (!taken) return undefined;
    await trx
      .insertInto("issued_tokens")
      .values({
        jti: record.jti,
        approval_id: record.approvalId,
        client_id: record.clientId,
        sub: record.sub,
        aud: record.aud,
        scope: record.scope,
        jkt: record.jkt,
        iat: record.iat,
        exp: record.exp,
      })
      .execute();
    await recordAudit(trx, audit);
    return taken.tokens_issued;
  });
  if (result !== undefined) return { ok: true, tokensIssued: result };

  return { ok: false, approval: await findApproval(db, record.approvalId) };
}
