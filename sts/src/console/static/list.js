// The approval lists and the polling loop: pending (one page, round by round: each agent's newest
// request, then each agent's second newest, ..., so no agent's flood hides another's request) and
// approved (one page, oldest first), and the approvals that closed while the page watched them.
// Cards are reused across polls, so a half-filled form survives a refresh.

import * as api from "./api.js";
import { handleAuthError } from "./auth.js";
import { createCard } from "./card.js";
import { alertMessage, announce, describe, ui } from "./page.js";
import { cards, state } from "./state.js";
import { formatTime, revealText } from "./view.js";

/** @import { Approval } from "./api.js" */
/** @import { ListKind } from "./card.js" */

/** How often the approval lists are refreshed, in milliseconds. */
const POLL_MS = 2000;
/** Most approvals shown per list (one page of the list API). */
const LIST_LIMIT = 200;
/** Most closed (denied, revoked, expired) approvals kept on the page. */
const CLOSED_LIMIT = 20;

/**
 * Puts the approvals of one list on the page, reusing cards (so a half-filled form survives a refresh).
 * @param {ListKind} kind
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
      card = createCard(approval, kind, poll);
      cards.set(approval.id, card);
      if (kind === "pending" && !state.firstPoll) {
        card.root.classList.add("arrived");
        announce(
          `New request from ${revealText(approval.client_id)}: “${revealText(approval.task)}” on ${revealText(approval.resource)}.`,
        );
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
    state.closed = [approval, ...state.closed.filter((other) => other.id !== approval.id)];
  }
  state.closed = state.closed.slice(0, CLOSED_LIMIT);
}

/**
 * One refresh: the pending and approved lists (one page each, in the API's order), then the final
 * state of whatever left them. Re-entrant calls while a refresh runs queue one more refresh.
 */
export async function poll() {
  if (state.polling) {
    state.pollAgain = true;
    return;
  }
  const mine = state.session;
  state.polling = true;
  window.clearTimeout(state.pollTimer);
  try {
    const [pending, approved] = await Promise.all([
      api.listApprovals("pending", LIST_LIMIT),
      api.listApprovals("approved", LIST_LIMIT),
    ]);
    if (mine !== state.session) return;
    const open = new Set([...pending.approvals, ...approved.approvals].map((approval) => approval.id));
    const left = [...cards.values()]
      .filter((card) => card.kind !== "closed" && !open.has(card.approval.id))
      .map((card) => card.approval.id);
    if (left.length > 0) await collectClosed(left);
    if (mine !== state.session) return;
    render("pending", pending.approvals);
    render("approved", approved.approvals);
    render("closed", state.closed);
    setMore("pending", pending.next_cursor !== null);
    setMore("approved", approved.next_cursor !== null);
    state.firstPoll = false;
    ui.pollStatus.textContent = `Live: checked for new requests at ${formatTime(new Date().toISOString())}`;
    ui.pollStatus.classList.remove("stale");
  } catch (error) {
    if (mine !== state.session) return;
    if (await handleAuthError(error)) return;
    ui.pollStatus.textContent = `Not updating: ${describe(error)}. Retrying…`;
    ui.pollStatus.classList.add("stale");
    alertMessage(`The console could not refresh: ${describe(error)}`);
  } finally {
    if (mine === state.session) {
      state.polling = false;
      if (!ui.workspace.hidden) {
        state.pollTimer = window.setTimeout(() => void poll(), state.pollAgain ? 0 : POLL_MS);
        state.pollAgain = false;
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
  const shown = kind === "pending" ? `${LIST_LIMIT}, each agent's newest first` : `the oldest ${LIST_LIMIT}`;
  target.more.textContent = more ? `Showing ${shown}; decide these to see more.` : "";
}
