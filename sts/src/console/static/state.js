// The state of one signed-in session: the cards on the page, the approvals that closed while the
// page watched them, and the polling loop's flags. The session number, bumped on sign-in and
// sign-out, lets a poll still in flight from an earlier session see that its answer is stale.

/** @import { Approval } from "./api.js" */
/** @import { Card } from "./card.js" */

/** Cards on the page, by approval id. @type {Map<string, Card>} */
export const cards = new Map();

export const state = {
  /** Bumped on sign-in and sign-out so a poll in flight from an old session is ignored. */
  session: 0,
  /** The timer of the next poll. */
  pollTimer: 0,
  /** A poll is running. */
  polling: false,
  /** Another poll was asked for while one ran. */
  pollAgain: false,
  /** The next poll is the session's first: what it finds is not announced as new. */
  firstPoll: true,
  /**
   * Approvals that closed (denied, revoked, expired) while this page watched them, newest first.
   * @type {Approval[]}
   */
  closed: [],
};

/** Starts a session: polls of the previous one are ignored, the first poll announces nothing. */
export function beginSession() {
  state.session += 1;
  state.firstPoll = true;
}

/** Ends the session: polls in flight are ignored, polling stops, every card leaves the page. */
export function endSession() {
  state.session += 1;
  window.clearTimeout(state.pollTimer);
  state.polling = false;
  state.pollAgain = false;
  for (const card of cards.values()) card.root.remove();
  cards.clear();
  state.closed = [];
}
