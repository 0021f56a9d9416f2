import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ClaimsCheckOptions,
  createClaimsCheck,
  effectiveRateLimit,
} from "../../gateway-verifier/src/access_token_claims.js";
import { AUDIENCE, accessTokenClaims, ISSUER, NOW, NOW_MS } from "./helpers.js";

/**
 * The claims check on its own: no HTTP, no signature, a frozen clock (`NOW_MS`). It runs only on a
 * claims set whose signature has verified (jws_verify), so these claims are what the STS signed.
 */

const OPTIONS: ClaimsCheckOptions = {
  issuer: ISSUER,
  audiences: [AUDIENCE],
  toleranceMs: 5_000,
  maxAgeMs: 300_000,
  maxActDepth: 5,
  gatewayLimit: undefined,
};
const check = createClaimsCheck(OPTIONS);
const reasonOf = (claims: Record<string, unknown>, nowMs = NOW_MS, options = OPTIONS) => {
  const outcome = createClaimsCheck(options)(claims, nowMs);
  return typeof outcome === "string" ? outcome : "ok";
};

describe("access token claims check (RFC 9068 §4), frozen clock", () => {
  test("a valid claims set yields the verified token: identity, scopes, binding, deadline, bucket", () => {
    const claims = accessTokenClaims(NOW, {
      scope: "crm:read  crm:write ",
      cnf: { jkt: "thumbprint" },
      rate_limit: { per_second: 2, burst: 3.7 },
    });
    const verified = check(claims, NOW_MS);
    assert.notEqual(typeof verified, "string");
    if (typeof verified === "string") return;
    assert.deepEqual(verified, {
      // min(exp, iat + maxAge) + tolerance: exp is iat + 300 s, maxAge 300 s.
      deadlineMs: NOW_MS + 300_000 + 5_000,
      success: {
        ok: true,
        claims,
        clientId: "billing-agent",
        approvalId: "appr_123",
        subject: "alice",
        scopes: ["crm:read", "crm:write"],
      },
      scopes: ["crm:read", "crm:write"],
      approvalId: "appr_123",
      jkt: "thumbprint",
      rateKey: "13:billing-agentappr_123",
      rateLimit: { perSecond: 2, burst: 3 },
    });
  });

  test("the deadline is iat + maxTokenAge when exp is later", () => {
    const verified = check(accessTokenClaims(NOW, { exp: NOW + 3_600 }), NOW_MS);
    assert.equal(typeof verified === "string" ? verified : verified.deadlineMs, NOW_MS + 305_000);
  });

  test("the checks run in the documented order: each fault is reported only once the earlier ones are fixed", () => {
    // Every claim wrong at once; fixing them one by one walks the order.
    const faults: [string, Record<string, unknown>, string][] = [
      ["iss", { iss: "https://evil.example" }, "invalid_issuer"],
      ["aud", { aud: "https://billing.example.test" }, "invalid_audience"],
      ["exp", { exp: NOW - 10 }, "token_expired"],
      ["nbf", { nbf: NOW + 60 }, "token_not_yet_valid"],
      ["iat", { iat: NOW + 60 }, "iat_in_future"],
      ["approval_id", { approval_id: undefined }, "missing_approval_id"],
      ["sub", { sub: "" }, "missing_claim"],
      ["act", { act: { sub: 7 } }, "invalid_act"],
      ["scope", { scope: ["crm:read"] }, "invalid_claim"],
    ];
    const seen: string[] = [];
    for (let fixed = 0; fixed < faults.length; fixed++) {
      let claims: Record<string, unknown> = accessTokenClaims(NOW);
      for (const [, fault] of faults.slice(fixed)) claims = { ...claims, ...fault };
      seen.push(reasonOf(claims));
    }
    assert.deepEqual(
      seen,
      faults.map(([, , reason]) => reason),
    );
  });

  test("exp, nbf and iat are judged to the millisecond with the clock tolerance", () => {
    const at = (claims: Record<string, unknown>, nowMs: number) =>
      reasonOf(accessTokenClaims(NOW, claims), nowMs);
    // exp: valid until exp + tolerance (exclusive).
    assert.equal(at({ exp: NOW + 10 }, NOW_MS + 15_000 - 1), "ok");
    assert.equal(at({ exp: NOW + 10 }, NOW_MS + 15_000), "token_expired");
    // nbf: up to tolerance in the future; NumericDate may be fractional (RFC 7519 §2).
    assert.equal(at({ nbf: NOW + 5 }, NOW_MS), "ok");
    assert.equal(at({ nbf: NOW + 5.001 }, NOW_MS), "token_not_yet_valid");
    // iat: likewise in the future, and at most maxAge + tolerance in the past (staleness).
    assert.equal(at({ iat: NOW + 5, exp: NOW + 60 }, NOW_MS), "ok");
    assert.equal(at({ iat: NOW + 5.001, exp: NOW + 60 }, NOW_MS), "iat_in_future");
    assert.equal(at({ iat: NOW - 305, exp: NOW + 60 }, NOW_MS), "ok");
    assert.equal(at({ iat: NOW - 305.001, exp: NOW + 60 }, NOW_MS), "token_stale");
  });

  test("claims of the wrong type are refused, never coerced", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ exp: String(NOW + 60) }, "missing_claim"],
      [{ exp: Number.POSITIVE_INFINITY }, "missing_claim"],
      [{ iat: undefined }, "missing_claim"],
      [{ nbf: "0" }, "invalid_claim"],
      [{ client_id: 42 }, "missing_claim"],
      [{ approval_id: "" }, "missing_approval_id"],
      [{ approval_id: "a".repeat(513) }, "missing_approval_id"],
      [{ act: "spiffe://agent" }, "invalid_act"],
      [{ act: [{ sub: "agent" }] }, "invalid_act"],
      [{ act: { sub: "agent", act: null } }, "invalid_act"],
      [{ scope: 1 }, "invalid_claim"],
      [{ rate_limit: "5/s" }, "invalid_claim"],
      [{ rate_limit: { per_second: 0, burst: 1 } }, "invalid_claim"],
      [{ rate_limit: { per_second: 1, burst: 0.5 } }, "invalid_claim"],
      [{ rate_limit: { per_second: Number.NaN, burst: 1 } }, "invalid_claim"],
    ];
    for (const [claims, reason] of cases) {
      assert.equal(reasonOf(accessTokenClaims(NOW, claims)), reason, JSON.stringify(claims));
    }
  });

  test("aud: one of ours in an array of at most 64 entries", () => {
    const others = Array.from({ length: 63 }, (_, i) => `https://other-${i}.example.test`);
    assert.equal(reasonOf(accessTokenClaims(NOW, { aud: [...others, AUDIENCE] })), "ok");
    assert.equal(reasonOf(accessTokenClaims(NOW, { aud: [...others, "x", AUDIENCE] })), "invalid_audience");
    assert.equal(reasonOf(accessTokenClaims(NOW, { aud: [] })), "invalid_audience");
    assert.equal(reasonOf(accessTokenClaims(NOW, { aud: { 0: AUDIENCE } })), "invalid_audience");
    const two = { ...OPTIONS, audiences: [AUDIENCE, "https://crm-eu.example.test"] };
    assert.equal(reasonOf(accessTokenClaims(NOW, { aud: "https://crm-eu.example.test" }), NOW_MS, two), "ok");
  });

  test("act depth: maxActDepth levels pass, one more is act_too_deep; 0 forbids act", () => {
    const nested = (depth: number) => {
      let act: Record<string, unknown> | undefined;
      for (let i = depth; i > 0; i--) act = act === undefined ? { sub: `a${i}` } : { sub: `a${i}`, act };
      return act;
    };
    const depth = (maxActDepth: number, levels: number) =>
      reasonOf(accessTokenClaims(NOW, { act: nested(levels) }), NOW_MS, { ...OPTIONS, maxActDepth });
    assert.deepEqual(
      [depth(5, 5), depth(5, 6), depth(0, 1), depth(0, 0)],
      ["ok", "act_too_deep", "act_too_deep", "ok"],
    );
  });

  test("cnf: only a non-empty jkt alone (RFC 9449 §6); any other confirmation method fails closed", () => {
    for (const cnf of [
      {},
      { jkt: "" },
      { jkt: 1 },
      { jkt: "t", "x5t#S256": "c" },
      { "x5t#S256": "c" },
      "t",
      null,
    ]) {
      assert.equal(reasonOf(accessTokenClaims(NOW, { cnf })), "invalid_claim", JSON.stringify(cnf));
    }
  });
});

describe("effective rate limit: the tighter of the token's and the gateway's, field by field", () => {
  test("every combination", () => {
    const token = { perSecond: 2, burst: 10 };
    assert.deepEqual(
      [
        effectiveRateLimit(token, undefined),
        effectiveRateLimit(undefined, undefined),
        effectiveRateLimit(token, false),
        effectiveRateLimit(undefined, { perSecond: 5, burst: 5 }),
        effectiveRateLimit(token, { perSecond: 1, burst: 5 }),
        effectiveRateLimit(token, { perSecond: 5, burst: 20 }),
        effectiveRateLimit(token, { perSecond: 1, burst: 20 }),
        effectiveRateLimit(token, { perSecond: 5, burst: 5 }),
      ],
      [
        { perSecond: 2, burst: 10 },
        undefined,
        undefined,
        { perSecond: 5, burst: 5 },
        { perSecond: 1, burst: 5 },
        { perSecond: 2, burst: 10 },
        { perSecond: 1, burst: 10 },
        { perSecond: 2, burst: 5 },
      ],
    );
  });
});
