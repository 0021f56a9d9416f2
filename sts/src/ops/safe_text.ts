/**
 * Text a human reads in a terminal, made unable to deceive them. Agents write free text (an approval's
 * `task`, its `subject`, …) that the CLI prints and that may reach log lines; a control character in it
 * could move the cursor, erase or rewrite lines (ESC, CSI, CR, backspace, C1 controls), or reorder what
 * is displayed (Unicode bidi overrides and isolates, "Trojan Source", CVE-2021-42574).
 */

/**
 * Characters never printed raw: the controls (`\p{Cc}`: C0, DEL and the C1 controls U+0080–U+009F,
 * which terminals may act on), the bidi controls (`\p{Bidi_Control}`: the marks U+061C, U+200E,
 * U+200F, the embeddings and overrides U+202A–U+202E, the isolates U+2066–U+2069), and the line and
 * paragraph separators U+2028, U+2029.
 */
const UNSAFE = /[\p{Cc}\p{Bidi_Control}\u2028\u2029]/gu;

/** {@link UNSAFE} without the global flag (a global regex's `test` keeps state between calls). */
const UNSAFE_ONE = new RegExp(UNSAFE.source, "u");

/**
 * True when `text` holds a character {@link safeText} would escape (a control, a bidi control, U+2028
 * or U+2029): for names a human reads as identifiers (e.g. MCP tool names), which are refused rather
 * than escaped.
 */
export function hasUnsafeCharacter(text: string): boolean {
  return UNSAFE_ONE.test(text);
}

/** The characters of {@link UNSAFE} that `JSON.stringify` leaves raw (it escapes C0 itself). */
const UNSAFE_IN_JSON = /[\u007f-\u009f\p{Bidi_Control}\u2028\u2029]/gu;

const NAMED: Readonly<Record<string, string>> = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

function hex(character: string, digits: number): string {
  return character.charCodeAt(0).toString(16).padStart(digits, "0");
}

/**
 * `text` with every unsafe character made visible as an escape: `\t`, `\n`, `\r`, `\xHH` up to U+00FF
 * (e.g. `\x1b` for ESC), `\uHHHH` above (e.g. `\u202e`). Everything else, backslashes included, is
 * kept as is. For one field of plain-text output: the newlines the CLI writes between lines are its
 * own, never an agent's.
 */
export function safeText(text: string): string {
  return text.replace(
    UNSAFE,
    (character) =>
      NAMED[character] ??
      (character.charCodeAt(0) <= 0xff ? `\\x${hex(character, 2)}` : `\\u${hex(character, 4)}`),
  );
}

/**
 * JSON text (as `JSON.stringify` or pino writes it) with the unsafe characters it leaves raw written as
 * `\uHHHH` escapes. They can only occur inside strings, so the result is valid JSON with the same value.
 */
export function safeJsonText(json: string): string {
  return json.replace(UNSAFE_IN_JSON, (character) => `\\u${hex(character, 4)}`);
}
