import { auditDetailJson } from "../audit/audit_log.js";
import type { IssueRequest } from "./issuance_store.js";

/**
 * The seam to `countersign_issue`, the database function that writes token exchanges (defined by the
 * migration named in migrations/FUNCTIONS.md). Its parameter list is defined here once: the SQL call,
 * the values and a test that compares them with the function's signature in the database
 * (`pg_get_function_arguments`) all come from {@link ISSUE_PARAMETERS}.
 */

/** A request of a batch, with the time the batch is written at. */
interface BatchRow {
  readonly request: IssueRequest;
}

/** One parameter: its name and type as Postgres prints them, and how a batch fills it. */
export interface IssueParameter {
  readonly name: string;
  /** As `pg_get_function_arguments` prints it, e.g. `text[]`, `timestamp with time zone[]`. */
  readonly type: string;
  readonly value: (batch: readonly BatchRow[], nowMs: number) => unknown;
}

const each =
  (pick: (request: IssueRequest) => unknown) =>
  (batch: readonly BatchRow[]): unknown[] =>
    batch.map((row) => pick(row.request));

const jsonOrNull = (value: unknown) => (value === null || value === undefined ? null : JSON.stringify(value));

/** `countersign_issue`'s parameters, in order. */
export const ISSUE_PARAMETERS: readonly IssueParameter[] = [
  { name: "p_now", type: "bigint", value: (_batch, nowMs) => nowMs },
  { name: "p_approval_ids", type: "text[]", value: each((r) => r.record.approvalId) },
  { name: "p_client_ids", type: "text[]", value: each((r) => r.record.clientId) },
  { name: "p_resources", type: "text[]", value: each((r) => r.record.aud) },
  { name: "p_terms_scopes", type: "text[]", value: each((r) => r.record.terms.scope) },
  { name: "p_terms_subjects", type: "text[]", value: each((r) => r.record.terms.subject) },
  {
    name: "p_terms_expires",
    type: "timestamp with time zone[]",
    value: each((r) => r.record.terms.expires_at),
  },
  { name: "p_terms_rate_limits", type: "jsonb[]", value: each((r) => jsonOrNull(r.record.terms.rate_limit)) },
  { name: "p_client_keys", type: "text[]", value: each((r) => r.limits?.keys[0] ?? null) },
  { name: "p_approval_keys", type: "text[]", value: each((r) => r.limits?.keys[1] ?? null) },
  {
    name: "p_client_expires",
    type: "bigint[]",
    value: (batch, nowMs) =>
      batch.map(({ request: { limits } }) => (limits ? nowMs + Math.ceil(limits.durationsMs[0]) : null)),
  },
  {
    name: "p_approval_expires",
    type: "bigint[]",
    value: (batch, nowMs) =>
      batch.map(({ request: { limits } }) => (limits ? nowMs + Math.ceil(limits.durationsMs[1]) : null)),
  },
  { name: "p_client_points", type: "integer[]", value: each((r) => r.limits?.points[0] ?? null) },
  { name: "p_approval_points", type: "integer[]", value: each((r) => r.limits?.points[1] ?? null) },
  { name: "p_jtis", type: "text[]", value: each((r) => r.record.jti) },
  { name: "p_subs", type: "text[]", value: each((r) => r.record.sub) },
  { name: "p_scopes", type: "text[]", value: each((r) => r.record.scope) },
  { name: "p_jkts", type: "text[]", value: each((r) => r.record.jkt) },
  { name: "p_iats", type: "timestamp with time zone[]", value: each((r) => r.record.iat) },
  { name: "p_exps", type: "timestamp with time zone[]", value: each((r) => r.record.exp) },
  { name: "p_details", type: "jsonb[]", value: each((r) => auditDetailJson(r.auditDetail)) },
];

/**
 * The call. `jsonb[]` parameters are sent as text arrays and cast, since node-postgres cannot say
 * that an array's elements are JSON.
 */
export const ISSUE_SQL = `select n, outcome, tokens_issued, expire from countersign_issue(${ISSUE_PARAMETERS.map(
  (parameter, i) => (parameter.type === "jsonb[]" ? `cast($${i + 1} as jsonb[])` : `$${i + 1}`),
).join(", ")})`;

/** The values of {@link ISSUE_SQL} for a batch (already in lock order). */
export function issueValues(batch: readonly BatchRow[], nowMs: number): unknown[] {
  return ISSUE_PARAMETERS.map((parameter) => parameter.value(batch, nowMs));
}

/** What `countersign_issue` answers for one request. */
export type IssueFunctionOutcome =
  | "issued"
  | "limited_client"
  | "limited_approval"
  | "not_found"
  | "pending"
  | "denied"
  | "revoked"
  | "expired"
  | "used_up"
  | "terms_changed";

/** Why a request took no token, as the database function reads it from the approval. */
export type IssueRefusal = Exclude<IssueFunctionOutcome, "issued" | "limited_client" | "limited_approval">;

/** One row of `countersign_issue`'s answer. */
export interface IssueRow {
  n: number;
  outcome: IssueFunctionOutcome;
  tokens_issued: number | null;
  expire: string | null;
}
