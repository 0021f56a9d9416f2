// DOM building for the console. Every piece of data goes in through textContent or an attribute
// value, never through innerHTML: an approval's task is written by an agent and is untrusted.

/**
 * Creates an element. `attrs` keys are attribute names (`class`, `id`, `aria-*`, …); `false`,
 * `null` and `undefined` values are skipped, `true` sets an empty (boolean) attribute. String
 * children become text nodes.
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/**
 * @param {Node} node
 * @param {Array<Node | string | null | undefined | false>} children
 */
function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/**
 * Replaces all children of `node`.
 * @param {Node} node
 * @param {...(Node | string | null | undefined | false)} children
 */
export function replaceChildren(node, ...children) {
  while (node.firstChild) node.removeChild(node.firstChild);
  append(node, children);
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** @param {string} iso */
export function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
}

/**
 * "in 59 minutes", "2 minutes ago".
 * @param {string} iso
 * @param {number} [now]
 */
export function relativeTime(iso, now = Date.now()) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relativeFormat.format(seconds, "second");
  if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), "hour");
  return relativeFormat.format(Math.round(seconds / 86400), "day");
}

/**
 * "1 h 30 min", "45 s".
 * @param {number} seconds
 */
export function formatDuration(seconds) {
  const parts = [];
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (days) parts.push(`${days} d`);
  if (hours) parts.push(`${hours} h`);
  if (minutes) parts.push(`${minutes} min`);
  if (rest || parts.length === 0) parts.push(`${rest} s`);
  return parts.join(" ");
}

/** @param {string} scope */
export function scopesOf(scope) {
  return [...new Set(scope.split(" ").filter(Boolean))];
}

/** @param {{ per_second: number, burst: number } | null} limit */
export function formatRateLimit(limit) {
  return limit ? `${limit.per_second} per second, burst ${limit.burst}` : "none set by the agent";
}

/**
 * A `<time>` showing a local date and a relative hint.
 * @param {string} iso
 */
export function timeElement(iso) {
  return el("time", { datetime: iso }, `${formatTime(iso)} (${relativeTime(iso)})`);
}

/**
 * A list of scope chips.
 * @param {string[]} scopes
 * @param {string} label
 */
export function scopeList(scopes, label) {
  return el(
    "ul",
    { class: "scopes", "aria-label": label },
    // Spaces between the items, so copied or read-out text keeps scopes apart.
    ...scopes.flatMap((scope, index) => [index > 0 ? " " : null, el("li", { class: "scope" }, scope)]),
  );
}

/**
 * One `<dt>`/`<dd>` pair.
 * @param {string} term
 * @param {...(Node | string | null | undefined | false)} details
 */
export function fact(term, ...details) {
  const fragment = document.createDocumentFragment();
  fragment.appendChild(el("dt", {}, term));
  fragment.appendChild(el("dd", {}, ...details));
  return fragment;
}

/**
 * A labelled number input with a hint.
 * @param {{ id: string, label: string, value: string, min?: number, max?: number, step?: string, hint?: string }} options
 */
export function numberField({ id, label, value, min, max, step, hint }) {
  const hintId = hint ? `${id}-hint` : undefined;
  return el(
    "div",
    { class: "field" },
    el("label", { for: id }, label),
    el("input", {
      id,
      name: id,
      type: "number",
      inputmode: "decimal",
      value,
      min,
      max,
      step: step ?? "1",
      "aria-describedby": hintId,
    }),
    hint ? el("p", { id: hintId, class: "hint" }, hint) : null,
  );
}

/**
 * The audit trail as a table.
 * @param {Array<{ at: string, event: string, outcome: string, reason: string | null, actor: string | null }>} events
 * @param {boolean} truncated
 */
export function auditTable(events, truncated) {
  if (events.length === 0) return el("p", { class: "empty" }, "No audit events yet.");
  const rows = events.map((event) =>
    el(
      "tr",
      { class: `outcome-${event.outcome}` },
      el("td", {}, el("time", { datetime: event.at }, formatTime(event.at))),
      el("td", {}, event.event),
      el("td", {}, el("span", { class: `outcome outcome-${event.outcome}` }, event.outcome)),
      el("td", {}, event.reason ?? "—"),
      el("td", {}, event.actor ?? "—"),
    ),
  );
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "audit" },
      el("caption", {}, truncated ? "Audit trail (latest events only)" : "Audit trail"),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["Time", "Event", "Outcome", "Reason", "Actor"].map((name) => el("th", { scope: "col" }, name)),
        ),
      ),
      el("tbody", {}, ...rows),
    ),
  );
}
