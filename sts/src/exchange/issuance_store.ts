import { CompiledQuery, type Kysely } from "kysely";
import type pg from "pg";
import type { Approval, Database } from "../db/schema.js";
import type { LimitTake } from "./guards.js";

/** The record of a minted access token (`issued_tokens`). */
export interface IssuedTokenRecord {
  jti: string;
  approvalId: string;
  clientId: string;
  sub: string;
  /** The resource (`aud`); also the resource the approval must still be for. */
  aud: string;
  scope: string;
  jkt: string | null;
  iat: Date;
  exp: Date;
  /**
   * The approval's terms as the token was decided on. A token is taken only while the stored approval
   * still has exactly these terms, so a decision made on a cached copy can never outrun a change.
   */
  terms: Pick<Approval, "scope" | "subject" | "expires_at" | "rate_limit">;
}

/** One exchange's write: its token record, the detail of its `granted` audit event, its rate limits. */
export interface IssueRequest {
  readonly record: IssuedTokenRecord;
  readonly auditDetail: Record<string, unknown>;
  /** The agent and approval counters to take a point from first (absent: no rate limits here). */
  readonly limits?: LimitTake | undefined;
}

/** {@link IssuanceStore.issue}'s answer. */
export type IssueOutcome =
  | { ok: true; tokensIssued: number }
  /** No token: the approval as it now stands, to say why (revoked, expired, used up, changed). */
  | { ok: false; approval: Approval | undefined }
  /** A rate limit refused; its window ends at this time (epoch ms). Nothing but the counters changed. */
  | { ok: false; limitedUntil: number };

/** The token exchange's storage: the approval it reads and the budget it takes. */
export interface IssuanceStore {
  findApproval(id: string): Promise<Approval | undefined>;
  /**
   * Takes the rate-limit points (if any) and one token of the approval's budget, and records the
   * issued token and its audit event — atomically, with `countersign_issue_batch` (migration 0006):
   * the budget is taken by a conditional `UPDATE … WHERE status = 'approved' AND expires_at > now()
   * AND tokens_issued < max_tokens AND <terms unchanged>` and the `issued_tokens` and `audit_events`
   * rows are inserted in the same transaction only when it took one. So under any concurrency and
   * across instances `tokens_issued` never exceeds `max_tokens` and always equals the committed
   * `issued_tokens` rows. Requests for the same approval that arrive while one call for it is running
   * wait and go together in the next call (one round trip and one commit for all of them, each judged
   * exactly as if alone and in arrival order); different approvals never wait for each other.
   */
  issue(request: IssueRequest): Promise<IssueOutcome>;
}

/** Most requests written in one call. */
const MAX_BATCH = 64;

const ISSUE_BATCH = `select n, outcome, tokens_issued, expire from countersign_issue_batch(
  $1, $2, $3, $4, $5, $6, cast($7 as jsonb), $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, cast($18 as jsonb[]))`;

interface BatchRow {
  n: number;
  outcome: "issued" | "limited_client" | "limited_approval" | "refused";
  tokens_issued: number | null;
  expire: string | null;
}

interface Pending {
  readonly request: IssueRequest;
  readonly resolve: (outcome: IssueOutcome) => void;
  readonly reject: (error: unknown) => void;
}

/** Requests that may share a call: same approval, client, terms and limits. */
function batchKey({ record, limits }: IssueRequest): string {
  const { terms } = record;
  return JSON.stringify([
    record.approvalId,
    record.clientId,
    record.aud,
    terms.scope,
    terms.subject,
    terms.expires_at.getTime(),
    terms.rate_limit,
    limits ?? null,
  ]);
}

/** The function's parameters for a batch (every request shares the first one's approval and limits). */
function batchParameters(batch: readonly Pending[], nowMs: number): unknown[] {
  const first = batch[0]?.request;
  if (first === undefined) throw new Error("empty batch");
  const { record, limits } = first;
  const records = batch.map((pending) => pending.request.record);
  return [
    record.approvalId,
    record.clientId,
    record.aud,
    record.terms.scope,
    record.terms.subject,
    record.terms.expires_at,
    record.terms.rate_limit === null ? null : JSON.stringify(record.terms.rate_limit),
    limits ? [...limits.keys] : null,
    limits ? limits.durationsMs.map((ms) => nowMs + Math.ceil(ms)) : null,
    limits ? [...limits.points] : null,
    nowMs,
    records.map((r) => r.jti),
    records.map((r) => r.sub),
    records.map((r) => r.scope),
    records.map((r) => r.jkt),
    records.map((r) => r.iat),
    records.map((r) => r.exp),
    batch.map((pending) => JSON.stringify(pending.request.auditDetail)),
  ];
}

/**
 * The exchange's storage over Kysely, or, given the pg pool of a real Postgres, over named (prepared)
 * statements on that pool: Postgres then parses and plans each statement once per connection.
 */
export function createIssuanceStore(db: Kysely<Database>, pool: pg.Pool | undefined): IssuanceStore {
  const findApproval = async (id: string): Promise<Approval | undefined> => {
    if (pool === undefined)
      return db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirst();
    const { rows } = await pool.query<Approval>({
      name: "countersign-exchange-approval",
      text: "select * from approvals where id = $1",
      values: [id],
    });
    return rows[0];
  };

  const run = async (values: unknown[]): Promise<BatchRow[]> => {
    if (pool === undefined) {
      return (await db.executeQuery(CompiledQuery.raw(ISSUE_BATCH, values) as CompiledQuery<BatchRow>)).rows;
    }
    return (await pool.query<BatchRow>({ name: "countersign-issue-batch", text: ISSUE_BATCH, values })).rows;
  };

  /** Waiting requests per batch key; a key is present while a call for it is running. */
  const queues = new Map<string, Pending[]>();

  async function drain(key: string, queue: Pending[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const rows = await run(batchParameters(batch, Date.now()));
        let approval: Promise<Approval | undefined> | undefined;
        for (const [index, pending] of batch.entries()) {
          const row = rows.find((candidate) => Number(candidate.n) === index + 1);
          if (row === undefined) {
            pending.reject(new Error("countersign_issue_batch returned no row for a request"));
          } else if (row.outcome === "issued") {
            pending.resolve({ ok: true, tokensIssued: Number(row.tokens_issued) });
          } else if (row.outcome === "refused") {
            approval ??= findApproval(pending.request.record.approvalId);
            approval.then((found) => pending.resolve({ ok: false, approval: found }), pending.reject);
          } else {
            pending.resolve({ ok: false, limitedUntil: Number(row.expire) });
          }
        }
      } catch (error) {
        for (const pending of batch) pending.reject(error);
      }
    }
    queues.delete(key);
  }

  return {
    findApproval,
    issue(request) {
      return new Promise<IssueOutcome>((resolve, reject) => {
        const key = batchKey(request);
        const waiting = queues.get(key);
        if (waiting !== undefined) {
          waiting.push({ request, resolve, reject });
          return;
        }
        const queue: Pending[] = [{ request, resolve, reject }];
        queues.set(key, queue);
        void drain(key, queue);
      });
    },
  };
}
