// The page's fixed elements (index.html) and how the console speaks to the approver: polite
// announcements, alerts and error descriptions. All of it through textContent, never as HTML.

import * as api from "./api.js";

/**
 * The element with this id; throws when the page lacks it.
 * @param {string} id
 */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing #${id}`);
  return node;
}

/** The fixed elements of index.html. */
export const ui = {
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

/**
 * Says `message` through the polite live region.
 * @param {string} message
 */
export function announce(message) {
  // Clearing first makes screen readers announce a repeated message again.
  ui.announcer.textContent = "";
  window.setTimeout(() => {
    ui.announcer.textContent = message;
  }, 50);
}

/**
 * Says `message` through the assertive live region.
 * @param {string} message
 */
export function alertMessage(message) {
  ui.alerts.textContent = "";
  window.setTimeout(() => {
    ui.alerts.textContent = message;
  }, 50);
}

/**
 * An error as one line for the approver: the API's description, code and HTTP status.
 * @param {unknown} error
 */
export function describe(error) {
  if (error instanceof api.ApiError) {
    return error.status === 0 ? error.message : `${error.message} (${error.error}, HTTP ${error.status})`;
  }
  return error instanceof Error ? error.message : String(error);
}
