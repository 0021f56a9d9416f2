import type { Context } from "koa";
import type { AuditEvent } from "../audit/audit_log.js";
import { recordRefusal } from "../audit/refusals.js";
import type { Principal } from "../auth/authenticate.js";
import { ApiError } from "../http/errors.js";
import { matchedRoute, traceRequest } from "../ops/tracing.js";
import type { StsServices } from "../services.js";
import { ApprovalError } from "./errors.js";

/**
 * What an approval API call does, for audit event names (`approval.<action>`): `read_audit` is
 * `GET /approvals/{id}/audit`.
 */
export type ApprovalAction = "request" | "read" | "list" | "approve" | "deny" | "revoke" | "read_audit";

/** What a handler learns about its call as it runs: the caller, once authenticated. */
export interface CallState {
  principal?: Principal;
}

/** An approval API route's handler, with its call's {@link CallState}. */
export type ApprovalCall = (ctx: Context, state: CallState) => Promise<void>;

function actorOf(principal: Principal | undefined): string | null {
  if (!principal) return null;
  return principal.kind === "agent" ? principal.clientId : principal.subject;
}

/**
 * The wrapper of every approval API route (`/approvals…`): it runs the handler in its span (route
 * template, status, reason) and, on a refusal ({@link ApiError}: the authenticator's, the body
 * reader's, the approval API's own), writes a log line and, for an authenticated caller, an audit row
 * `approval.<action>` with the refusal's reason code (counted per caller and window,
 * {@link recordRefusal}), then lets the refusal render. An anonymous
 * caller's refusal gets the log line only, so nobody without a credential can make the STS write to
 * its database. A handler sets `state.principal` as soon as it has authenticated the caller.
 */
export function approvalRouteHandler(services: StsServices) {
  const { db, logger } = services;
  return function handle(action: ApprovalAction, handler: ApprovalCall) {
    return (ctx: Context) =>
      traceRequest(ctx, matchedRoute(ctx, "/approvals"), services.config.tracing.trust_incoming_context, () =>
        call(ctx),
      );

    async function call(ctx: Context) {
      const state: CallState = {};
      try {
        await handler(ctx, state);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const event: AuditEvent = {
          event: `approval.${action}`,
          outcome: "refused",
          reason: error.reason,
          approval_id: (error instanceof ApprovalError ? error.approvalId : undefined) ?? null,
          client_id: state.principal?.kind === "agent" ? state.principal.clientId : null,
          actor: actorOf(state.principal),
          detail: { status: error.status, error: error.error },
        };
        logger.info(
          { event: event.event, reason: event.reason, approval_id: event.approval_id, actor: event.actor },
          "approval api refusal",
        );
        if (!state.principal) throw error;
        try {
          // Refusals are counted per (caller, event, reason, approval) and window, like the token
          // endpoint's: a caller looping on a refused call adds to one row, it cannot grow the table.
          await recordRefusal(db, {
            event: event.event,
            reason: error.reason,
            clientId: event.client_id ?? null,
            actor: event.actor ?? null,
            claimedApprovalId: event.approval_id ?? null,
            detail: event.detail ?? {},
          });
        } catch (auditError) {
          logger.warn({ err: { message: (auditError as Error).message } }, "audit of a refusal failed");
        }
        throw error;
      }
    }
  };
}
