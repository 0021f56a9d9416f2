import Router from "@koa/router";
import { approvalAuditTrail } from "../audit/trail.js";
import { createAuthenticator, credentialsOf, wrongRole } from "../auth/authenticate.js";
import type { StsServices } from "../services.js";
import { approvalNotFound } from "./errors.js";
import { APPROVAL_ID_PATTERN } from "./model.js";
import { findApproval } from "./repository.js";
import { approvalRouteHandler } from "./route_handler.js";

/** Most audit events `GET /approvals/{id}/audit` returns: its lifecycle, then the latest ones. */
export const MAX_AUDIT_EVENTS = 500;

/** One entry of an approval's audit trail as the API returns it (no `detail`: never secrets). */
export interface AuditEventJson {
  /** When it happened, ISO 8601 (for a counted row: the start of its window). */
  at: string;
  /** What happened, e.g. `approval.requested`, `approval.approved`, `token_exchange`. */
  event: string;
  outcome: "granted" | "refused" | "info";
  /** Stable reason code for refusals; null when granted. */
  reason: string | null;
  /** An approver's `sub`, an agent's `client_id`, or `system`. */
  actor: string | null;
  /** Only on a row that stands for several refusals: how many. */
  count?: number;
  /** Only with `count`: when the last of them happened, ISO 8601. */
  last_at?: string;
}

/**
 * `GET /approvals/{id}/audit` (approvers only): the approval's audit trail, oldest first, at most
 * {@link MAX_AUDIT_EVENTS}: its lifecycle events (requested, approved, denied, revoked) and its first
 * and last granted token requests always, then its latest other events (`truncated` says when some were
 * left out). Repeated refusals come as one entry with `count`. Only the event's time, name, outcome,
 * reason and actor are returned; the `detail` column stays server-side. Like every approval API route
 * it runs in its span and its refusals are logged and, for an authenticated caller, audited as
 * `approval.read_audit` ({@link approvalRouteHandler}).
 */
export function approvalAuditRoutes(services: StsServices): Router {
  const { db } = services;
  const authenticate = createAuthenticator(services);
  const handle = approvalRouteHandler(services);
  const router = new Router();

  router.get(
    "/approvals/:id/audit",
    handle("read_audit", async (ctx, state) => {
      const principal = await authenticate(credentialsOf(ctx));
      state.principal = principal;
      if (principal.kind !== "approver") throw wrongRole("approver");
      const id = ctx.params.id;
      if (id === undefined || !APPROVAL_ID_PATTERN.test(id)) throw approvalNotFound();
      if (!(await findApproval(db, id))) throw approvalNotFound();
      const { rows, truncated } = await approvalAuditTrail(db, id, MAX_AUDIT_EVENTS);
      const events: AuditEventJson[] = rows.map((row) => ({
        at: new Date(row.at).toISOString(),
        event: row.event,
        outcome: row.outcome,
        reason: row.reason,
        actor: row.actor,
        ...(row.occurrences > 1
          ? { count: row.occurrences, last_at: new Date(row.last_at ?? row.at).toISOString() }
          : {}),
      }));
      ctx.set("Cache-Control", "no-store");
      ctx.body = { events, truncated };
    }),
  );

  return router;
}
