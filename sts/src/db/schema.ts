import type { ColumnType, Generated, Insertable, Selectable, Updateable } from "kysely";
import type { RateLimit } from "../config/schema.js";

/** Timestamps come back as `Date`; they may be written as `Date` or ISO strings. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamp with a database default. */
type GeneratedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null, Date | string | null>;
/** JSON columns come back parsed; they are written as JSON text. */
type Json<T> = ColumnType<T, string, string>;
type NullableJson<T> = ColumnType<T | null, string | null, string | null>;

export type ApprovalStatus = "pending" | "approved" | "denied" | "revoked" | "expired";

export interface ApprovalsTable {
  id: string;
  status: ApprovalStatus;
  client_id: string;
  resource: string;
  scope: string;
  requested_scope: string;
  task: string;
  subject: string | null;
  /** The `iss` a subject token must carry besides `sub` (null: no subject, or bound before issuers were). */
  subject_issuer: string | null;
  max_tokens: number;
  tokens_issued: Generated<number>;
  rate_limit: NullableJson<RateLimit>;
  requested_by: string;
  approved_by: string | null;
  decided_by: string | null;
  decision_reason: string | null;
  created_at: GeneratedTimestamp;
  decided_at: NullableTimestamp;
  expires_at: Timestamp;
  revoked_at: NullableTimestamp;
  /**
   * When the retention job set this pending approval, past its expiry, to `expired` (null for every
   * other approval): a pending list's later pages count it back into their snapshot.
   */
  lapsed_at: NullableTimestamp;
  /** The MCP tools the approval names (null: every tool its scopes allow). */
  tools: NullableJson<string[]>;
  /** The MCP resource URIs the approval names (null: every resource its scopes allow). */
  resources: NullableJson<string[]>;
  /** The MCP prompts the approval names (null: every prompt its scopes allow). */
  prompts: NullableJson<string[]>;
  /** The one MCP tool call the approval binds, its tool (null: it binds none). */
  call_tool: string | null;
  /** The RFC 8785 canonical JSON text of the bound call's `arguments`. */
  call_arguments: string | null;
  /** base64url(SHA-256(`call_arguments`)), as the token's `agent_task.call.arguments_digest`. */
  call_arguments_digest: string | null;
}

/**
 * A minted access token's record, partitioned by UTC day of `exp`. Its primary key is (`exp`, `jti`):
 * time first, so inserts land beside each other (migration 0014); nothing reads it by `jti` alone.
 */
export interface IssuedTokensTable {
  jti: string;
  approval_id: string;
  client_id: string;
  sub: string;
  aud: string;
  scope: string;
  jkt: string | null;
  iat: Timestamp;
  exp: Timestamp;
}

/**
 * Tokens issued per (agent, `iat` second), kept by `countersign_issue` in the same transaction as the
 * tokens: what `recent_exchanges_per_minute` sums. Rows older than its window are deleted by the
 * retention job.
 */
export interface ExchangeCountersTable {
  client_id: string;
  /** The tokens' `iat`, in epoch seconds; bigint, returned as a string by pg. */
  iat_second: ColumnType<string | number, number | string, number | string>;
  exchanges: number;
}

export interface AuditEventsTable {
  id: Generated<string>;
  at: GeneratedTimestamp;
  event: string;
  outcome: "granted" | "refused" | "info";
  reason: string | null;
  approval_id: string | null;
  client_id: string | null;
  actor: string | null;
  detail: NullableJson<Record<string, unknown>>;
  /** How many refusals a counted row stands for (1 for every other row). */
  occurrences: Generated<number>;
  /** A counted row: when the last of its refusals happened (`at` is its window's start). */
  last_at: NullableTimestamp;
  /** A counted row: the length of its window, in seconds; null for rows that count one event. */
  window_seconds: number | null;
}

export type SigningKeyStatus = "next" | "current" | "previous" | "retired";

export interface SigningKeysTable {
  kid: string;
  alg: string;
  status: SigningKeyStatus;
  public_jwk: Json<Record<string, unknown>>;
  private_jwk_enc: string;
  created_at: GeneratedTimestamp;
  activated_at: NullableTimestamp;
  /** When it stopped signing (became `previous`). */
  deactivated_at: NullableTimestamp;
  retired_at: NullableTimestamp;
}

export interface RevocationsTable {
  /** bigint, as text. Drawn by the `revocations_ordered_cursor` trigger (migrations 0003, 0010). */
  cursor: Generated<string>;
  approval_id: string;
  reason: "revoked" | "expired";
  revoked_at: GeneratedTimestamp;
  /**
   * Until when a gateway may need the entry, set by the trigger when it is written (migration 0010):
   * the later of that moment and the last `exp` of the approval's tokens; null when those tokens'
   * `issued_tokens` rows are gone (compaction then bounds it by the approval's expiry).
   */
  needed_until: ColumnType<Date | null, never, never>;
}

/** The feed's one row (migration 0010): its epoch and low-water mark. */
export interface RevocationFeedTable {
  /** Always true: the primary key that keeps the table to one row. */
  singleton: ColumnType<true, never, never>;
  /** 16 hex digits drawn when the database was created, or rotated after a restore. */
  epoch: string;
  /** bigint, as text: the largest cursor compacted away (the low-water mark; 0 before any compaction). */
  compacted_through: ColumnType<string, never, string>;
  created_at: ColumnType<Date, never, never>;
}

/**
 * Fixed-window issuance counters (rate-limiter-flexible's Postgres layout), shared by the issuance
 * limiter and `countersign_take_point`. `expire` is epoch milliseconds.
 */
export interface IssuanceRateLimitsTable {
  key: string;
  points: Generated<number>;
  /** Epoch ms; bigint, returned as a string by pg. */
  expire: ColumnType<string | null, number | string | null, number | string | null>;
}

/** The webhook outbox: one row per (event, webhook), delivered at least once. */
export interface WebhookDeliveriesTable {
  event_id: string;
  webhook_url: string;
  event_type: string;
  approval_id: string | null;
  /** The exact JSON sent (and signed) on every attempt. */
  body: string;
  status: Generated<"pending" | "delivered" | "failed">;
  attempts: Generated<number>;
  next_attempt_at: GeneratedTimestamp;
  locked_until: NullableTimestamp;
  last_error: string | null;
  created_at: GeneratedTimestamp;
  delivered_at: NullableTimestamp;
}

export interface OidcPayloadsTable {
  id: string;
  type: string;
  payload: Json<Record<string, unknown>>;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  expires_at: NullableTimestamp;
  consumed_at: NullableTimestamp;
}

/** Table name → table type, for `Kysely<Database>`. */
export interface Database {
  approvals: ApprovalsTable;
  issued_tokens: IssuedTokensTable;
  exchange_counters: ExchangeCountersTable;
  audit_events: AuditEventsTable;
  signing_keys: SigningKeysTable;
  revocations: RevocationsTable;
  revocation_feed: RevocationFeedTable;
  oidc_payloads: OidcPayloadsTable;
  issuance_rate_limits: IssuanceRateLimitsTable;
  webhook_deliveries: WebhookDeliveriesTable;
}

export type Approval = Selectable<ApprovalsTable>;
export type NewApproval = Insertable<ApprovalsTable>;
export type ApprovalUpdate = Updateable<ApprovalsTable>;
export type IssuedToken = Selectable<IssuedTokensTable>;
export type NewIssuedToken = Insertable<IssuedTokensTable>;
export type NewAuditEvent = Insertable<AuditEventsTable>;
export type SigningKey = Selectable<SigningKeysTable>;
