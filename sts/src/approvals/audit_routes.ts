import Router from "@koa/router";
import { createAuthenticator, credentialsOf, wrongRole } from "../auth/authenticate.js";
import type { StsServices } from "../services.js";
import { approvalNotFound } from "./errors.js";
import { APPROVAL_ID_PATTERN } from "./model.js";
import { findApproval } from "./repository.js";

/** Most audit events `GET /approvals/{id}/audit` returns: the latest ones, oldest first. */
export const MAX_AUDIT_EVENTS = 500;

/** One entry of an approval's audit trail as the API returns it (no `detail`: never secrets). */
export interface AuditEventJson {
  /** When it happened, ISO 8601. */
  at: string;
  /** What happened, e.g. `approval.requested`, `approval.approved`, `token_exchange`. */
  event: string;
  outcome: "granted" | "refused" | "info";
  /** Stable reason code for refusals; null when granted. */
  reason: string | null;
  /** An approver's `sub`, an agent's `client_id`, or `system`. */
  actor: string | null;
}

/**
 * `GET /approvals/{id}/audit` (approvers only): the approval's audit trail, oldest first, at most
 * {@link MAX_AUDIT_EVENTS} (the latest; `truncated` says when older ones were left out). Only the
 * event's time, name, outcome, reason and actor are returned; the `detail` column stays server-side.
 */
export function approvalAuditRoutes(services: StsServices): Router {
  const { db } = services;
  const authenticate = createAuthenticator(services);
  const router = new Router();

  router.get("/approvals/:id/audit", async (ctx) => {
    const principal = await authenticate(credentialsOf(ctx));
    if (principal.kind !== "approver") throw wrongRole("approver");
    const id = ctx.params.id;
    if (id === undefined || !APPROVAL_ID_PATTERN.test(id)) throw approvalNotFound();
    if (!(await findApproval(db, id))) throw approvalNotFound();
    const rows = await db
      .selectFrom("audit_events")
      .select(["id", "at", "event", "outcome", "reason", "actor"])
      .where("approval_id", "=", id)
      .orderBy("id", "desc")
      .limit(MAX_AUDIT_EVENTS + 1)
      .execute();
    const truncated = rows.length > MAX_AUDIT_EVENTS;
    const events: AuditEventJson[] = rows
      .slice(0, MAX_AUDIT_EVENTS)
      .reverse()
      .map((row) => ({
        at: new Date(row.at).toISOString(),
        event: row.event,
        outcome: row.outcome,
        reason: row.reason,
        actor: row.actor,
      }));
    ctx.set("Cache-Control", "no-store");
    ctx.body = { events, truncated };
  });

  return router;
}
