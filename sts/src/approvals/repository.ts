import { type ExpressionBuilder, type Kysely, sql, type Transaction } from "kysely";
import { type AuditEvent, recordAudit } from "../audit/audit_log.js";
import type { RateLimit } from "../config/schema.js";
import type { Approval, ApprovalStatus, ApprovalUpdate, Database } from "../db/schema.js";
import { REVOCATIONS_CHANNEL } from "../revocations/channel.js";

type Db = Kysely<Database> | Transaction<Database>;

/** What an agent asks for (already validated against the configuration). */
export interface NewApprovalRequest {
  readonly id: string;
  readonly clientId: string;
  readonly resource: string;
  /** Normalised space-separated scope. */
  readonly scope: string;
  readonly task: string;
  readonly subject: string | null;
  /** The issuer of `subject` (null when there is no subject). */
  readonly subjectIssuer: string | null;
  readonly maxTokens: number;
  /** Lifetime from creation, in seconds. */
  readonly ttlSeconds: number;
  readonly rateLimit: RateLimit | null;
  /** The MCP tools, resources and prompts the task names (null: none named). */
  readonly targets: ApprovalTargets;
  /** The one MCP `tools/call` the approval binds (null: none). */
  readonly call: ApprovalCall | null;
}

/** A bound call: its tool, the canonical JSON of its arguments and that text's digest. */
export interface ApprovalCall {
  readonly tool: string;
  readonly canonicalArguments: string;
  readonly argumentsDigest: string;
}

/** The MCP tools, resources and prompts an approval names; null where it names none. */
export interface ApprovalTargets {
  readonly tools: readonly string[] | null;
  readonly resources: readonly string[] | null;
  readonly prompts: readonly string[] | null;
}

/** The JSON column values of {@link ApprovalTargets}. */
function targetColumns(targets: ApprovalTargets) {
  const column = (list: readonly string[] | null) => (list ? JSON.stringify(list) : null);
  return {
    tools: column(targets.tools),
    resources: column(targets.resources),
    prompts: column(targets.prompts),
  };
}

/**
 * Inserts a pending approval and its audit event in one transaction. `created_at` is the database's
 * `now()` truncated to milliseconds (so the wire's ISO times and keyset pagination are exact) and
 * `expires_at` is `created_at + ttl`.
 */
export async function insertApproval(
  db: Kysely<Database>,
  request: NewApprovalRequest,
  audit: AuditEvent,
): Promise<Approval> {
  return db.transaction().execute(async (trx) => {
    const created = sql<Date>`date_trunc('milliseconds', now())`;
    const row = await trx
      .insertInto("approvals")
      .values({
        id: request.id,
        status: "pending",
        client_id: request.clientId,
        resource: request.resource,
        scope: request.scope,
        requested_scope: request.scope,
        task: request.task,
        subject: request.subject,
        subject_issuer: request.subjectIssuer,
        max_tokens: request.maxTokens,
        rate_limit: request.rateLimit ? JSON.stringify(request.rateLimit) : null,
        ...targetColumns(request.targets),
        call_tool: request.call?.tool ?? null,
        call_arguments: request.call?.canonicalArguments ?? null,
        call_arguments_digest: request.call?.argumentsDigest ?? null,
        requested_by: request.clientId,
        approved_by: null,
        decided_by: null,
        decision_reason: null,
        created_at: created,
        expires_at: sql<Date>`date_trunc('milliseconds', now()) + make_interval(secs => ${request.ttlSeconds})`,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await recordAudit(trx, { ...audit, approval_id: row.id });
    return row;
  });
}

/** Reads one approval, or `undefined`. */
export async function findApproval(db: Db, id: string): Promise<Approval | undefined> {
  return db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirst();
}

/** A keyset position in a listing: the last row's `created_at` and `id`. */
export interface ListPosition {
  readonly createdAt: Date;
  readonly id: string;
}

/**
 * Lists approvals by the status a reader sees (so `pending` excludes, and `expired` includes, pending
 * or approved approvals past `expires_at`), oldest first, after `after`, at most `limit`.
 */
export async function listApprovals(
  db: Db,
  options: { status: ApprovalStatus; limit: number; after?: ListPosition | undefined },
): Promise<Approval[]> {
  const { status, limit, after } = options;
  let query = db
    .selectFrom("approvals")
    .selectAll()
    .where((eb) => effectiveStatusIs(eb, status));
  if (after) {
    query = query.where((eb) =>
      eb.or([
        eb("created_at", ">", after.createdAt),
        eb.and([eb("created_at", "=", after.createdAt), eb("id", ">", after.id)]),
      ]),
    );
  }
  return query.orderBy("created_at").orderBy("id").limit(limit).execute();
}

function effectiveStatusIs(eb: ExpressionBuilder<Database, "approvals">, status: ApprovalStatus) {
  switch (status) {
    case "pending":
    case "approved":
      return eb.and([eb("status", "=", status), eb("expires_at", ">", sql<Date>`now()`)]);
    case "expired":
      return eb.or([
        eb("status", "=", "expired"),
        eb.and([eb("status", "in", ["pending", "approved"]), eb("expires_at", "<=", sql<Date>`now()`)]),
      ]);
    default:
      return eb("status", "=", status);
  }
}

/** The terms an approver grants (each already checked to narrow what was requested). */
export interface ApprovalTerms {
  readonly scope: string;
  readonly maxTokens: number;
  readonly expiresAt: Date;
  readonly rateLimit: RateLimit | null;
  readonly targets: ApprovalTargets;
}

/** Who decides: the approver's `sub` (`approved_by`) and issuer-qualified identity (`decided_by`). */
export interface Decider {
  readonly subject: string;
  readonly issuer: string;
}

function decidedBy(decider: Decider): string {
  return `${decider.issuer}#${decider.subject}`;
}

/**
 * Decides a pending approval: applies `changes` and records `audit`, in one transaction.
 *
 * Atomicity: a single compare-and-set `UPDATE … WHERE id = $1 AND status = 'pending' AND expires_at >
 * now() RETURNING *`; of any number of concurrent decisions on one approval (on any instance) at most
 * one matches. Returns `undefined` when it did not (not found, no longer pending, or expired) — the
 * caller re-reads to say which — and then nothing is written.
 */
async function decidePending(
  db: Kysely<Database>,
  id: string,
  changes: ApprovalUpdate,
  audit: AuditEvent,
): Promise<Approval | undefined> {
  return db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable("approvals")
      .set({ ...changes, decided_at: sql<Date>`now()` })
      .where("id", "=", id)
      .where("status", "=", "pending")
      .where("expires_at", ">", sql<Date>`now()`)
      .returningAll()
      .executeTakeFirst();
    if (row) await recordAudit(trx, audit);
    return row;
  });
}

/** Approves a pending approval with `terms` (see {@link decidePending} for the atomicity contract). */
export function approveApproval(
  db: Kysely<Database>,
  id: string,
  terms: ApprovalTerms,
  decider: Decider,
  audit: AuditEvent,
): Promise<Approval | undefined> {
  return decidePending(
    db,
    id,
    {
      status: "approved",
      scope: terms.scope,
      max_tokens: terms.maxTokens,
      expires_at: terms.expiresAt,
      rate_limit: terms.rateLimit ? JSON.stringify(terms.rateLimit) : null,
      ...targetColumns(terms.targets),
      approved_by: decider.subject,
      decided_by: decidedBy(decider),
    },
    audit,
  );
}

/** Denies a pending approval, storing `reason` (see {@link decidePending} for the atomicity contract). */
export function denyApproval(
  db: Kysely<Database>,
  id: string,
  reason: string | null,
  decider: Decider,
  audit: AuditEvent,
): Promise<Approval | undefined> {
  return decidePending(
    db,
    id,
    { status: "denied", decided_by: decidedBy(decider), decision_reason: reason },
    audit,
  );
}

/**
 * Revokes an approved, unexpired approval in one transaction: the compare-and-set `UPDATE … WHERE id =
 * $1 AND status = 'approved' AND expires_at > now() RETURNING *`, a `revocations` row (reason
 * `revoked`; the feed's cursor), `pg_notify('countersign_revocations', <id>)` (delivered on commit) and
 * the audit event. Returns `undefined`, writing nothing, when the compare-and-set did not match.
 */
export async function revokeApproval(
  db: Kysely<Database>,
  id: string,
  reason: string | null,
  audit: AuditEvent,
): Promise<Approval | undefined> {
  return db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable("approvals")
      .set({ status: "revoked", revoked_at: sql<Date>`now()`, decision_reason: reason })
      .where("id", "=", id)
      .where("status", "=", "approved")
      .where("expires_at", ">", sql<Date>`now()`)
      .returningAll()
      .executeTakeFirst();
    if (!row) return undefined;
    await trx
      .insertInto("revocations")
      .values({ approval_id: id, reason: "revoked", revoked_at: sql<Date>`now()` })
      .onConflict((oc) => oc.column("approval_id").doNothing())
      .execute();
    await sql`select pg_notify(${REVOCATIONS_CHANNEL}, ${id})`.execute(trx);
    await recordAudit(trx, audit);
    return row;
  });
}
