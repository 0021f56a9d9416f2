import assert from "node:assert/strict";
import { test } from "node:test";
import { newJti } from "../../../sts/src/exchange/jti.js";

test("jti: 24 base64url characters, never repeated across many pool refills", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const jti = newJti();
    assert.match(jti, /^[A-Za-z0-9_-]{24}$/);
    seen.add(jti);
  }
  assert.equal(seen.size, 5000);
});
