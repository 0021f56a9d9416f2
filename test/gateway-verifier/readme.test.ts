import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { REASONS } from "../../gateway-verifier/src/index.js";

test("the README's reason table lists exactly the reason codes, statuses and errors", () => {
  const readme = readFileSync(new URL("../../gateway-verifier/README.md", import.meta.url), "utf8");
  const rows = [...readme.matchAll(/^\| `(\w+)`\s*\| (\d{3})\s*\| `(\w+)`\s*\|/gm)].map((m) => [
    m[1],
    Number(m[2]),
    m[3],
  ]);
  const expected = Object.entries(REASONS).map(([reason, { status, error }]) => [reason, status, error]);
  assert.deepEqual(rows, expected);
});
