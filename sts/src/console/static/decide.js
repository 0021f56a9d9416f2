// The decision forms of a card: approve (every field starts at what the agent asked for and may
// only narrow it: scopes, the MCP tools, resources and prompts it names, budget, lifetime, rate
// limit; checked on the page before it reaches the API), deny and revoke. After a decision a form
// asks for a refresh of the lists.

import * as api from "./api.js";
import { handleAuthError } from "./auth.js";
import { announce, byId, describe } from "./page.js";
import { agentText, el, formatDuration, numberField, revealText, scopesOf } from "./view.js";

/** @import { Approval } from "./api.js" */

/**
 * The lifetime the agent asked for, in seconds.
 * @param {Approval} approval
 */
function requestedTtlSeconds(approval) {
  return Math.round(
    (new Date(approval.expires_at).getTime() - new Date(approval.created_at).getTime()) / 1000,
  );
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
 * A set of checkboxes, its values, the values checked, the first box.
 * @typedef {{ node: HTMLElement, values: string[], chosen: () => string[], first: () => HTMLInputElement }} CheckSet
 */

/**
 * A checkbox set, every box checked: one per value the agent asked for (agent-written text, shown
 * as {@link agentText}, each box labelled by its value).
 * @param {string} idPrefix ids are `${idPrefix}-${index}`
 * @param {string} name the inputs' name
 * @param {string} legend
 * @param {string[]} values
 * @returns {CheckSet}
 */
function checkSet(idPrefix, name, legend, values) {
  const inputs = values.map(
    (value, index) =>
      /** @type {HTMLInputElement} */ (
        el("input", { type: "checkbox", id: `${idPrefix}-${index}`, name, value, checked: true })
      ),
  );
  const node = el(
    "fieldset",
    { class: "scope-set" },
    el("legend", {}, legend),
    ...inputs.map((input, index) =>
      el("div", { class: "check" }, input, agentText("label", { for: input.id }, values[index] ?? "")),
    ),
  );
  return {
    node,
    values,
    chosen: () => values.filter((_, index) => inputs[index]?.checked),
    first: () => /** @type {HTMLInputElement} */ (inputs[0]),
  };
}

/**
 * The MCP lists an approval may name: the API's key, the set's legend, its noun for messages.
 * @type {ReadonlyArray<{ key: "tools" | "resources" | "prompts", legend: string, noun: string }>}
 */
const TARGETS = [
  { key: "tools", legend: "Tools to allow", noun: "tool" },
  { key: "resources", legend: "MCP resources to allow", noun: "MCP resource" },
  { key: "prompts", legend: "Prompts to allow", noun: "prompt" },
];

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
 * @param {() => Promise<void>} refresh called after the approval, to refresh the lists
 */
export function approveForm(approval, prefix, refresh) {
  const requested = scopesOf(approval.requested_scope ?? approval.scope);
  const ttl = requestedTtlSeconds(approval);
  const limit = approval.rate_limit;
  const status = el("p", { class: "form-status", role: "status", id: `${prefix}-approve-status` });
  const scopeSet = checkSet(`${prefix}-scope`, "scope", "Scopes to grant", requested);
  // Only the lists the agent named, name by name: an absent list (everything the scopes allow) has
  // no names to offer, and the form leaves it absent. An approval of one tool call names only that
  // call's tool: nothing to narrow (the card shows the call).
  const targetSets = TARGETS.flatMap((target) => {
    const names = approval[target.key];
    if (target.key === "tools" && approval.call) return [];
    return names && names.length > 0
      ? [{ ...target, set: checkSet(`${prefix}-${target.key}`, target.key, target.legend, names) }]
      : [];
  });
  const form = /** @type {HTMLFormElement} */ (
    el(
      "form",
      { class: "approve-form", novalidate: true, "aria-label": `Approve ${revealText(approval.task)}` },
      scopeSet.node,
      ...targetSets.map((target) => target.set.node),
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

    const chosen = scopeSet.chosen();
    if (chosen.length === 0) {
      invalid(status, scopeSet.first(), "Choose at least one scope, or deny the request.");
      return;
    }
    /** @type {Record<string, unknown>} */
    const terms = {};
    if (chosen.length < requested.length) terms.scope = chosen.join(" ");

    // A narrowed list names at least one (the API refuses an empty one: no list means "all").
    for (const target of targetSets) {
      const names = target.set.chosen();
      if (names.length === 0) {
        invalid(status, target.set.first(), `Choose at least one ${target.noun}, or deny the request.`);
        return;
      }
      if (names.length < target.set.values.length) terms[target.key] = names;
    }

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
      announce(
        `Approved “${revealText(approval.task)}” for ${revealText(approval.client_id)} with ${revealText(chosen.join(" "))}.`,
      );
      byId("pending-title").focus();
      await refresh();
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
 * @param {() => Promise<void>} refresh called after the decision, to refresh the lists
 */
export function decisionForm(approval, prefix, action, refresh) {
  const id = `${prefix}-${action}-reason`;
  const label = action === "deny" ? "Deny" : "Revoke";
  const status = el("p", { class: "form-status", role: "status" });
  const input = /** @type {HTMLInputElement} */ (
    el("input", { id, name: "reason", type: "text", maxlength: 500, autocomplete: "off" })
  );
  const form = /** @type {HTMLFormElement} */ (
    el(
      "form",
      {
        class: `decision ${action}-form`,
        novalidate: true,
        "aria-label": `${label} ${revealText(approval.task)}`,
      },
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
          ? `Denied “${revealText(approval.task)}” from ${revealText(approval.client_id)}.`
          : `Revoked “${revealText(approval.task)}”: ${revealText(approval.client_id)} gets no more tokens and gateways refuse its tokens.`,
      );
      byId(action === "deny" ? "pending-title" : "approved-title").focus();
      await refresh();
    } catch (error) {
      status.textContent = `Not ${action === "deny" ? "denied" : "revoked"}: ${describe(error)}`;
      await handleAuthError(error);
    } finally {
      setBusy(form, false);
    }
  });
  return form;
}
