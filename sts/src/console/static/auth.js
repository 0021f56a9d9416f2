// Signing in and out. A token is tried with one call to the approval API before it is kept (in
// sessionStorage, see api.js); a 401 from any later call ends the session.

import * as api from "./api.js";
import { byId, describe, ui } from "./page.js";
import { beginSession, endSession } from "./state.js";

/** @param {string} token */
function signedInAs(token) {
  const claims = api.peekClaims(token);
  const sub = claims && typeof claims.sub === "string" ? claims.sub : "unknown approver";
  const iss = claims && typeof claims.iss === "string" ? claims.iss : "";
  ui.who.textContent = sub;
  ui.who.title = iss ? `issuer ${iss}` : "";
}

/**
 * Starts a session for `token`: shows who is signed in and the (empty) workspace.
 * @param {string} token
 */
export function showWorkspace(token) {
  beginSession();
  signedInAs(token);
  ui.signIn.hidden = true;
  ui.session.hidden = false;
  ui.workspace.hidden = false;
  ui.token.value = "";
  const heading = byId("pending-title");
  heading.setAttribute("tabindex", "-1");
  heading.focus();
}

/**
 * Ends the session, forgets the token and shows the sign-in form with `reason`.
 * @param {string} [reason]
 */
export function signOut(reason) {
  endSession();
  api.forgetToken();
  ui.workspace.hidden = true;
  ui.session.hidden = true;
  ui.signIn.hidden = false;
  ui.signInError.textContent = reason ?? "";
  ui.token.focus();
}

/**
 * Signs out when `error` is the API's 401 (the token expired or was rejected).
 * @param {unknown} error
 * @returns {Promise<boolean>} whether it signed out
 */
export async function handleAuthError(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    signOut("Your session ended (the token expired or was rejected). Sign in again.");
    return true;
  }
  return false;
}

/**
 * Tries `token` against the API; keeps it and calls `onSignedIn` when the API accepts it.
 * @param {string} token
 * @param {(token: string) => void} onSignedIn
 */
async function signIn(token, onSignedIn) {
  ui.signInError.textContent = "";
  try {
    await api.call("GET", "approvals?status=pending&limit=1", { token });
  } catch (error) {
    ui.signInError.textContent = `Sign-in failed: ${describe(error)}`;
    return false;
  }
  api.storeToken(token);
  onSignedIn(token);
  return true;
}

/**
 * Wires the sign-in forms (a pasted token; a development approver in dev mode) and the sign-out
 * button. `onSignedIn` opens the workspace once the API accepted a token.
 * @param {(token: string) => void} onSignedIn
 */
export function setUpSignIn(onSignedIn) {
  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.token.value.trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      ui.signInError.textContent = "Paste an approver token first.";
      ui.token.focus();
      return;
    }
    void signIn(token, onSignedIn);
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
      await signIn(answer.access_token, onSignedIn);
    } catch (error) {
      ui.signInError.textContent = `Could not get a development token: ${describe(error)}`;
    }
  });

  ui.signOut.addEventListener("click", () => {
    signOut("Signed out.");
  });
}
