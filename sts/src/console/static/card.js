// One approval as a card: its facts, the decision forms of its list (approve and deny while
// pending, revoke while approved), and its audit trail on demand. An agent wrote the task and
// other fields: they go in as text only, each its own bidi isolate with its hidden characters shown
// (agentText in view.js).

import * as api from "./api.js";
import { handleAuthError } from "./auth.js";
import { approveForm, decisionForm } from "./decide.js";
import { describe } from "./page.js";
import {
  agentText,
  auditTable,
  el,
  fact,
  formatRateLimit,
  jsonNodes,
  replaceChildren,
  scopeList,
  scopesOf,
  timeElement,
} from "./view.js";

/** @import { Approval } from "./api.js" */

/** The lists of the page. @typedef {"pending" | "approved" | "closed"} ListKind */

/**
 * A card on the page: `update` shows a newer state of its approval, keeping what the approver typed.
 * @typedef {{ root: HTMLElement, kind: ListKind, approval: Approval, update: (a: Approval) => void,
 *   auditOpen: () => boolean, refreshAudit: () => void }} Card
 */

/**
 * The facts of an approval as a description list.
 * @param {Approval} approval
 */
function facts(approval) {
  const granted = scopesOf(approval.scope);
  const requested = scopesOf(approval.requested_scope ?? approval.scope);
  const wasApproved = approval.approved_by !== null;
  const narrowed = wasApproved && requested.join(" ") !== granted.join(" ");
  const used = `${approval.tokens_issued} of ${approval.max_tokens} tokens issued`;
  const live = approval.status === "pending" || approval.status === "approved";
  const dl = el("dl", { class: "facts" });
  dl.append(
    fact("Agent", agentText("code", {}, approval.client_id)),
    fact("Resource", agentText("code", {}, approval.resource)),
    fact(
      wasApproved ? "Scopes granted" : "Scopes requested",
      scopeList(wasApproved ? granted : requested, "scopes"),
      narrowed ? " " : null,
      narrowed
        ? el("span", { class: "hint" }, "asked for ", agentText("span", {}, requested.join(" ")))
        : null,
    ),
    fact("On behalf of", approval.subject ? agentText("code", {}, approval.subject) : "any subject"),
    fact(
      "Budget",
      el("progress", {
        max: approval.max_tokens,
        value: approval.tokens_issued,
        "aria-label": used,
      }),
      ` ${used}`,
    ),
    fact("Rate limit", formatRateLimit(approval.rate_limit)),
    fact("Requested", timeElement(approval.created_at)),
  );
  if (live || approval.status === "expired") {
    dl.append(fact(live ? "Expires" : "Expired", timeElement(approval.expires_at)));
  }
  if (approval.approved_by) dl.append(fact("Approved by", agentText("span", {}, approval.approved_by)));
  if (approval.decided_at && approval.status !== "pending") {
    dl.append(fact(approval.status === "denied" ? "Denied" : "Decided", timeElement(approval.decided_at)));
  }
  if (approval.status === "revoked" && approval.revoked_at) {
    dl.append(fact("Revoked", timeElement(approval.revoked_at)));
  }
  if (approval.decision_reason) {
    dl.append(fact("Reason", agentText("span", {}, approval.decision_reason)));
  }
  if (approval.tools) dl.append(fact("Tools", scopeList(approval.tools, "tools")));
  if (approval.resources) dl.append(fact("MCP resources", scopeList(approval.resources, "MCP resources")));
  if (approval.prompts) dl.append(fact("Prompts", scopeList(approval.prompts, "prompts")));
  if (approval.call) {
    // The exact arguments the one call may carry, agent-written: text only, never markup; laid out
    // left to right as JSON, each string its own isolate with its hidden characters shown.
    dl.append(
      fact(
        "Tool call",
        agentText("code", {}, approval.call.tool),
        el("pre", { class: "call-arguments", dir: "ltr" }, ...jsonNodes(approval.call.arguments)),
      ),
    );
  }
  return dl;
}

/**
 * One approval as a card of the list `kind`: its facts, the forms that list allows, its audit trail.
 * @param {Approval} approval
 * @param {ListKind} kind
 * @param {() => Promise<void>} refresh refreshes the lists, after a decision
 * @returns {Card}
 */
export function createCard(approval, kind, refresh) {
  const prefix = `${kind}-${approval.id}`;
  const titleId = `${prefix}-title`;
  const badge = el("span", { class: `badge status-${approval.status}` }, approval.status);
  const factsSlot = el("div", { class: "facts-slot" }, facts(approval));
  const auditId = `${prefix}-audit`;
  const auditPanel = el("div", { id: auditId, class: "audit-panel", hidden: true });
  const auditButton = el(
    "button",
    { type: "button", class: "link", "aria-expanded": "false", "aria-controls": auditId },
    "Show audit trail",
  );
  let open = false;
  let current = approval;

  async function refreshAudit() {
    try {
      const answer = await api.auditTrail(current.id);
      replaceChildren(auditPanel, auditTable(answer.events, answer.truncated === true));
    } catch (error) {
      replaceChildren(
        auditPanel,
        el("p", { class: "error" }, `Could not load the audit trail: ${describe(error)}`),
      );
      await handleAuthError(error);
    }
  }

  auditButton.addEventListener("click", () => {
    open = !open;
    auditButton.setAttribute("aria-expanded", String(open));
    auditButton.textContent = open ? "Hide audit trail" : "Show audit trail";
    auditPanel.hidden = !open;
    if (open) {
      replaceChildren(auditPanel, el("p", { class: "hint" }, "Loading…"));
      void refreshAudit();
    }
  });

  const article = el(
    "article",
    { class: "approval", "aria-labelledby": titleId },
    el(
      "header",
      { class: "card-head" },
      badge,
      agentText("h3", { id: titleId }, approval.task),
      el("p", { class: "card-id" }, el("code", {}, approval.id)),
    ),
    factsSlot,
  );
  if (kind === "pending") {
    article.append(
      el(
        "div",
        { class: "decide" },
        approveForm(approval, prefix, refresh),
        decisionForm(approval, prefix, "deny", refresh),
      ),
    );
  } else if (kind === "approved") {
    article.append(el("div", { class: "decide" }, decisionForm(approval, prefix, "revoke", refresh)));
  }
  article.append(el("div", { class: "audit-toggle" }, auditButton), auditPanel);
  const root = el("li", { class: `card card-${kind}`, "data-approval-id": approval.id }, article);

  return {
    root,
    kind,
    approval,
    update(next) {
      const changed =
        next.tokens_issued !== current.tokens_issued ||
        next.status !== current.status ||
        next.scope !== current.scope;
      current = next;
      this.approval = next;
      badge.textContent = next.status;
      badge.className = `badge status-${next.status}`;
      replaceChildren(factsSlot, facts(next));
      if (changed && open) void refreshAudit();
    },
    auditOpen: () => open,
    refreshAudit: () => void refreshAudit(),
  };
}
