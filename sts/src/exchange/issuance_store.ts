import { CompiledQuery, type Kysely } from "kysely";
import type pg from "pg";
import type { Approval, Database } from "../db/schema.js";
import type { LimitTake } from "./guards.js";
import { ISSUE_SQL, type IssueRefusal, type IssueRow, issueValues } from "./issue_function.js";

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
  /** No token, and why, read from the approval as it stood in the same database call. */
  | { ok: false; refused: IssueRefusal }
  /** A rate limit refused; its window ends at this time (epoch ms). Nothing but the counters changed. */
  | { ok: false; limitedUntil: number }
  /** Too many of this agent's requests already wait for the database: nothing was written. */
  | { ok: false; busy: true };

/** The token exchange's storage: the approval it reads and the budget it takes. */
export interface IssuanceStore {
  findApproval(id: string): Promise<Approval | undefined>;
  /**
   * Takes the rate-limit points (if any) and one token of the approval's budget, and records the
   * issued token and its audit event — atomically, with `countersign_issue` (migrations/FUNCTIONS.md):
   * the budget is taken by a conditional `UPDATE … WHERE status = 'approved' AND expires_at > now()
   * AND tokens_issued < max_tokens AND <terms unchanged>` and the `issued_tokens` and `audit_events`
   * rows are inserted in the same transaction only when it took one. So under any concurrency and
   * across instances `tokens_issued` never exceeds `max_tokens` and always equals the committed
   * `issued_tokens` rows. An agent's requests that arrive while a call for that agent is running wait
   * and go together in the next call (one round trip and one commit for all of them, each judged
   * exactly as if alone, in arrival order per approval); different agents never wait for each other.
   */
  issue(request: IssueRequest): Promise<IssueOutcome>;
}

/** Most requests written in one call. */
const MAX_BATCH = 64;

interface Pending {
  readonly request: IssueRequest;
  readonly resolve: (outcome: IssueOutcome) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The lock order of a request: its agent's counter, then its approval's counter and row. Calls write
 * their requests in this order, so every call takes row locks in one global order (no deadlocks).
 */
function lockOrder(a: Pending, b: Pending): number {
  const x = a.request.record;
  const y = b.request.record;
  if (x.clientId !== y.clientId) return x.clientId < y.clientId ? -1 : 1;
  if (x.approvalId !== y.approvalId) return x.approvalId < y.approvalId ? -1 : 1;
  return 0; // the sort is stable: one approval's requests keep their arrival order
}

/** Options of {@link createIssuanceStore}. */
export interface IssuanceStoreOptions {
  /** Called with the number of requests in each database call (for a metric). */
  readonly onBatch?: (size: number) => void;
  /** Most requests of one agent waiting for a database call; more are answered `busy`. Default 1024. */
  readonly maxWaitingPerAgent?: number;
}

/**
 * The exchange's storage over Kysely, or, given the pg pool of a real Postgres, over named (prepared)
 * statements on that pool: Postgres then parses and plans each statement once per connection.
 */
export function createIssuanceStore(
  db: Kysely<Database>,
  pool: pg.Pool | undefined,
  options: IssuanceStoreOptions = {},
): IssuanceStore {
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

  const run = async (values: unknown[]): Promise<IssueRow[]> => {
    if (pool === undefined) {
      return (await db.executeQuery(CompiledQuery.raw(ISSUE_SQL, values) as CompiledQuery<IssueRow>)).rows;
    }
    return (await pool.query<IssueRow>({ name: "countersign-issue", text: ISSUE_SQL, values })).rows;
  };

  const maxWaiting = options.maxWaitingPerAgent ?? 1024;
  /** Waiting requests per agent; an agent is present while a call for it is running. */
  const queues = new Map<string, Pending[]>();

  async function drain(clientId: string, queue: Pending[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH).sort(lockOrder);
      options.onBatch?.(batch.length);
      try {
        const rows = await run(issueValues(batch, Date.now()));
        for (const [index, pending] of batch.entries()) {
          const row = rows.find((candidate) => Number(candidate.n) === index + 1);
          if (row === undefined) {
            pending.reject(new Error("countersign_issue returned no row for a request"));
          } else if (row.outcome === "issued") {
            pending.resolve({ ok: true, tokensIssued: Number(row.tokens_issued) });
          } else if (row.outcome === "limited_client" || row.outcome === "limited_approval") {
            pending.resolve({ ok: false, limitedUntil: Number(row.expire) });
          } else {
            pending.resolve({ ok: false, refused: row.outcome });
          }
        }
      } catch (error) {
        for (const pending of batch) pending.reject(error);
      }
    }
    queues.delete(clientId);
  }

  return {
    findApproval,
    issue(request) {
      return new Promise<IssueOutcome>((resolve, reject) => {
        const clientId = request.record.clientId;
        const waiting = queues.get(clientId);
        if (waiting !== undefined) {
          if (waiting.length >= maxWaiting) resolve({ ok: false, busy: true });
          else waiting.push({ request, resolve, reject });
          return;
        }
        const queue: Pending[] = [{ request, resolve, reject }];
        queues.set(clientId, queue);
        void drain(clientId, queue);
      });
    },
  };
}
