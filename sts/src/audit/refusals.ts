import { type Kysely, sql } from "kysely";
import { APPROVAL_ID_PATTERN } from "../db/approval_id.js";
import type { Database } from "../db/schema.js";
import { boundedDetailJson } from "./audit_log.js";

/**
 * Length of a refusal-counting window, in seconds: the refusals of one (client, event, reason, approval)
 * within one window share one audit row, which counts them.
 */
export const REFUSAL_WINDOW_SECONDS = 10;

/** How long after its expiry a refusal naming a human-decided approval is still recorded under it. */
export const ATTRIBUTION_AFTER_EXPIRY = "1 day";

/** A refused request, as the token endpoint's grants account for it. */
export interface Refusal {
  /** The grant, e.g. `token_exchange`. */
  readonly event: string;
  /** The stable reason code (sts/src/reasons.ts, or oidc-provider's error code). */
  readonly reason: string;
  /** The authenticated client (the agent), also the row's `actor` unless {@link actor} is given. */
  readonly clientId: string | null;
  /**
   * The caller when it is no agent: an approver's subject (with `clientId` null). Default `clientId`.
   */
  readonly actor?: string | null;
  /**
   * The approval the request named, as the caller wrote it. For an agent, recorded only when it is an
   * approval of `clientId`: a caller can never write into another agent's approval's audit trail (an
   * approver, who may act on any approval, needs no ownership). And only while it is live, or a human
   * decided it and it expired less than {@link ATTRIBUTION_AFTER_EXPIRY} ago (using an approval past its
   * expiry is what an investigator looks for). That is what bounds the rows: an agent has at most its
   * pending cap of live approvals plus those humans decided, whereas it can make lapsed ones at its
   * request rate, and a loop naming each in turn would otherwise add a row per request.
   */
  readonly claimedApprovalId: string | null;
  /** Non-secret detail, stored bounded ({@link boundedDetailJson}). */
  readonly detail: Record<string, unknown>;
}

/**
 * Audits a refusal as one count in the row of its (client, actor, event, reason, approval) and window: the
 * first refusal of a window inserts the row (`occurrences` 1, `at` the window's start, `detail` its
 * own, bounded), every later one adds 1 and moves `last_at`. One statement (an upsert on
 * `audit_events_refusal_window_key`), so concurrent refusals on any number of instances are each
 * counted exactly once; the approval's owner is checked in the same statement.
 * @param windowSeconds - the window's length; default {@link REFUSAL_WINDOW_SECONDS}.
 */
export async function recordRefusal(
  db: Kysely<Database>,
  refusal: Refusal,
  windowSeconds: number = REFUSAL_WINDOW_SECONDS,
): Promise<void> {
  const { event, reason, clientId, claimedApprovalId } = refusal;
  const actor = refusal.actor ?? clientId;
  const named = claimedApprovalId !== null && APPROVAL_ID_PATTERN.test(claimedApprovalId);
  const attributable = sql`(a.expires_at > now()
    or (a.decided_at is not null and a.expires_at > now() - ${ATTRIBUTION_AFTER_EXPIRY}::interval))`;
  const approvalId = !named
    ? sql`null`
    : clientId !== null
      ? sql`(select a.id from approvals a
          where a.id = ${claimedApprovalId} and a.client_id = ${clientId} and ${attributable})`
      : actor !== null
        ? sql`(select a.id from approvals a where a.id = ${claimedApprovalId} and ${attributable})`
        : sql`null`;
  const window = sql`${windowSeconds}::integer`;
  await sql`
    insert into audit_events as e
      (at, event, outcome, reason, approval_id, client_id, actor, detail, occurrences, last_at, window_seconds)
    select to_timestamp(floor(extract(epoch from now()) / ${window}) * ${window}), ${event}, 'refused',
      ${reason}, ${approvalId}, ${clientId}, ${actor}, ${boundedDetailJson(refusal.detail)}::jsonb, 1, now(),
      ${window}
    on conflict (coalesce(client_id, ''), coalesce(actor, ''), event, coalesce(reason, ''), coalesce(approval_id, ''), at)
      where window_seconds is not null
    do update set occurrences = e.occurrences + 1, last_at = greatest(e.last_at, excluded.last_at)`.execute(
    db,
  );
}
