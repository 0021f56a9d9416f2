// DOM building for the console. Every piece of data goes in through textContent or an attribute
// value, never through innerHTML: an approval's task is written by an agent and is untrusted. Text an
// agent wrote is also shown as it is stored: each field is its own bidi isolate, and the characters an
// approver could not see (or that would reorder what they see) appear as visible ⟨U+XXXX⟩ markers.

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

/**
 * The characters shown as markers: the controls (Cc: C0, DEL, C1), the format characters (Cf: the bidi
 * embeddings, overrides, isolates and marks, zero-width space and joiners, word joiner, BOM, soft
 * hyphen, tag characters), the line and paragraph separators (Zl, Zp), and the other default-ignorable
 * code points (e.g. Hangul fillers, the combining grapheme joiner, the supplementary variation
 * selectors). An agent can hide words with them, or make text read in another order than it is
 * stored ("Trojan Source", CVE-2021-42574).
 */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]/gu;

/**
 * The variation selectors U+FE00–U+FE0F are default-ignorable but left as they are: they choose a
 * glyph's presentation (text or emoji, e.g. U+FE0F) and move or hide nothing.
 */
const PRESENTATION = /^[\uFE00-\uFE0F]$/u;

/**
 * "U+202E" for a one-code-point string.
 * @param {string} character
 */
function codePointLabel(character) {
  return `U+${(character.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * `text` with each hidden character ({@link HIDDEN}) written as `⟨U+XXXX⟩`: for text the console puts
 * into an attribute (an `aria-label`) or a sentence it announces. What is stored is unchanged.
 * @param {string} text
 */
export function revealText(text) {
  return text.replace(HIDDEN, (character) =>
    PRESENTATION.test(character) ? character : `⟨${codePointLabel(character)}⟩`,
  );
}

/**
 * `text` as nodes: its visible runs as text, and each hidden character ({@link HIDDEN}) as a marker
 * element `⟨U+XXXX⟩` styled apart (`.hidden-char`), left-to-right and isolated, so that it reads the
 * same in any surrounding direction and takes no part in the direction of the text around it.
 * @param {string} text
 * @returns {Array<Node | string>}
 */
export function revealNodes(text) {
  /** @type {Array<Node | string>} */
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(HIDDEN)) {
    const character = match[0];
    if (PRESENTATION.test(character)) continue;
    if (match.index > last) nodes.push(text.slice(last, match.index));
    const label = codePointLabel(character);
    nodes.push(
      el(
        "span",
        { class: "hidden-char", dir: "ltr", title: `${label}: an invisible or direction-changing character` },
        `⟨${label}⟩`,
      ),
    );
    last = match.index + character.length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

/**
 * An element holding text an agent wrote (or any text the console does not control): its own bidi
 * isolate whose direction comes from the text itself (`dir="auto"`, `.agent-text` sets
 * `unicode-bidi: isolate`), so it cannot reorder the page around it, with its hidden characters shown
 * ({@link revealNodes}).
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} attrs
 * @param {string} text
 */
export function agentText(tag, attrs, text) {
  const classes = attrs.class ? `${attrs.class} agent-text` : "agent-text";
  return el(tag, { ...attrs, class: classes, dir: "auto" }, ...revealNodes(text));
}

/**
 * A JSON value (as `JSON.parse` gives it) laid out exactly as `JSON.stringify(value, null, 2)` writes
 * it: the braces, commas and indents are the console's, left to right; each string, key or value, is
 * an {@link agentText} isolate, so a right-to-left string cannot make a key and a value trade places.
 * @param {unknown} value
 * @param {string} [indent]
 * @returns {Array<Node | string>}
 */
export function jsonNodes(value, indent = "") {
  if (typeof value === "string") return [agentText("span", { class: "json-string" }, JSON.stringify(value))];
  if (value === null || typeof value !== "object") return [String(JSON.stringify(value))];
  const inner = `${indent}  `;
  const entries = Array.isArray(value)
    ? value.map((item) => /** @type {[string | null, unknown]} */ ([null, item]))
    : Object.entries(value);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  if (entries.length === 0) return [`${open}${close}`];
  /** @type {Array<Node | string>} */
  const nodes = [`${open}\n`];
  entries.forEach(([key, item], index) => {
    nodes.push(inner);
    if (key !== null) nodes.push(agentText("span", { class: "json-string" }, JSON.stringify(key)), ": ");
    nodes.push(...jsonNodes(item, inner), index < entries.length - 1 ? ",\n" : "\n");
  });
  nodes.push(`${indent}${close}`);
  return nodes;
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
 * A list of chips: scopes, or the MCP names an approval is limited to; each an {@link agentText}.
 * @param {string[]} scopes
 * @param {string} label
 */
export function scopeList(scopes, label) {
  return el(
    "ul",
    { class: "scopes", "aria-label": label },
    // Spaces between the items, so copied or read-out text keeps scopes apart.
    ...scopes.flatMap((scope, index) => [index > 0 ? " " : null, agentText("li", { class: "scope" }, scope)]),
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
      el("td", {}, event.actor === null ? "—" : agentText("span", {}, event.actor)),
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
