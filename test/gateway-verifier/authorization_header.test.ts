import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAuthorization } from "../../gateway-verifier/src/authorization_header.js";

/** The `Authorization` header on its own (RFC 6750 §2.1, RFC 9449 §7.1): the token, its scheme, or why not. */

const MAX = 16;

test("Authorization: the token and scheme, or the refusal with the scheme to challenge", () => {
  const cases: [string | undefined, unknown][] = [
    ["Bearer abc.def.ghi", { token: "abc.def.ghi", dpop: false }],
    ["bearer abc", { token: "abc", dpop: false }],
    ["BEARER abc", { token: "abc", dpop: false }],
    ["DPoP abc", { token: "abc", dpop: true }],
    ["dpop abc", { token: "abc", dpop: true }],
    ["Bearer  abc ", { token: "abc", dpop: false }],
    [undefined, { reason: "missing_token", scheme: "Bearer" }],
    ["", { reason: "missing_token", scheme: "Bearer" }],
    ["Basic YTpi", { reason: "missing_token", scheme: "Bearer" }],
    ["Bearerabc", { reason: "missing_token", scheme: "Bearer" }],
    ["Bearer", { reason: "malformed_authorization", scheme: "Bearer" }],
    ["DPoP", { reason: "malformed_authorization", scheme: "Bearer" }],
    ["Bearer    ", { reason: "malformed_authorization", scheme: "Bearer" }],
    ["DPoP   ", { reason: "malformed_authorization", scheme: "DPoP" }],
    // The token at most MAX characters; the whole header at most MAX + 64, checked before anything else.
    [`Bearer ${"a".repeat(MAX)}`, { token: "a".repeat(MAX), dpop: false }],
    [`Bearer ${"a".repeat(MAX + 1)}`, { reason: "token_too_large", scheme: "Bearer" }],
    [`DPoP ${"a".repeat(MAX + 1)}`, { reason: "token_too_large", scheme: "DPoP" }],
    [`DPoP ${"a".repeat(MAX + 60)}`, { reason: "token_too_large", scheme: "Bearer" }],
    [`Basic ${"a".repeat(MAX + 60)}`, { reason: "token_too_large", scheme: "Bearer" }],
  ];
  for (const [header, expected] of cases) {
    assert.deepEqual({ ...parseAuthorization(header, MAX) }, expected, JSON.stringify(header));
  }
});
