import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { REFERENCE, regenerate } from "../../scripts/docs.js";
import { REASONS } from "../../sts/src/reasons.js";

describe("docs/reference.md", () => {
  test("its reason-code table is exactly sts/src/reasons.ts (run `npm run docs` after changing codes)", () => {
    const text = readFileSync(REFERENCE, "utf8");
    assert.equal(text, regenerate(text));
    for (const reason of Object.keys(REASONS)) assert.ok(text.includes(`| \`${reason}\` |`), reason);
  });
});
