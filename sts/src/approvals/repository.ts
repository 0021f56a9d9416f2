import { type ExpressionBuilder, type Kysely, sql, type Transaction } from "kysely";
import { type AuditEvent, recordAudit } from "../audit/audit_log.js";
import type { RateLimit } from "../config/schema.js";
import type { Approval, ApprovalStatus, ApprovalUpdate, Database } from "../db/schema.js";
import { REVOCATIONS_CHANNEL } from "../revocations/channel.js";
import { type RankedPage, type ReadOlder, rankPage } from "./pending_rounds.js";

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
 * The advisory lock namespace ("csap") of the per-agent lock that serialises an agent's requests while
 * its pending approvals are counted; the second key is `hashtext(client_id)` (two agents sharing a hash
 * only wait for each other).
 */
const APPROVAL_REQUEST_LOCK = 0x63736170;

/** What {@link insertApproval} did. */
export type InsertOutcome =
  | { readonly inserted: Approval }
  /** Nothing written: the agent already has `pending` (≥ the cap) pending approvals. */
  | { readonly capped: { readonly pending: number; readonly soonestExpiry: Date; readonly now: Date } };

/**
 * Inserts a pending approval and its audit event in one transaction, unless the agent already has
 * `maxPending` pending, unexpired approvals. `created_at` is the database's `now()` truncated to
 * milliseconds (so the wire's ISO times and keyset pagination are exact) and `expires_at` is
 * `created_at + ttl`.
 *
 * Atomicity: the transaction takes a per-agent advisory lock (`pg_advisory_xact_lock`, released at
 * commit) before it counts, so of any number of concurrent requests from one agent (on any instance) at
 * most `maxPending - count` are inserted: the cap holds under concurrency.
 */
export async function insertApproval(
  db: Kysely<Database>,
  request: NewApprovalRequest,
  audit: AuditEvent,
  maxPending: number,
): Promise<InsertOutcome> {
  return db.transaction().execute((trx) => insertApprovalCappedIn(trx, request, audit, maxPending));
}

/**
 * {@link insertApproval} inside the caller's transaction: takes the agent's advisory lock (held until
 * the caller's transaction ends), counts its pending approvals, and inserts unless they reach the cap.
 */
export async function insertApprovalCappedIn(
  trx: Transaction<Database>,
  request: NewApprovalRequest,
  audit: AuditEvent,
  maxPending: number,
): Promise<InsertOutcome> {
  await sql`select pg_advisory_xact_lock(${sql.lit(APPROVAL_REQUEST_LOCK)}, hashtext(${request.clientId}))`.execute(
    trx,
  );
  const counted = await trx
    .selectFrom("approvals")
    .select((eb) => [
      eb.fn.countAll<string | number>().as("pending"),
      eb.fn.min("expires_at").as("soonest"),
      sql<Date>`now()`.as("now"),
    ])
    .where("client_id", "=", request.clientId)
    .where("status", "=", "pending")
    .where("expires_at", ">", sql<Date>`now()`)
    .executeTakeFirstOrThrow();
  const pending = Number(counted.pending);
  if (pending >= maxPending && counted.soonest !== null) {
    return { capped: { pending, soonestExpiry: counted.soonest, now: counted.now } };
  }
  return { inserted: await insertApprovalIn(trx, request, audit) };
}

/** {@link insertApproval} inside the caller's transaction. */
export async function insertApprovalIn(
  trx: Transaction<Database>,
  request: NewApprovalRequest,
  audit: AuditEvent,
): Promise<Approval> {
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
}

/** Reads one approval, or `undefined`. */
export async function findApproval(db: Db, id: string): Promise<Approval | undefined> {
  return db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirst();
}

/** A keyset position in a listing other than pending: the last row's `created_at` and `id`. */
export interface ListPosition {
  readonly createdAt: Date;
  readonly id: string;
}

/**
 * Lists approvals by the status a reader sees (so `expired` includes pending or approved approvals past
 * `expires_at`), oldest first, after `after`, at most `limit`. Not for `pending`: see
 * {@link listPendingApprovals}.
 */
export async function listApprovals(
  db: Db,
  options: { status: Exclude<ApprovalStatus, "pending">; limit: number; after?: ListPosition | undefined },
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

/**
 * A keyset position in a pending list: the moment its first page was read (`snapshot`) and the last
 * row's round, `created_at` and `id`.
 */
export interface PendingPosition {
  readonly snapshot: Date;
  readonly round: number;
  readonly createdAt: Date;
  readonly id: string;
}

/** A pending approval as listed: its round in the list, and the list's snapshot. */
export type ListedPendingApproval = Approval & { readonly round: number; readonly snapshot: Date };

/**
 * Lists pending, unexpired approvals round by round, newest first within each round, after `after`, at
 * most `limit`. An approval's round is how many of its agent's approvals were pending and newer at the
 * list's snapshot: round 0 holds every agent's newest request, round 1 every agent's second newest, and
 * so on. So one agent's requests put at most `r + 1` rows ahead of another agent's request of round `r`
 * (one ahead of its newest), however many it makes and whenever.
 *
 * Rounds are counted over the approvals pending at the snapshot (the first page's `now()`, carried by
 * the cursor; those decided or expired since are counted back in), so paging with `after` returns every
 * approval pending at the first page and still pending exactly once, in one order, whatever is requested
 * or decided between pages. Approvals requested after the snapshot show up from the next first page on.
 *
 * Cost: the snapshot is read newest first, in growing batches, only until the page is known
 * ({@link rankPage}): a first page reads about `limit` rows when many agents have a request pending,
 * and at most `limit` × (most pending per agent) when few do, whatever the number of approvals pending
 * or ever made. A page that runs past the end of a round reads the rest of the snapshot.
 */
export async function listPendingApprovals(
  db: Db,
  options: { limit: number; after?: PendingPosition | undefined },
): Promise<ListedPendingApproval[]> {
  const { entries, snapshot } = await rankPendingPage(db, options);
  if (entries.length === 0 || snapshot === undefined) return [];
  // By primary key only, with "still pending" computed per row: with the status and expiry as
  // conditions the planner intersects the pending-by-expiry index with the key lookups, reading every
  // pending approval (20 ms at 4,000 pending, 0.4 ms by key).
  const rows = await db
    .selectFrom("approvals")
    .selectAll()
    .select(sql<boolean>`status = 'pending' and expires_at > now()`.as("listed"))
    .where(
      "id",
      "in",
      entries.map((entry) => entry.id),
    )
    .execute();
  const byId = new Map(rows.map(({ listed, ...row }) => [row.id, listed ? row : undefined]));
  return entries.flatMap((entry) => {
    const row = byId.get(entry.id);
    return row === undefined ? [] : [{ ...row, round: entry.round, snapshot }];
  });
}

/**
 * The ids and rounds of a pending list's page ({@link listPendingApprovals}), its snapshot, and how many
 * snapshot rows were read for it (for tests of the bound).
 */
export async function rankPendingPage(
  db: Db,
  options: { limit: number; after?: PendingPosition | undefined },
): Promise<RankedPage & { readonly snapshot: Date | undefined }> {
  let snapshot = options.after?.snapshot;
  const read: ReadOlder = async (before, count) => {
    const rows = await readSnapshotOlder(db, snapshot, before, count);
    snapshot ??= rows[0]?.snapshot;
    return rows.map((row) => ({
      id: row.id,
      clientId: row.client_id,
      createdAt: row.created_at,
      live: row.live,
    }));
  };
  const page = await rankPage(read, { limit: options.limit, after: options.after });
  return { ...page, snapshot };
}

/**
 * At most `count` approvals of the pending list's snapshot older than `before` (or the newest), newest
 * first, with whether each is still listed (`live`) and the snapshot's time. With no snapshot yet (a
 * first page's first read), the snapshot is this statement's `now()`: then no approval can have been
 * decided or expired since, and only pending ones are read (approvals_pending_newest_idx). Otherwise
 * those decided since (approvals_decided_idx) or set to `expired` by the retention job since
 * (approvals_lapsed_idx) are read back in. Ids compare with the `C` collation, whatever the database's:
 * the page's position is also compared in the application, by code unit (pending_rounds.ts `isOlder`),
 * and both must agree or a page skips approvals.
 */
async function readSnapshotOlder(
  db: Db,
  snapshot: Date | undefined,
  before: { readonly createdAt: Date; readonly id: string } | undefined,
  count: number,
) {
  const at = snapshot === undefined ? sql<Date>`now()` : sql<Date>`${snapshot}::timestamptz`;
  const older = before
    ? sql`and (a.created_at, a.id collate "C") < (${before.createdAt}::timestamptz, ${before.id} collate "C")`
    : sql``;
  const pending = sql`
    select a.id collate "C" as id, a.client_id, a.created_at, a.expires_at > now() as live, ${at} as snapshot
    from approvals a
    where a.status = 'pending' and a.created_at <= ${at} and a.expires_at > ${at} ${older}
    order by a.created_at desc, a.id collate "C" desc
    limit ${count}`;
  if (snapshot === undefined) {
    const { rows } = await sql<SnapshotRow>`${pending}`.execute(db);
    return rows;
  }
  // Each part has its own index and its own small range (what changed since the snapshot): one `or`
  // would leave the planner guessing how many approvals expired after a moment.
  const { rows } = await sql<SnapshotRow>`
    (${pending})
    union all
    (select a.id collate "C" as id, a.client_id, a.created_at, false as live, ${at} as snapshot
      from approvals a
      where a.decided_at > ${at} and a.status <> 'pending'
        and a.created_at <= ${at} and a.expires_at > ${at} ${older}
      order by a.created_at desc, a.id collate "C" desc
      limit ${count})
    union all
    (select a.id collate "C" as id, a.client_id, a.created_at, false as live, ${at} as snapshot
      from approvals a
      where a.lapsed_at > ${at} and a.created_at <= ${at} and a.expires_at > ${at} ${older}
      order by a.created_at desc, a.id collate "C" desc
      limit ${count})
    order by created_at desc, id desc
    limit ${count}`.execute(db);
  return rows;
}

interface SnapshotRow {
  readonly id: string;
  readonly client_id: string;
  readonly created_at: Date;
  readonly live: boolean;
  readonly snapshot: Date;
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
