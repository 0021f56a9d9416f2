import { CompiledQuery, type Kysely } from "kysely";
import type pg from "pg";
import type { AuditEvent } from "../audit/audit_log.js";
import type { Approval, Database } from "../db/schema.js";
import { limitUpsertSql } from "../limits/issuance_limiter.js";
import type { LimitTake, WindowState } from "./guards.js";

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
  /**
   * The approval's terms as the token was decided on. The budget statement takes a token only while
   * the stored approval still has exactly these terms, so a decision made on a cached copy can never
   * outrun a change to the approval.
   */
  terms: Pick<Approval, "scope" | "subject" | "expires_at" | "rate_limit">;
}

/** Reads one approval by id. */
export async function findApproval(db: Kysely<Database>, id: string): Promise<Approval | undefined> {
  return db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirst();
}

/**
 * Consumes one token of the approval's budget and records the issued token and its audit event, in one
 * SQL statement (one round trip, one implicit transaction). Atomicity contract: the budget is taken by a
 * single conditional `UPDATE … WHERE status = 'approved' AND expires_at > now() AND tokens_issued <
 * max_tokens` (and the approval's terms are still `record.terms`), and the `issued_tokens` and
 * `audit_events` rows are inserted by data-modifying CTEs that
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
): Promise<BudgetOutcome> {
  return createIssuanceStore(db, undefined).consumeBudgetAndRecord(record, audit);
}

/** {@link consumeBudgetAndRecord}'s answer. */
export type BudgetOutcome =
  | { ok: true; tokensIssued: number }
  | { ok: false; approval: Approval | undefined }
  /** A rate limit taken in the same statement refused: nothing but the counters was written. */
  | { ok: false; limited: readonly [WindowState, WindowState] };

/** The token exchange's storage: the approval it reads and the budget it takes (see the functions above). */
export interface IssuanceStore {
  findApproval(id: string): Promise<Approval | undefined>;
  /**
   * Same atomicity contract as {@link consumeBudgetAndRecord}. With `limits` (only when
   * {@link takesLimits}), the statement first takes one point from each rate-limit counter and takes
   * the budget only if both admit it.
   */
  consumeBudgetAndRecord(
    record: IssuedTokenRecord,
    audit: AuditEvent,
    limits?: LimitTake,
  ): Promise<BudgetOutcome>;
  /** Whether {@link consumeBudgetAndRecord} can take the rate limits in its statement (real Postgres). */
  readonly takesLimits: boolean;
}

/**
 * The one statement of {@link consumeBudgetAndRecord}; parameters in {@link budgetParameters}' order,
 * then (with limits) the counters' keys, window ends and the time ($21–$25) and their points ($26–$27).
 * With limits, the counters' upsert runs first (agent row, then approval row, then the approval: always
 * the same lock order), and the budget is taken only when both counters are within their points.
 */
function budgetStatement(withLimits: boolean): string {
  const limits = withLimits
    ? `limits as (
    ${limitUpsertSql(21)}
  ), admitted as (
    select coalesce(bool_and(case when key = $21 then points <= $26 else points <= $27 end), false) as ok
    from limits
  ), `
    : "";
  return `
  with ${limits}taken as (
    update approvals set tokens_issued = tokens_issued + 1
    where id = $1 and client_id = $2 and status = 'approved' and expires_at > now()
      and tokens_issued < max_tokens
      and resource = $5 and scope = $17 and subject is not distinct from $18
      and expires_at between cast($19 as timestamptz) - interval '1 millisecond'
        and cast($19 as timestamptz) + interval '1 millisecond'
      and rate_limit is not distinct from cast($20 as jsonb)${withLimits ? "\n      and (select ok from admitted)" : ""}
    returning id, tokens_issued
  ), issued as (
    insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, jkt, iat, exp)
    select $3, taken.id, $2, $4, $5, $6, $7, $8, $9 from taken
  ), audited as (
    insert into audit_events (event, outcome, reason, approval_id, client_id, actor, detail)
    select $10, $11, $12, $13, $14, $15, cast($16 as jsonb) from taken
  )
  ${
    withLimits
      ? `select (select tokens_issued from taken) as tokens_issued,
    (select json_agg(json_build_array(key, points, expire)) from limits) as limits`
      : "select tokens_issued from taken"
  }`;
}

const BUDGET_STATEMENT = budgetStatement(false);
const BUDGET_AND_LIMITS_STATEMENT = budgetStatement(true);

function budgetParameters(record: IssuedTokenRecord, audit: AuditEvent): unknown[] {
  return [
    record.approvalId,
    record.clientId,
    record.jti,
    record.sub,
    record.aud,
    record.scope,
    record.jkt,
    record.iat,
    record.exp,
    audit.event,
    audit.outcome,
    audit.reason ?? null,
    audit.approval_id ?? null,
    audit.client_id ?? null,
    audit.actor ?? null,
    audit.detail ? JSON.stringify(audit.detail) : null,
    record.terms.scope,
    record.terms.subject,
    record.terms.expires_at,
    record.terms.rate_limit === null ? null : JSON.stringify(record.terms.rate_limit),
  ];
}

/**
 * The exchange's storage over Kysely, or, given the pg pool of a real Postgres, over named (prepared)
 * statements on that pool: Postgres then parses and plans each statement once per connection instead
 * of at every exchange (about half of the server's CPU for these statements). Same SQL, same rows.
 */
export function createIssuanceStore(db: Kysely<Database>, pool: pg.Pool | undefined): IssuanceStore {
  const findApprovalById = async (id: string): Promise<Approval | undefined> => {
    if (pool === undefined) return findApproval(db, id);
    const { rows } = await pool.query<Approval>({
      name: "countersign-exchange-approval",
      text: "select * from approvals where id = $1",
      values: [id],
    });
    return rows[0];
  };
  return {
    findApproval: findApprovalById,
    takesLimits: pool !== undefined,
    async consumeBudgetAndRecord(record, audit, limits) {
      const values = budgetParameters(record, audit);
      if (limits !== undefined) {
        if (pool === undefined) throw new Error("rate limits in the budget statement need real Postgres");
        const { rows } = await pool.query<{
          tokens_issued: number | null;
          limits: [string, number, string][] | null;
        }>({
          name: "countersign-exchange-budget-limits",
          text: BUDGET_AND_LIMITS_STATEMENT,
          values: [...values, ...limits.keys, ...limits.expires, limits.now, ...limits.points],
        });
        const row = rows[0];
        if (row?.tokens_issued != null) return { ok: true, tokensIssued: Number(row.tokens_issued) };
        const state = (key: string): WindowState => {
          const found = row?.limits?.find((entry) => entry[0] === key);
          if (!found) throw new Error("the rate-limit upsert returned no row");
          return { points: Number(found[1]), expire: Number(found[2]) };
        };
        const states = [state(limits.keys[0]), state(limits.keys[1])] as const;
        if (states[0].points > limits.points[0] || states[1].points > limits.points[1]) {
          return { ok: false, limited: states };
        }
        return { ok: false, approval: await findApprovalById(record.approvalId) };
      }
      const { rows } =
        pool === undefined
          ? await db.executeQuery(
              CompiledQuery.raw(BUDGET_STATEMENT, values) as CompiledQuery<{ tokens_issued: number }>,
            )
          : await pool.query<{ tokens_issued: number }>({
              name: "countersign-exchange-budget",
              text: BUDGET_STATEMENT,
              values,
            });
      const taken = rows[0];
      if (taken !== undefined) return { ok: true, tokensIssued: Number(taken.tokens_issued) };
      return { ok: false, approval: await findApprovalById(record.approvalId) };
    },
  };
}
