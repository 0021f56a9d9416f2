// The approval console: sign in, watch requests arrive (polling every POLL_MS), approve with
// narrowing, deny, revoke, read an approval's audit trail. Plain ES modules, no build step.

import * as api from "./api.js";
import {
  auditTable,
  el,
  fact,
  formatDuration,
  formatRateLimit,
  formatTime,
  numberField,
  replaceChildren,
  scopeList,
  scopesOf,
  timeElement,
} from "./view.js";

/** How often the approval lists are refreshed, in milliseconds. */
const POLL_MS = 2000;
/** Most approvals shown per list (one page of the list API). */
const LIST_LIMIT = 200;
/** Most closed (denied, revoked, expired) approvals kept on the page. */
const CLOSED_LIMIT = 20;

/** @import { Approval } from "./api.js" */

/** @typedef {{ root: HTMLElement, kind: string, approval: Approval, update: (a: Approval) => void,
 *   auditOpen: () => boolean, refreshAudit: () => void }} Card */

/** @param {string} id */
function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing #${id}`);
  return node;
}

const ui = {
  signIn: byId("sign-in"),
  tokenForm: /** @type {HTMLFormElement} */ (byId("token-form")),
  token: /** @type {HTMLTextAreaElement} */ (byId("token")),
  devForm: /** @type {HTMLFormElement} */ (byId("dev-form")),
  devSub: /** @type {HTMLInputElement} */ (byId("dev-sub")),
  signInError: byId("sign-in-error"),
  session: byId("session"),
  who: byId("who"),
  signOut: byId("sign-out"),
  workspace: byId("workspace"),
  pollStatus: byId("poll-status"),
  announcer: byId("announcer"),
  alerts: byId("alerts"),
  lists: {
    pending: {
      list: byId("pending-list"),
      empty: byId("pending-empty"),
      count: byId("pending-count"),
      more: byId("pending-more"),
    },
    approved: {
      list: byId("approved-list"),
      empty: byId("approved-empty"),
      count: byId("approved-count"),
      more: byId("approved-more"),
    },
    closed: {
      list: byId("closed-list"),
      empty: byId("closed-empty"),
      count: byId("closed-count"),
      more: null,
    },
  },
};

/** Cards on the page, by approval id. @type {Map<string, Card>} */
const cards = new Map();
let pollTimer = 0;
let polling = false;
let pollAgain = false;
let firstPoll = true;
/** Bumped on sign-in and sign-out so a poll in flight from an old session is ignored. */
let session = 0;

/** @param {string} message */
function announce(message) {
  // Clearing first makes screen readers announce a repeated message again.
  ui.announcer.textContent = "";
  window.setTimeout(() => {
    ui.announcer.textContent = message;
  }, 50);
}

/** @param {string} message */
function alertMessage(message) {
  ui.alerts.textContent = "";
  window.setTimeout(() => {
    ui.alerts.textContent = message;
  }, 50);
}

/** @param {unknown} error */
function describe(error) {
  if (error instanceof api.ApiError) {
    return error.status === 0 ? error.message : `${error.message} (${error.error}, HTTP ${error.status})`;
  }
  return error instanceof Error ? error.message : String(error);
}

// ---- sign-in ----------------------------------------------------------------------------------

/** @param {string} token */
function signedInAs(token) {
  const claims = api.peekClaims(token);
  const sub = claims && typeof claims.sub === "string" ? claims.sub : "unknown approver";
  const iss = claims && typeof claims.iss === "string" ? claims.iss : "";
  ui.who.textContent = sub;
  ui.who.title = iss ? `issuer ${iss}` : "";
}

/** @param {string} token */
async function signIn(token) {
  ui.signInError.textContent = "";
  try {
    await api.call("GET", "approvals?status=pending&limit=1", { token });
  } catch (error) {
    ui.signInError.textContent = `Sign-in failed: ${describe(error)}`;
    return false;
  }
  api.storeToken(token);
  showWorkspace(token);
  return true;
}

/** @param {string} token */
function showWorkspace(token) {
  session += 1;
  signedInAs(token);
  ui.signIn.hidden = true;
  ui.session.hidden = false;
  ui.workspace.hidden = false;
  firstPoll = true;
  ui.token.value = "";
  const heading = byId("pending-title");
  heading.setAttribute("tabindex", "-1");
  heading.focus();
  void poll();
}

/** @param {string} [reason] */
function signOut(reason) {
  session += 1;
  api.forgetToken();
  window.clearTimeout(pollTimer);
  polling = false;
  pollAgain = false;
  for (const card of cards.values()) card.root.remove();
  cards.clear();
  closedApprovals = [];
  ui.workspace.hidden = true;
  ui.session.hidden = true;
  ui.signIn.hidden = false;
  ui.signInError.textContent = reason ?? "";
  ui.token.focus();
}

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim().replace(/^Bearer\s+/i, "");
  if (!token) {
    ui.signInError.textContent = "Paste an approver token first.";
    ui.token.focus();
    return;
  }
  void signIn(token);
});

ui.devForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const sub = ui.devSub.value.trim();
  if (!sub) {
    ui.signInError.textContent = "Give the dev approver a name.";
    ui.devSub.focus();
    return;
  }
  try {
    const answer = await api.devToken(sub);
    await signIn(answer.access_token);
  } catch (error) {
    ui.signInError.textContent = `Could not get a development token: ${describe(error)}`;
  }
});

ui.signOut.addEventListener("click", () => {
  signOut("Signed out.");
});

// ---- cards ------------------------------------------------------------------------------------

/** @param {Approval} approval */
function requestedTtlSeconds(approval) {
  return Math.round(
    (new Date(approval.expires_at).getTime() - new Date(approval.created_at).getTime()) / 1000,
  );
}

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
    fact("Agent", el("code", {}, approval.client_id)),
    fact("Resource", el("code", {}, approval.resource)),
    fact(
      wasApproved ? "Scopes granted" : "Scopes requested",
      scopeList(wasApproved ? granted : requested, "scopes"),
      narrowed ? " " : null,
      narrowed ? el("span", { class: "hint" }, `asked for ${requested.join(" ")}`) : null,
    ),
    fact("On behalf of", approval.subject ? el("code", {}, approval.subject) : "any subject"),
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
  if (approval.approved_by) dl.append(fact("Approved by", approval.approved_by));
  if (approval.decided_at && approval.status !== "pending") {
    dl.append(fact(approval.status === "denied" ? "Denied" : "Decided", timeElement(approval.decided_at)));
  }
  if (approval.status === "revoked" && approval.revoked_at) {
    dl.append(fact("Revoked", timeElement(approval.revoked_at)));
  }
  if (approval.decision_reason) dl.append(fact("Reason", approval.decision_reason));
  return dl;
}

/**
 * Marks a field invalid, says why, and focuses it.
 * @param {HTMLElement} status
 * @param {HTMLElement} field
 * @param {string} message
 */
function invalid(status, field, message) {
  status.textContent = message;
  field.setAttribute("aria-invalid", "true");
  field.focus();
}

/**
 * @param {HTMLFormElement} form
 * @param {boolean} busy
 */
function setBusy(form, busy) {
  form.setAttribute("aria-busy", busy ? "true" : "false");
  for (const button of form.querySelectorAll("button")) button.disabled = busy;
}

/**
 * The approve form: every field starts at what the agent asked for and may only narrow it.
 * @param {Approval} approval
 * @param {string} prefix
 */
function approveForm(approval, prefix) {
  const requested = scopesOf(approval.requested_scope ?? approval.scope);
  const ttl = requestedTtlSeconds(approval);
  const limit = approval.rate_limit;
  const status = el("p", { class: "form-status", role: "status", id: `${prefix}-approve-status` });
  const scopeBoxes = requested.map((scope, index) => {
    const id = `${prefix}-scope-${index}`;
    return {
      scope,
      node: el(
        "div",
        { class: "check" },
        el("input", { type: "checkbox", id, name: "scope", value: scope, checked: true }),
        el("label", { for: id }, scope),
      ),
    };
  });
  const form = /** @type {HTMLFormElement} */ (
    el(
      "form",
      { class: "approve-form", novalidate: true, "aria-label": `Approve ${approval.task}` },
      el(
        "fieldset",
        { class: "scope-set" },
        el("legend", {}, "Scopes to grant"),
        ...scopeBoxes.map((box) => box.node),
      ),
      el(
        "div",
        { class: "fields" },
        numberField({
          id: `${prefix}-max-tokens`,
          label: "Token budget",
          value: String(approval.max_tokens),
          min: 1,
          max: approval.max_tokens,
          hint: `Asked for ${approval.max_tokens}`,
        }),
        numberField({
          id: `${prefix}-ttl`,
          label: "Lifetime (seconds from the request)",
          value: String(ttl),
          min: 1,
          max: ttl,
          hint: `Asked for ${formatDuration(ttl)}`,
        }),
      ),
      el(
        "fieldset",
        { class: "fields rate" },
        el("legend", {}, "Rate limit (optional)"),
        numberField({
          id: `${prefix}-per-second`,
          label: "Requests per second",
          value: limit ? String(limit.per_second) : "",
          min: 0,
          max: limit ? limit.per_second : undefined,
          step: "any",
        }),
        numberField({
          id: `${prefix}-burst`,
          label: "Burst",
          value: limit ? String(limit.burst) : "",
          min: 1,
          max: limit ? limit.burst : undefined,
        }),
      ),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "approve" }, "Approve")),
      status,
    )
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    /** @param {string} suffix */
    const input = (suffix) => /** @type {HTMLInputElement} */ (form.querySelector(`#${prefix}-${suffix}`));

    const chosen = scopeBoxes
      .filter((box) => /** @type {HTMLInputElement} */ (box.node.querySelector("input")).checked)
      .map((box) => box.scope);
    if (chosen.length === 0) {
      const first = /** @type {HTMLInputElement} */ (scopeBoxes[0]?.node.querySelector("input"));
      invalid(status, first, "Choose at least one scope, or deny the request.");
      return;
    }
    /** @type {Record<string, unknown>} */
    const terms = {};
    if (chosen.length < requested.length) terms.scope = chosen.join(" ");

    const maxTokens = Number(input("max-tokens").value);
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > approval.max_tokens) {
      invalid(
        status,
        input("max-tokens"),
        `The token budget must be a whole number from 1 to ${approval.max_tokens}.`,
      );
      return;
    }
    if (maxTokens < approval.max_tokens) terms.max_tokens = maxTokens;

    const ttlValue = Number(input("ttl").value);
    if (!Number.isInteger(ttlValue) || ttlValue < 1 || ttlValue > ttl) {
      invalid(status, input("ttl"), `The lifetime must be a whole number of seconds from 1 to ${ttl}.`);
      return;
    }
    if (ttlValue < ttl) terms.ttl_seconds = ttlValue;

    const perSecondText = input("per-second").value.trim();
    const burstText = input("burst").value.trim();
    if (perSecondText !== "" || burstText !== "") {
      const perSecond = Number(perSecondText);
      const burst = Number(burstText);
      if (!(perSecond > 0) || (limit && perSecond > limit.per_second)) {
        invalid(
          status,
          input("per-second"),
          limit
            ? `Requests per second must be above 0 and at most ${limit.per_second}.`
            : "Requests per second must be above 0.",
        );
        return;
      }
      if (!Number.isInteger(burst) || burst < 1 || (limit && burst > limit.burst)) {
        invalid(
          status,
          input("burst"),
          limit
            ? `Burst must be a whole number from 1 to ${limit.burst}.`
            : "Burst must be a whole number of at least 1.",
        );
        return;
      }
      if (!limit || perSecond !== limit.per_second || burst !== limit.burst) {
        terms.rate_limit = { per_second: perSecond, burst };
      }
    }

    setBusy(form, true);
    try {
      await api.approve(approval.id, terms);
      announce(`Approved “${approval.task}” for ${approval.client_id} with ${chosen.join(" ")}.`);
      byId("pending-title").focus();
      await poll();
    } catch (error) {
      status.textContent = `Not approved: ${describe(error)}`;
      await handleAuthError(error);
    } finally {
      setBusy(form, false);
    }
  });
  return form;
}

/**
 * A reason-and-button form for deny and revoke.
 * @param {Approval} approval
 * @param {string} prefix
 * @param {"deny" | "revoke"} action
 */
function decisionForm(approval, prefix, action) {
  const id = `${prefix}-${action}-reason`;
  const label = action === "deny" ? "Deny" : "Revoke";
  const status = el("p", { class: "form-status", role: "status" });
  const input = /** @type {HTMLInputElement} */ (
    el("input", { id, name: "reason", type: "text", maxlength: 500, autocomplete: "off" })
  );
  const form = /** @type {HTMLFormElement} */ (
    el(
      "form",
      { class: `decision ${action}-form`, novalidate: true, "aria-label": `${label} ${approval.task}` },
      el("div", { class: "field" }, el("label", { for: id }, `Reason to ${action} (optional)`), input),
      el("div", { class: "actions" }, el("button", { type: "submit", class: `danger ${action}` }, label)),
      status,
    )
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    setBusy(form, true);
    try {
      const reason = input.value.trim();
      if (action === "deny") await api.deny(approval.id, reason);
      else await api.revoke(approval.id, reason);
      announce(
        action === "deny"
          ? `Denied “${approval.task}” from ${approval.client_id}.`
          : `Revoked “${approval.task}”: ${approval.client_id} gets no more tokens and gateways refuse its tokens.`,
      );
      byId(action === "deny" ? "pending-title" : "approved-title").focus();
      await poll();
    } catch (error) {
      status.textContent = `Not ${action === "deny" ? "denied" : "revoked"}: ${describe(error)}`;
      await handleAuthError(error);
    } finally {
      setBusy(form, false);
    }
  });
  return form;
}

/**
 * @param {Approval} approval
 * @param {string} kind
 * @returns {Card}
 */
function createCard(approval, kind) {
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
      el("h3", { id: titleId }, approval.task),
      el("p", { class: "card-id" }, el("code", {}, approval.id)),
    ),
    factsSlot,
  );
  if (kind === "pending") {
    article.append(
      el("div", { class: "decide" }, approveForm(approval, prefix), decisionForm(approval, prefix, "deny")),
    );
  } else if (kind === "approved") {
    article.append(el("div", { class: "decide" }, decisionForm(approval, prefix, "revoke")));
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

/**
 * Puts the approvals of one list on the page, reusing cards (so a half-filled form survives a refresh).
 * @param {"pending" | "approved" | "closed"} kind
 * @param {Approval[]} approvals
 */
function render(kind, approvals) {
  const target = ui.lists[kind];
  const wanted = new Set(approvals.map((approval) => approval.id));
  for (const [id, card] of cards) {
    if (card.kind === kind && !wanted.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  let previous = null;
  for (const approval of approvals) {
    let card = cards.get(approval.id);
    if (card && card.kind !== kind) {
      card.root.remove();
      cards.delete(approval.id);
      card = undefined;
    }
    if (card) {
      card.update(approval);
    } else {
      card = createCard(approval, kind);
      cards.set(approval.id, card);
      if (kind === "pending" && !firstPoll) {
        card.root.classList.add("arrived");
        announce(`New request from ${approval.client_id}: “${approval.task}” on ${approval.resource}.`);
      }
    }
    /** @type {ChildNode | null} */
    const expectedNext = previous ? previous.nextSibling : target.list.firstChild;
    if (expectedNext !== card.root) {
      target.list.insertBefore(card.root, expectedNext);
    }
    previous = card.root;
  }
  target.count.textContent = String(approvals.length);
  target.empty.hidden = approvals.length > 0;
}

/** @param {unknown} error */
async function handleAuthError(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    signOut("Your session ended (the token expired or was rejected). Sign in again.");
    return true;
  }
  return false;
}

/** Approvals that closed (denied, revoked, expired) while this page watched them, newest first. */
/** @type {Approval[]} */
let closedApprovals = [];

/**
 * Learns the final state of approvals that left the pending and approved lists since the last poll.
 * @param {string[]} ids
 */
async function collectClosed(ids) {
  const answers = await Promise.all(
    ids.slice(0, CLOSED_LIMIT).map((id) =>
      /** @type {Promise<Approval>} */ (api.call("GET", `approvals/${encodeURIComponent(id)}`)).catch(
        (error) => {
          if (error instanceof api.ApiError && error.status === 404) return null;
          throw error;
        },
      ),
    ),
  );
  for (const approval of answers) {
    if (!approval || approval.status === "pending" || approval.status === "approved") continue;
    closedApprovals = [approval, ...closedApprovals.filter((other) => other.id !== approval.id)];
  }
  closedApprovals = closedApprovals.slice(0, CLOSED_LIMIT);
}

/**
 * One refresh: the pending and approved lists (one page each, oldest first: a queue), then the
 * final state of whatever left them. Re-entrant calls while a refresh runs queue one more refresh.
 */
async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  const mine = session;
  polling = true;
  window.clearTimeout(pollTimer);
  try {
    const [pending, approved] = await Promise.all([
      api.listApprovals("pending", LIST_LIMIT),
      api.listApprovals("approved", LIST_LIMIT),
    ]);
    if (mine !== session) return;
    const open = new Set([...pending.approvals, ...approved.approvals].map((approval) => approval.id));
    const left = [...cards.values()]
      .filter((card) => card.kind !== "closed" && !open.has(card.approval.id))
      .map((card) => card.approval.id);
    if (left.length > 0) await collectClosed(left);
    if (mine !== session) return;
    render("pending", pending.approvals);
    render("approved", approved.approvals);
    render("closed", closedApprovals);
    setMore("pending", pending.next_cursor !== null);
    setMore("approved", approved.next_cursor !== null);
    firstPoll = false;
    ui.pollStatus.textContent = `Live: checked for new requests at ${formatTime(new Date().toISOString())}`;
    ui.pollStatus.classList.remove("stale");
  } catch (error) {
    if (mine !== session) return;
    if (await handleAuthError(error)) return;
    ui.pollStatus.textContent = `Not updating: ${describe(error)}. Retrying…`;
    ui.pollStatus.classList.add("stale");
    alertMessage(`The console could not refresh: ${describe(error)}`);
  } finally {
    if (mine === session) {
      polling = false;
      if (!ui.workspace.hidden) {
        pollTimer = window.setTimeout(() => void poll(), pollAgain ? 0 : POLL_MS);
        pollAgain = false;
      }
    }
  }
}

/**
 * Says when a list has more approvals than one page shows.
 * @param {"pending" | "approved"} kind
 * @param {boolean} more
 */
function setMore(kind, more) {
  const target = ui.lists[kind];
  target.more.hidden = !more;
  target.more.textContent = more ? `Showing the oldest ${LIST_LIMIT}; decide these to see more.` : "";
}

// ---- start ------------------------------------------------------------------------------------

const devMode =
  document.querySelector('meta[name="countersign-dev-mode"]')?.getAttribute("content") === "true";
ui.devForm.hidden = !devMode;
const saved = api.storedToken();
if (saved) showWorkspace(saved);
