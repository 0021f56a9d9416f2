import { type Kysely, sql } from "kysely";
import type { AuditEvent } from "../audit/audit_log.js";
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
 * SQL statement (one round trip, one implicit transaction). Atomicity contract: the budget is taken by a
 * single conditional `UPDATE … WHERE status = 'approved' AND expires_at > now() AND tokens_issued <
 * max_tokens`, and the `issued_tokens` and `audit_events` rows are inserted by data-modifying CTEs that
 * select from its `RETURNING` row: they exist exactly when the update took a token, and a failure of any
 * part rolls back all of it. So under any concurrency and across instances `tokens_issued` never exceeds
 * `max_tokens` and always equals the number of `issued_tokens` rows committed for the approval. The
 * approval's row lock is held only while this one statement runs (no client round trip inside it).
 * Nothing is written when it refuses.
 * @returns the new `tokens_issued`, or the approval as it now stands (to say why not).
 */
export async function consumeBudgetAndRecord(
  db: Kysely<Database>,
  record: IssuedTokenRecord,
  audit: AuditEvent,
): Promise<{ ok: true; tokensIssued: number } | { ok: false; approval: Approval | undefined }> {
  const { rows } = await sql<{ tokens_issued: number }>`
    with taken as (
      update approvals set tokens_issued = tokens_issued + 1
      where id = ${record.approvalId} and client_id = ${record.clientId} and status = 'approved'
        and expires_at > now() and tokens_issued < max_tokens
      returning id, tokens_issued
    ), issued as (
      insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, jkt, iat, exp)
      select ${record.jti}, taken.id, ${record.clientId}, ${record.sub}, ${record.aud}, ${record.scope},
        ${record.jkt}, ${record.iat}, ${record.exp}
      from taken
    ), audited as (
      insert into audit_events (event, outcome, reason, approval_id, client_id, actor, detail)
      select ${audit.event}, ${audit.outcome}, ${audit.reason ?? null}, ${audit.approval_id ?? null},
        ${audit.client_id ?? null}, ${audit.actor ?? null},
        cast(${audit.detail ? JSON.stringify(audit.detail) : null} as jsonb)
      from taken
    )
    select tokens_issued from taken`.execute(db);
  const taken = rows[0];
  if (taken !== undefined) return { ok: true, tokensIssued: Number(taken.tokens_issued) };

  return { ok: false, approval: await findApproval(db, record.approvalId) };
}
