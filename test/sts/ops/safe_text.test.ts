import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger } from "../../../sts/src/ops/logger.js";
import { safeJsonText, safeText } from "../../../sts/src/ops/safe_text.js";
import { LogCapture } from "../../helpers/app.js";

/** A task an agent could write to rewrite what an operator reads: every kind of unsafe character. */
const HOSTILE =
  "reconcile\x1b[2K\r scope: read-only\n\x1b[1A\x1b[2K\ttokens: 1\x07\x08\x7f\x85\x9b2K" +
  "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069 end\\x1b" +
  // Characters that hide a word: zero-width space and joiner, soft hyphen, BOM, a tag character.
  "de\u200ble\u200dte\u00ad\ufeff\u{e0041}";

/**
 * Every code point that acts on a terminal, reorders text or hides in it: C0, DEL, C1, the format
 * characters (bidi controls, zero-width characters, soft hyphen, BOM, tags), U+2028/9 and the other
 * default-ignorable code points, except the variation selectors U+FE00–U+FE0F. Written out by hand
 * where Unicode's tables are small enough to check against.
 */
function isUnsafe(codePoint: number): boolean {
  const character = String.fromCodePoint(codePoint);
  if (codePoint >= 0xfe00 && codePoint <= 0xfe0f) return false;
  return (
    codePoint < 0x20 ||
    (codePoint >= 0x7f && codePoint <= 0x9f) ||
    [0x00ad, 0x061c, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x2028, 0x2029, 0x2060, 0xfeff].includes(
      codePoint,
    ) ||
    (codePoint >= 0x202a && codePoint <= 0x202e) ||
    (codePoint >= 0x2066 && codePoint <= 0x2069) ||
    (codePoint >= 0xe0000 && codePoint <= 0xe0fff) ||
    /[\p{Cf}\p{Default_Ignorable_Code_Point}]/u.test(character)
  );
}

describe("safeText", () => {
  test("makes every control, C1, format, default-ignorable character and line separator visible, and nothing else", () => {
    assert.equal(
      safeText(HOSTILE),
      String.raw`reconcile\x1b[2K\r scope: read-only\n\x1b[1A\x1b[2K\ttokens: 1\x07\x08\x7f\x85\x9b2K` +
        String.raw`\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069 end\x1b` +
        String.raw`de\u200ble\u200dte\xad\ufeff\udb40\udc41`,
    );
    for (let codePoint = 0; codePoint <= 0x10ffff; codePoint++) {
      if (codePoint >= 0xd800 && codePoint <= 0xdfff) continue;
      const character = String.fromCodePoint(codePoint);
      const shown = safeText(character);
      if (isUnsafe(codePoint)) {
        assert.notEqual(shown, character, `U+${codePoint.toString(16)}`);
        assert.match(shown, /^\\(t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4}|u[0-9a-f]{4}\\u[0-9a-f]{4})$/);
      } else {
        assert.equal(shown, character, `U+${codePoint.toString(16)}`);
      }
    }
    assert.equal(safeText("tâche 任务 🚀 ❤\ufe0f \\ ok"), "tâche 任务 🚀 ❤\ufe0f \\ ok");
  });

  test("safeJsonText escapes what JSON.stringify leaves raw, and the JSON keeps its value", () => {
    const json = safeJsonText(JSON.stringify({ task: HOSTILE }));
    assert.deepEqual(
      [...json].filter((c) => isUnsafe(c.codePointAt(0) ?? 0)),
      [],
    );
    assert.deepEqual(JSON.parse(json), { task: HOSTILE });
  });
});

describe("the STS logger", () => {
  test("a log line holding agent text has no raw ESC, CR, C1 or bidi control and parses back to the text", () => {
    const capture = new LogCapture();
    const logger = createLogger("info", capture);
    logger.info({ task: HOSTILE, subject: "bob\u202eecila" }, "approval requested");
    assert.equal(capture.lines.length, 1);
    const line = capture.lines[0] ?? "";
    const raw = Buffer.from(line, "utf8");
    assert.equal(raw.includes(0x1b), false, "no ESC byte");
    assert.equal(raw.includes(0x0d), false, "no CR byte");
    assert.equal(raw.includes(Buffer.from("\u202e")), false, "no RLO");
    assert.equal(raw.includes(Buffer.from("\x9b")), false, "no C1 CSI");
    assert.deepEqual(
      [...line].filter((c) => isUnsafe(c.codePointAt(0) ?? 0)),
      [],
    );
    assert.ok(line.includes(String.raw`"subject":"bob\u202eecila"`), line);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.equal(parsed.task, HOSTILE);
    assert.equal(parsed.subject, "bob\u202eecila");
    assert.equal(parsed.msg, "approval requested");
  });
});
