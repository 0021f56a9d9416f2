/**
 * Text a human reads in a terminal, made unable to deceive them. Agents write free text (an approval's
 * `task`, its `subject`, …) that the CLI prints and that may reach log lines; a control character in it
 * could move the cursor, erase or rewrite lines (ESC, CSI, CR, backspace, C1 controls), or reorder what
 * is displayed (Unicode bidi overrides and isolates, "Trojan Source", CVE-2021-42574).
 */

/**
 * Characters never printed raw: the controls (`\p{Cc}`: C0, DEL and the C1 controls U+0080–U+009F,
 * which terminals may act on), the format characters (`\p{Cf}`: the bidi marks, embeddings, overrides
 * and isolates, zero-width space and joiners, word joiner, BOM, soft hyphen, tag characters), the line
 * and paragraph separators U+2028, U+2029, and the other default-ignorable code points (e.g. Hangul
 * fillers, the combining grapheme joiner): what can reorder the text or hide a word in it. The same set
 * the approval console shows as markers (console/static/view.js), except the variation selectors
 * U+FE00–U+FE0F, which only choose a glyph's presentation and are kept.
 */
const UNSAFE = /(?![\uFE00-\uFE0F])[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]/gu;

/** {@link UNSAFE} without the global flag (a global regex's `test` keeps state between calls). */
const UNSAFE_ONE = new RegExp(UNSAFE.source, "u");

/**
 * True when `text` holds a character {@link safeText} would escape (a control, a format or other
 * invisible character, U+2028 or U+2029): for names a human reads as identifiers (e.g. MCP tool names), which are refused rather
 * than escaped.
 */
export function hasUnsafeCharacter(text: string): boolean {
  return UNSAFE_ONE.test(text);
}

const NAMED: Readonly<Record<string, string>> = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

function hex(unit: number, digits: number): string {
  return unit.toString(16).padStart(digits, "0");
}

/** `\uHHHH` for each UTF-16 unit of `character` (a surrogate pair for one beyond U+FFFF, as JSON writes it). */
function unitEscapes(character: string): string {
  let escaped = "";
  for (let i = 0; i < character.length; i++) escaped += `\\u${hex(character.charCodeAt(i), 4)}`;
  return escaped;
}

/**
 * `text` with every unsafe character made visible as an escape: `\t`, `\n`, `\r`, `\xHH` up to U+00FF
 * (e.g. `\x1b` for ESC), `\uHHHH` above (e.g. `\u202e`; a pair of them beyond U+FFFF). Everything else, backslashes included, is
 * kept as is. For one field of plain-text output: the newlines the CLI writes between lines are its
 * own, never an agent's.
 */
export function safeText(text: string): string {
  return text.replace(
    UNSAFE,
    (character) =>
      NAMED[character] ??
      (character.charCodeAt(0) <= 0xff ? `\\x${hex(character.charCodeAt(0), 2)}` : unitEscapes(character)),
  );
}

/**
 * JSON text (as `JSON.stringify` or pino writes it) with the unsafe characters it leaves raw written as
 * `\uHHHH` escapes. They can only occur inside strings, so the result is valid JSON with the same value.
 */
export function safeJsonText(json: string): string {
  // C0 never occurs raw in JSON (JSON.stringify escapes it); everything else of UNSAFE may.
  return json.replace(UNSAFE, (character) =>
    character.charCodeAt(0) < 0x20 ? character : unitEscapes(character),
  );
}
