import Router from "@koa/router";
import type { Context } from "koa";
import { createAuthenticator, credentialsOf, type Principal, wrongRole } from "../auth/authenticate.js";
import type { Approval } from "../db/schema.js";
import { describeIssues, readJsonBody } from "../http/json_body.js";
import { parseScope } from "../oauth/scope.js";
import type { StsServices } from "../services.js";
import { boundCall } from "./call.js";
import { decodeCursor, decodePendingCursor, encodeCursor, encodePendingCursor } from "./cursor.js";
import {
  ApprovalError,
  approvalNotFound,
  INVALID_STATE,
  invalidRequest,
  TOO_MANY_PENDING,
} from "./errors.js";
import { admitRequest, pendingCapRetryAfter } from "./limits.js";
import {
  APPROVAL_ID_PATTERN,
  type ApprovalJson,
  effectiveStatus,
  newApprovalId,
  toApprovalJson,
} from "./model.js";
import { narrowTerms } from "./narrow.js";
import {
  type ApprovalDecisionAction,
  type ApprovalDecisionTerms,
  type ApproverPolicy,
  allowAllApprovers,
} from "./policy.js";
import {
  approveApproval,
  type Decider,
  denyApproval,
  findApproval,
  insertApproval,
  listApprovals,
  listPendingApprovals,
  revokeApproval,
} from "./repository.js";
import { approvalRouteHandler, type CallState } from "./route_handler.js";
import { approveBody, createApprovalBody, DEFAULT_MAX_TOKENS, decisionBody, listQuery } from "./schemas.js";

/** Options for {@link approvalRoutes}. */
export interface ApprovalRoutesOptions {
  /** Decides whether an approver may approve (e.g. Cedar). Default: {@link allowAllApprovers}. */
  readonly policy?: ApproverPolicy;
  /**
   * Told of every granted request and decision after it commits (webhooks). Awaited but never fatal:
   * a throwing or rejecting sink is logged and the API call answers as usual.
   */
  readonly onEvent?: ApprovalEventSink;
}

/** The approval events {@link ApprovalRoutesOptions.onEvent} receives. */
export type ApprovalEventType =
  | "approval.requested"
  | "approval.approved"
  | "approval.denied"
  | "approval.revoked";

/** Receives approval events after their commit. */
export type ApprovalEventSink = (
  type: ApprovalEventType,
  approval: ApprovalJson,
) => Promise<unknown> | undefined;

function decider(principal: Principal & { kind: "approver" }): Decider {
  return { subject: principal.subject, issuer: principal.identity.issuer };
}

/** 409 explaining why a decision did not apply to `approval` as it now stands. */
function stateConflict(approval: Approval, action: "approve" | "deny" | "revoke"): ApprovalError {
  const status = effectiveStatus(approval);
  const options = { approvalId: approval.id };
  if (status === "expired") {
    return new ApprovalError(409, INVALID_STATE, "the approval has expired", "already_expired", options);
  }
  const needed = action === "revoke" ? "approved" : "pending";
  const hint = action === "revoke" && status === "pending" ? "; deny a pending approval instead" : "";
  return new ApprovalError(
    409,
    INVALID_STATE,
    `the approval is ${status}; only a${needed === "approved" ? "n" : ""} ${needed} approval can be ${action === "deny" ? "denie" : action}d${hint}`,
    "state_conflict",
    options,
  );
}

/**
 * The approval API (docs/reference.md#the-approval-api-routes): agents ask (`POST /approvals`), approvers decide (approve, deny,
 * revoke), both read. Every decision and every authenticated caller's refusal is an audit event with a
 * stable reason code (unauthenticated refusals are logged only);
 * decisions commit with their audit event in one transaction, as compare-and-set updates.
 */
export function approvalRoutes(services: StsServices, options: ApprovalRoutesOptions = {}): Router {
  const { config, db, logger } = services;
  const policy = options.policy ?? allowAllApprovers;
  const authenticate = createAuthenticator(services);

  /** Tells the event sink, if any; its failure never fails the call. */
  async function emit(type: ApprovalEventType, approval: ApprovalJson): Promise<void> {
    if (!options.onEvent) return;
    try {
      await options.onEvent(type, approval);
    } catch (error) {
      logger.warn(
        { err: { message: (error as Error).message }, type, approval_id: approval.id },
        "approval event sink failed",
      );
    }
  }
  const router = new Router();

  const handle = approvalRouteHandler(services);

  /**
   * The issuer an approval's subject binding names. With several issuers trusted for subject tokens a
   * bare `sub` is ambiguous (two IdPs may both have an "alice"), so `subject_issuer` is then required;
   * with one, that one is recorded, so trusting a second issuer later widens no existing approval.
   */
  function subjectIssuerOf(subject: string | undefined, named: string | undefined): string | null {
    const trusted = services.trustedIssuers.issuersFor("subject");
    if (subject === undefined) {
      if (named !== undefined) throw invalidRequest("subject_issuer: may only be given with subject");
      return null;
    }
    if (named !== undefined) {
      if (!trusted.includes(named)) {
        throw invalidRequest("subject_issuer: is not an issuer trusted for subject tokens");
      }
      return named;
    }
    if (trusted.length > 1) {
      throw invalidRequest(
        "subject_issuer: is required with subject, because several issuers are trusted for subject tokens",
      );
    }
    return trusted[0] ?? null;
  }

  /**
   * Asks the approver policy whether `principal` may take `action` on `approval` with `terms`; a
   * refusal or an evaluation failure is a 403 (fail closed).
   */
  async function authorizeDecision(
    action: ApprovalDecisionAction,
    principal: Principal & { kind: "approver" },
    approval: Approval,
    terms: ApprovalDecisionTerms,
  ): Promise<void> {
    const refusal = { approvalId: approval.id };
    let verdict: Awaited<ReturnType<ApproverPolicy["authorizeDecision"]>>;
    try {
      verdict = await policy.authorizeDecision({
        action,
        approver: principal.identity,
        approval: toApprovalJson(approval),
        terms,
      });
    } catch (error) {
      logger.error(
        { err: { message: (error as Error).message }, approval_id: approval.id, action },
        "approver policy failed",
      );
      throw new ApprovalError(
        403,
        "access_denied",
        "the approver policy could not be evaluated",
        "policy_error",
        refusal,
      );
    }
    if (!verdict.allowed) {
      const noun =
        action === "approve"
          ? "this approval"
          : `${action === "deny" ? "denying" : "revoking"} this approval`;
      throw new ApprovalError(
        403,
        "access_denied",
        `policy ${verdict.policyId} forbids ${noun}: ${verdict.reason}`,
        "policy_denied",
        refusal,
      );
    }
  }

  /** An approval's current terms, as the policy sees them for deny and revoke. */
  function currentTerms(approval: Approval): ApprovalDecisionTerms {
    return {
      scope: approval.scope,
      max_tokens: approval.max_tokens,
      expires_at: approval.expires_at.toISOString(),
      rate_limit: approval.rate_limit,
      tools: approval.tools,
      resources: approval.resources,
      prompts: approval.prompts,
    };
  }

  async function principalOf(ctx: Context, state: CallState): Promise<Principal> {
    state.principal = await authenticate(credentialsOf(ctx));
    return state.principal;
  }

  async function agent(ctx: Context, state: CallState) {
    const principal = await principalOf(ctx, state);
    if (principal.kind !== "agent") throw wrongRole("agent");
    return principal;
  }

  async function approver(ctx: Context, state: CallState) {
    const principal = await principalOf(ctx, state);
    if (principal.kind !== "approver") throw wrongRole("approver");
    return principal;
  }

  async function load(id: string | undefined): Promise<Approval> {
    if (id === undefined || !APPROVAL_ID_PATTERN.test(id)) throw approvalNotFound();
    const approval = await findApproval(db, id);
    if (!approval) throw approvalNotFound();
    return approval;
  }

  function respond(ctx: Context, status: number, body: unknown) {
    ctx.status = status;
    ctx.set("Cache-Control", "no-store");
    ctx.body = body;
  }

  router.post(
    "/approvals",
    handle("request", async (ctx, state) => {
      const { clientId } = await agent(ctx, state);
      // Before the body is read: every authenticated attempt counts, malformed ones too.
      const admission = await admitRequest(db, clientId, config.approvals.request_rate_limit);
      if (!admission.allowed) {
        throw new ApprovalError(
          429,
          "slow_down",
          `too many approval requests from this agent; retry in ${admission.retryAfterSeconds} s`,
          "request_rate_limited",
          { headers: { "Retry-After": String(admission.retryAfterSeconds) } },
        );
      }
      const body = await readJsonBody(ctx, createApprovalBody);
      if (body.call && body.max_tokens !== undefined && body.max_tokens !== 1) {
        throw invalidRequest(
          "max_tokens: must be 1 or absent with call (an approval bound to one call mints one token)",
          "call_max_tokens_conflict",
        );
      }
      const maxTokens = body.call ? 1 : (body.max_tokens ?? DEFAULT_MAX_TOKENS);
      const resource = config.resources.find((candidate) => candidate.id === body.resource);
      if (!resource) {
        throw new ApprovalError(
          400,
          "invalid_target",
          "resource: is not a configured resource",
          "resource_unknown",
        );
      }
      const scopes = parseScope(body.scope);
      if (scopes.length === 0) {
        throw new ApprovalError(400, "invalid_scope", "scope: names no scope", "scope_invalid");
      }
      const unknown = scopes.filter((scope) => !resource.scopes.includes(scope));
      if (unknown.length > 0) {
        throw new ApprovalError(
          400,
          "invalid_scope",
          `scope: ${unknown.map((s) => JSON.stringify(s)).join(", ")} ${unknown.length > 1 ? "are not scopes" : "is not a scope"} of ${resource.id}`,
          "scope_invalid",
        );
      }
      const subjectIssuer = subjectIssuerOf(body.subject, body.subject_issuer);
      const call = body.call ? boundCall(body.call) : null;
      const id = newApprovalId();
      const maxPending = config.approvals.max_pending_per_agent;
      const outcome = await insertApproval(
        db,
        {
          id,
          clientId,
          resource: resource.id,
          scope: scopes.join(" "),
          task: body.task,
          subject: body.subject ?? null,
          subjectIssuer,
          // A call approval is good for one call: one token, which the gateway lets through once.
          maxTokens,
          ttlSeconds: body.ttl_seconds,
          rateLimit: body.rate_limit ?? null,
          call,
          targets: {
            tools: call ? [call.tool] : (body.tools ?? null),
            resources: body.resources ?? null,
            prompts: body.prompts ?? null,
          },
        },
        {
          event: "approval.requested",
          outcome: "granted",
          client_id: clientId,
          actor: clientId,
          detail: {
            resource: resource.id,
            scope: scopes.join(" "),
            max_tokens: maxTokens,
            ttl_seconds: body.ttl_seconds,
            ...(body.tools ? { tools: body.tools } : {}),
            ...(call ? { call: { tool: call.tool, arguments_digest: call.argumentsDigest } } : {}),
            ...(body.resources ? { resources: body.resources } : {}),
            ...(body.prompts ? { prompts: body.prompts } : {}),
          },
        },
        maxPending,
      );
      if ("capped" in outcome) {
        const { soonestExpiry, now } = outcome.capped;
        const retryAfter = pendingCapRetryAfter(soonestExpiry, now);
        throw new ApprovalError(
          429,
          TOO_MANY_PENDING,
          `this agent already has ${maxPending} pending approvals, the most allowed; retry when one is decided or expires (in ${retryAfter} s at most)`,
          "pending_cap_reached",
          { headers: { "Retry-After": String(retryAfter) } },
        );
      }
      const approval = outcome.inserted;
      logger.info(
        { event: "approval.requested", approval_id: id, client_id: clientId },
        "approval requested",
      );
      ctx.set("Location", `/approvals/${id}`);
      const json = toApprovalJson(approval);
      await emit("approval.requested", json);
      respond(ctx, 201, json);
    }),
  );

  router.get(
    "/approvals",
    handle("list", async (ctx, state) => {
      await approver(ctx, state);
      const parsed = listQuery.safeParse(ctx.query);
      if (!parsed.success) {
        throw invalidRequest(describeIssues(parsed.error));
      }
      const { status, limit, cursor } = parsed.data;
      if (status === "pending") {
        const rows = await listPendingApprovals(db, {
          limit: limit + 1,
          after: cursor === undefined ? undefined : decodePendingCursor(cursor),
        });
        const page = rows.slice(0, limit);
        const last = page.at(-1);
        respond(ctx, 200, {
          approvals: page.map((row) => toApprovalJson(row)),
          next_cursor: rows.length > limit && last ? encodePendingCursor(last) : null,
        });
        return;
      }
      const rows = await listApprovals(db, {
        status,
        limit: limit + 1,
        after: cursor === undefined ? undefined : decodeCursor(cursor),
      });
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      respond(ctx, 200, {
        approvals: page.map((row) => toApprovalJson(row)),
        next_cursor: rows.length > limit && last ? encodeCursor(last) : null,
      });
    }),
  );

  router.get(
    "/approvals/:id",
    handle("read", async (ctx, state) => {
      const principal = await principalOf(ctx, state);
      const approval = await load(ctx.params.id);
      // Another agent's approval is answered exactly like a missing one: existence is not leaked.
      // The audit row says what happened, under the caller only: written under the approval, another
      // agent's probes would fill that approval's audit trail.
      if (principal.kind === "agent" && approval.client_id !== principal.clientId) {
        throw new ApprovalError(404, "not_found", "no such approval", "not_owner");
      }
      respond(ctx, 200, toApprovalJson(approval));
    }),
  );

  router.post(
    "/approvals/:id/approve",
    handle("approve", async (ctx, state) => {
      const principal = await approver(ctx, state);
      const body = await readJsonBody(ctx, approveBody);
      const approval = await load(ctx.params.id);
      if (effectiveStatus(approval) !== "pending") throw stateConflict(approval, "approve");

      const narrowed = narrowTerms(approval, body);
      const { scope, maxTokens, expiresAt, rateLimit, targets } = narrowed;
      const terms: ApprovalDecisionTerms = {
        scope,
        max_tokens: maxTokens,
        expires_at: expiresAt.toISOString(),
        rate_limit: rateLimit,
        tools: targets.tools,
        resources: targets.resources,
        prompts: targets.prompts,
      };
      await authorizeDecision("approve", principal, approval, terms);

      const approved = await approveApproval(db, approval.id, narrowed, decider(principal), {
        event: "approval.approved",
        outcome: "granted",
        approval_id: approval.id,
        client_id: approval.client_id,
        actor: principal.subject,
        detail: { issuer: principal.identity.issuer, ...terms },
      });
      if (!approved) throw stateConflict((await findApproval(db, approval.id)) ?? approval, "approve");
      logger.info(
        { event: "approval.approved", approval_id: approval.id, actor: principal.subject },
        "approval approved",
      );
      const json = toApprovalJson(approved);
      await emit("approval.approved", json);
      respond(ctx, 200, json);
    }),
  );

  router.post(
    "/approvals/:id/deny",
    handle("deny", async (ctx, state) => {
      const principal = await approver(ctx, state);
      const body = await readJsonBody(ctx, decisionBody);
      const approval = await load(ctx.params.id);
      if (effectiveStatus(approval) !== "pending") throw stateConflict(approval, "deny");
      await authorizeDecision("deny", principal, approval, currentTerms(approval));
      const denied = await denyApproval(db, approval.id, body.reason ?? null, decider(principal), {
        event: "approval.denied",
        outcome: "granted",
        approval_id: approval.id,
        client_id: approval.client_id,
        actor: principal.subject,
        detail: { issuer: principal.identity.issuer, reason: body.reason ?? null },
      });
      if (!denied) throw stateConflict((await findApproval(db, approval.id)) ?? approval, "deny");
      logger.info(
        { event: "approval.denied", approval_id: approval.id, actor: principal.subject },
        "approval denied",
      );
      const json = toApprovalJson(denied);
      await emit("approval.denied", json);
      respond(ctx, 200, json);
    }),
  );

  router.post(
    "/approvals/:id/revoke",
    handle("revoke", async (ctx, state) => {
      const principal = await approver(ctx, state);
      const body = await readJsonBody(ctx, decisionBody);
      const approval = await load(ctx.params.id);
      if (effectiveStatus(approval) !== "approved") throw stateConflict(approval, "revoke");
      await authorizeDecision("revoke", principal, approval, currentTerms(approval));
      const revoked = await revokeApproval(db, approval.id, body.reason ?? null, {
        event: "approval.revoked",
        outcome: "granted",
        approval_id: approval.id,
        client_id: approval.client_id,
        actor: principal.subject,
        detail: { issuer: principal.identity.issuer, reason: body.reason ?? null },
      });
      if (!revoked) throw stateConflict((await findApproval(db, approval.id)) ?? approval, "revoke");
      logger.info(
        { event: "approval.revoked", approval_id: approval.id, actor: principal.subject },
        "approval revoked",
      );
      const json = toApprovalJson(revoked);
      await emit("approval.revoked", json);
      respond(ctx, 200, json);
    }),
  );

  return router;
}
