// The approval console: sign in, watch requests arrive (polling), approve with narrowing, deny,
// revoke, read an approval's audit trail. Plain ES modules loaded by the browser, no build step:
//   api.js     the approval API and the token in sessionStorage
//   view.js    DOM building: data goes in as text, never as HTML
//   page.js    the page's fixed elements, announcements, error text
//   state.js   the session's cards, closed approvals and polling flags
//   auth.js    sign-in, sign-out, the end of a session on a 401
//   decide.js  the approve, deny and revoke forms
//   card.js    one approval as a card: facts, forms, audit trail
//   list.js    the lists and the polling loop
// This module starts the page.

import * as api from "./api.js";
import { setUpSignIn, showWorkspace } from "./auth.js";
import { poll } from "./list.js";
import { ui } from "./page.js";

/**
 * Opens the workspace for a signed-in approver and starts polling.
 * @param {string} token
 */
function openWorkspace(token) {
  showWorkspace(token);
  void poll();
}

setUpSignIn(openWorkspace);

const devMode =
  document.querySelector('meta[name="countersign-dev-mode"]')?.getAttribute("content") === "true";
ui.devForm.hidden = !devMode;
const saved = api.storedToken();
if (saved) openWorkspace(saved);
