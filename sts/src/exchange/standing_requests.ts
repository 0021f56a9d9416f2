import { type Kysely, sql, type Transaction } from "kysely";
import { pendingCapRetryAfter } from "../approvals/limits.js";
import { newApprovalId, toApprovalJson } from "../approvals/model.js";
import { insertApprovalCappedIn } from "../approvals/repository.js";
import type { ApprovalEventSink } from "../approvals/routes.js";
import { DEFAULT_MAX_TOKENS, DEFAULT_TTL_SECONDS } from "../approvals/schemas.js";
import type { Approval, Database } from "../db/schema.js";
import { matchStandingApproval, type StandingApprovalMatch } from "./rules.js";

/**
 * An MCP client's token request that names no approval (client_credentials with an MCP resource, or
 * an ID-JAG): the key its approval is found and recorded by.
 */
export interface StandingRequestKey {
  readonly clientId: string;
  readonly resource: string;
  /** Sorted, without repeats (`requestedResourceScopes`). */
  readonly scopes: readonly string[];
  /** The user the token is for: null for the client itself (client_credentials). */
  readonly subject: { readonly sub: string; readonly issuer: string } | null;
}

/** What {@link StandingRequests.resolve} found or did. */
export type StandingRequestOutcome =
  | Exclude<StandingApprovalMatch, { kind: "none" }>
  | { readonly kind: "requested"; readonly approval: Approval }
  /** None recorded: the agent already has `approvals.max_pending_per_agent` pending approvals. */
  | { readonly kind: "capped"; readonly maxPending: number; readonly retryAfterSeconds: number };

/** Finds the approval that answers an MCP client's request, or records a pending one for a human. */
export interface StandingRequests {
  /**
   * The approved approval to mint under, the pending one that waits, or the denial in its cool-down;
   * with none of these, records a pending approval whose task is `task` (once per key: concurrent
   * requests, on any instance, take an advisory transaction lock on the key and look again under it),
   * unless the agent already has `maxPendingPerAgent` pending approvals (counted under the same
   * per-agent lock `POST /approvals` takes, so the cap holds across both paths).
   */
  resolve(key: StandingRequestKey, task: string): Promise<StandingRequestOutcome>;
}

/** What {@link createStandingRequests} needs. */
export interface StandingRequestsOptions {
  /** `mcp.request_cooldown_seconds`. */
  readonly cooldownSeconds: number;
  /** `approvals.max_pending_per_agent`: the most pending approvals one agent may have. */
  readonly maxPendingPerAgent: number;
  /** Told of each recorded approval after it commits (webhooks: `approval.requested`). */
  readonly onEvent?: ApprovalEventSink | undefined;
  /** Told when the event sink fails (it never fails the request). */
  readonly onEventError?: (error: unknown, approvalId: string) => void;
}

/** Most candidate approvals read per request (the newest first). */
const MAX_CANDIDATES = 64;

/** Builds the {@link StandingRequests} store over `db`. */
export function createStandingRequests(
  db: Kysely<Database>,
  options: StandingRequestsOptions,
): StandingRequests {
  const { cooldownSeconds } = options;

  /** The key's approvals that may answer it: live approved or pending ones, recent refusals. */
  function candidates(executor: Kysely<Database> | Transaction<Database>, key: StandingRequestKey) {
    const scope = key.scopes.join(" ");
    let query = executor
      .selectFrom("approvals")
      .selectAll()
      .where("client_id", "=", key.clientId)
      .where("resource", "=", key.resource);
    query = key.subject
      ? query.where("subject", "=", key.subject.sub).where("subject_issuer", "=", key.subject.issuer)
      : query.where("subject", "is", null);
    return query
      .where((eb) =>
        eb.or([
          eb.and([
            eb("status", "=", "approved"),
            eb("expires_at", ">", sql<Date>`now()`),
            eb("tokens_issued", "<", eb.ref("max_tokens")),
          ]),
          eb.and([
            eb("status", "=", "pending"),
            eb("expires_at", ">", sql<Date>`now()`),
            eb("requested_scope", "=", scope),
          ]),
          eb.and([
            eb("status", "in", ["denied", "revoked"]),
            eb(
              sql<Date>`coalesce(revoked_at, decided_at)`,
              ">",
              sql<Date>`now() - make_interval(secs => ${cooldownSeconds})`,
            ),
          ]),
        ]),
      )
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .limit(MAX_CANDIDATES)
      .execute();
  }

  async function emitRequested(approval: Approval): Promise<void> {
    if (!options.onEvent) return;
    try {
      await options.onEvent("approval.requested", toApprovalJson(approval));
    } catch (error) {
      options.onEventError?.(error, approval.id);
    }
  }

  return {
    async resolve(key, task) {
      // The common case (an approved approval) takes no lock.
      const found = matchStandingApproval(await candidates(db, key), key.scopes, Date.now(), cooldownSeconds);
      if (found.kind === "approved") return found;

      const scope = key.scopes.join(" ");
      const lockKey = JSON.stringify([
        "countersign.standing_request",
        key.clientId,
        key.resource,
        scope,
        key.subject?.issuer ?? null,
        key.subject?.sub ?? null,
      ]);
      const outcome = await db.transaction().execute(async (trx): Promise<StandingRequestOutcome> => {
        await sql`select pg_advisory_xact_lock(hashtextextended(${lockKey}, 0))`.execute(trx);
        const match = matchStandingApproval(
          await candidates(trx, key),
          key.scopes,
          Date.now(),
          cooldownSeconds,
        );
        if (match.kind !== "none") return match;
        const inserted = await insertApprovalCappedIn(
          trx,
          {
            id: newApprovalId(),
            clientId: key.clientId,
            resource: key.resource,
            scope,
            task,
            subject: key.subject?.sub ?? null,
            subjectIssuer: key.subject?.issuer ?? null,
            call: null,
            maxTokens: DEFAULT_MAX_TOKENS,
            ttlSeconds: DEFAULT_TTL_SECONDS,
            rateLimit: null,
            targets: { tools: null, resources: null, prompts: null },
          },
          {
            event: "approval.requested",
            outcome: "granted",
            client_id: key.clientId,
            actor: key.clientId,
            detail: {
              resource: key.resource,
              scope,
              max_tokens: DEFAULT_MAX_TOKENS,
              ttl_seconds: DEFAULT_TTL_SECONDS,
              via: "token_endpoint",
            },
          },
          options.maxPendingPerAgent,
        );
        if ("capped" in inserted) {
          const { soonestExpiry, now } = inserted.capped;
          return {
            kind: "capped",
            maxPending: options.maxPendingPerAgent,
            retryAfterSeconds: pendingCapRetryAfter(soonestExpiry, now),
          };
        }
        return { kind: "requested", approval: inserted.inserted };
      });
      if (outcome.kind === "requested") await emitRequested(outcome.approval);
      return outcome;
    },
  };
}
