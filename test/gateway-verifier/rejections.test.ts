import assert from "node:assert/strict";
import { createHmac, createPublicKey, sign } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { Verifier, VerifyResult } from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  accessTokenClaims,
  b64url,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  rawToken,
  type SigningKey,
  startFakeSts,
} from "./helpers.js";

type Sts = Awaited<ReturnType<typeof startFakeSts>>;

function assertRefused(
  result: VerifyResult,
  expected: { status: number; error: string; reason: string },
): asserts result is Extract<VerifyResult, { ok: false }> {
  assert.equal(result.ok, false, `expected a refusal (${expected.reason}), got success`);
  assert.deepEqual(
    { status: result.status, error: result.error, reason: result.reason },
    { status: expected.status, error: expected.error, reason: expected.reason },
  );
}

const invalidToken = (reason: string) => ({ status: 401, error: "invalid_token", reason });

describe("gateway verifier: every rejection has its exact status, error and reason", () => {
  let sts: Sts;
  let key: SigningKey;
  let verifier: Verifier;

  before(async () => {
    key = await generateSigningKey("key-1");
    sts = await startFakeSts([key.publicJwk]);
    verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      jwksOptions: { cooldownMs: 20 },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 20 },
      now: () => NOW_MS,
    });
    await verifier.ready();
  });

  after(async () => {
    verifier.close();
    await sts.close();
  });

  const verify = (token: string, requiredScopes: string[] = ["crm:read"]) =>
    verifier.verify({
      authorization: `Bearer ${token}`,
      method: "GET",
      url: `${AUDIENCE}/contacts`,
      requiredScopes,
    });

  test("a valid token is accepted with its identity", async () => {
    const result = await verify(await mintToken(key));
    assert.equal(result.ok, true);
    assert.ok(result.ok);
    assert.equal(result.clientId, "billing-agent");
    assert.equal(result.approvalId, "appr_123");
    assert.equal(result.subject, "alice");
    assert.deepEqual(result.scopes, ["crm:read", "crm:write"]);
  });

  test("no Authorization header: 401 with a bare challenge (RFC 6750 §3.1)", async () => {
    const result = await verifier.verify({ method: "GET", url: `${AUDIENCE}/contacts` });
    assertRefused(result, invalidToken("missing_token"));
    assert.equal(
      result.headers["WWW-Authenticate"],
      `Bearer, DPoP algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"`,
    );
    const basic = await verifier.verify({ authorization: "Basic YTpi" });
    assertRefused(basic, invalidToken("missing_token"));
  });

  for (const alg of ["none", "NONE", "None", "nOnE"]) {
    test(`alg "${alg}" is refused (empty and non-empty signature)`, async () => {
      const claims = accessTokenClaims();
      const unsigned = `${b64url({ alg, typ: "at+jwt", kid: key.kid })}.${b64url(claims)}.`;
      assertRefused(await verify(unsigned), invalidToken("alg_not_allowed"));
      const withSig = rawToken({ alg, typ: "at+jwt", kid: key.kid }, claims, key);
      assertRefused(await verify(withSig), invalidToken("alg_not_allowed"));
    });
  }

  test("HS256 signed with the public key's bytes is refused, and HMAC cannot be configured", async () => {
    const input = `${b64url({ alg: "HS256", typ: "at+jwt", kid: key.kid })}.${b64url(accessTokenClaims())}`;
    const pem = createPublicKey({ key: key.publicJwk as import("node:crypto").JsonWebKey, format: "jwk" })
      .export({ type: "spki", format: "pem" })
      .toString();
    for (const secret of [pem, JSON.stringify(key.publicJwk)]) {
      const mac = createHmac("sha256", secret).update(input).digest("base64url");
      assertRefused(await verify(`${input}.${mac}`), invalidToken("alg_not_allowed"));
    }
    assert.throws(
      () =>
        createVerifier({
          issuer: ISSUER,
          audience: AUDIENCE,
          jwks: { keys: [] },
          algorithms: ["HS256" as "ES256"],
        }),
      { name: "TypeError", message: /algorithms: HS256 is not allowed/ },
    );
  });

  test("an embedded jwk header is refused even when it signed the token", async () => {
    const attacker = await generateSigningKey("attacker");
    const token = rawToken(
      { alg: "ES256", typ: "at+jwt", kid: key.kid, jwk: attacker.publicJwk },
      accessTokenClaims(),
      attacker,
    );
    assertRefused(await verify(token), invalidToken("forbidden_header"));
  });

  test("jku, x5u and x5c headers are refused and never fetched", async () => {
    const attacker = await generateSigningKey("attacker");
    const before = sts.requests.length;
    for (const header of [
      { jku: `${sts.url}/attacker-jwks` },
      { x5u: `${sts.url}/attacker-cert` },
      { x5c: ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"] },
    ]) {
      const token = rawToken(
        { alg: "ES256", typ: "at+jwt", kid: "attacker", ...header },
        accessTokenClaims(),
        attacker,
      );
      assertRefused(await verify(token), invalidToken("forbidden_header"));
    }
    await new Promise((r) => setTimeout(r, 50));
    const fetched = sts.requests.slice(before);
    assert.deepEqual(
      fetched.filter((path) => path.startsWith("/attacker")),
      [],
    );
  });

  test("a kid with path traversal is only a lookup key: unknown_kid, no odd fetch", async () => {
    const before = sts.requests.length;
    for (const kid of ["../../../../etc/passwd", "..%2F..%2Fjwks", "/jwks?x=1", "key-1/../key-1"]) {
      const token = rawToken({ alg: "ES256", typ: "at+jwt", kid }, accessTokenClaims(), key);
      assertRefused(await verify(token), invalidToken("unknown_kid"));
    }
    const fetched = sts.requests.slice(before).filter((path) => !path.startsWith("/revocations"));
    assert.ok(fetched.length >= 1, "an unknown kid triggers a JWKS refetch");
    assert.deepEqual([...new Set(fetched)], ["/jwks"]);
  });

  test("a kid that is not a short string is refused", async () => {
    for (const kid of [42, "", "k".repeat(257)]) {
      const token = rawToken({ alg: "ES256", typ: "at+jwt", kid }, accessTokenClaims(), key);
      assertRefused(await verify(token), invalidToken("invalid_kid"));
    }
  });

  test("an unknown crit is refused", async () => {
    const token = rawToken(
      { alg: "ES256", typ: "at+jwt", kid: key.kid, crit: ["exp"], exp: NOW + 60 },
      accessTokenClaims(),
      key,
    );
    assertRefused(await verify(token), invalidToken("unsupported_crit"));
  });

  test("b64: false is refused, with or without crit", async () => {
    const claims = accessTokenClaims();
    for (const extra of [{ b64: false, crit: ["b64"] }, { b64: false }]) {
      const token = rawToken({ alg: "ES256", typ: "at+jwt", kid: key.kid, ...extra }, claims, key);
      assertRefused(await verify(token), invalidToken("unencoded_payload"));
    }
  });

  test("an all-zero ES256 signature is refused", async () => {
    const token = rawToken(
      { alg: "ES256", typ: "at+jwt", kid: key.kid },
      accessTokenClaims(),
      key,
      Buffer.alloc(64),
    );
    assertRefused(await verify(token), invalidToken("invalid_signature"));
    const short = rawToken(
      { alg: "ES256", typ: "at+jwt", kid: key.kid },
      accessTokenClaims(),
      key,
      Buffer.alloc(0),
    );
    assertRefused(await verify(short), invalidToken("invalid_signature"));
  });

  test("typ JWT, a missing typ and an ID token are refused as not access tokens", async () => {
    assertRefused(
      await verify(await mintToken(key, accessTokenClaims(), { typ: "JWT" })),
      invalidToken("invalid_typ"),
    );
    const noTyp = rawToken({ alg: "ES256", kid: key.kid }, accessTokenClaims(), key);
    assertRefused(await verify(noTyp), invalidToken("invalid_typ"));
    const idToken = await mintToken(
      key,
      {
        iss: ISSUER,
        sub: "alice",
        aud: "billing-agent",
        azp: "billing-agent",
        nonce: "n-0S6_WzA2Mj",
        auth_time: NOW - 10,
        iat: NOW,
        exp: NOW + 300,
      },
      { typ: "JWT" },
    );
    assertRefused(await verify(idToken), invalidToken("invalid_typ"));
  });

  test("application/at+jwt is accepted as the same typ (RFC 9068 §2.1)", async () => {
    const result = await verify(await mintToken(key, accessTokenClaims(), { typ: "application/at+jwt" }));
    assert.equal(result.ok, true);
  });

  test("a wrong issuer is refused", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW, { iss: "https://evil.example.test" }));
    assertRefused(await verify(token), invalidToken("invalid_issuer"));
  });

  test("the aud of another service is refused", async () => {
    for (const aud of ["https://billing.example.test", ["https://billing.example.test"], []]) {
      const token = await mintToken(key, accessTokenClaims(NOW, { aud }));
      assertRefused(await verify(token), invalidToken("invalid_audience"));
    }
    const multi = await mintToken(
      key,
      accessTokenClaims(NOW, { aud: ["https://billing.example.test", AUDIENCE] }),
    );
    assert.equal((await verify(multi)).ok, true);
  });

  test("expired by tolerance + 1 s is refused; within tolerance is accepted", async () => {
    const expired = await mintToken(key, accessTokenClaims(NOW - 100, { exp: NOW - 5 - 1 }));
    assertRefused(await verify(expired), invalidToken("token_expired"));
    const atTolerance = await mintToken(key, accessTokenClaims(NOW - 100, { exp: NOW - 5 }));
    assertRefused(await verify(atTolerance), invalidToken("token_expired"));
    const withinTolerance = await mintToken(key, accessTokenClaims(NOW - 100, { exp: NOW - 4 }));
    assert.equal((await verify(withinTolerance)).ok, true);
  });

  test("nbf in the future (beyond tolerance) is refused", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW, { nbf: NOW + 6 }));
    assertRefused(await verify(token), invalidToken("token_not_yet_valid"));
    assert.equal((await verify(await mintToken(key, accessTokenClaims(NOW, { nbf: NOW + 5 })))).ok, true);
  });

  test("iat in the future (beyond tolerance) is refused", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW + 6));
    assertRefused(await verify(token), invalidToken("iat_in_future"));
  });

  test("a stale iat is refused whatever exp says", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW - 300 - 5 - 1, { exp: NOW + 3600 }));
    assertRefused(await verify(token), invalidToken("token_stale"));
    const fresh = await mintToken(key, accessTokenClaims(NOW - 300 - 5, { exp: NOW + 3600 }));
    assert.equal((await verify(fresh)).ok, true);
  });

  test("missing exp, iat, sub or client_id is refused", async () => {
    for (const claim of ["exp", "iat", "sub", "client_id"]) {
      const claims: Record<string, unknown> = accessTokenClaims();
      delete claims[claim];
      assertRefused(await verify(await mintToken(key, claims)), invalidToken("missing_claim"));
    }
  });

  test("a missing approval_id is refused", async () => {
    const claims: Record<string, unknown> = accessTokenClaims();
    delete claims.approval_id;
    assertRefused(await verify(await mintToken(key, claims)), invalidToken("missing_approval_id"));
    const empty = await mintToken(key, accessTokenClaims(NOW, { approval_id: "" }));
    assertRefused(await verify(empty), invalidToken("missing_approval_id"));
  });

  test("act nested deeper than 5 is refused; 5 is accepted", async () => {
    const chain = (depth: number): Record<string, unknown> | undefined =>
      depth === 0 ? undefined : { sub: `agent-${depth}`, act: chain(depth - 1) };
    const five = await mintToken(key, accessTokenClaims(NOW, { act: chain(5) }));
    assert.equal((await verify(five)).ok, true);
    const six = await mintToken(key, accessTokenClaims(NOW, { act: chain(6) }));
    assertRefused(await verify(six), invalidToken("act_too_deep"));
    const malformed = await mintToken(key, accessTokenClaims(NOW, { act: "agent" }));
    assertRefused(await verify(malformed), invalidToken("invalid_act"));
  });

  test("a missing scope is 403 insufficient_scope with the scope in the challenge", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW, { scope: "crm:read" }));
    const result = await verify(token, ["crm:read", "crm:write"]);
    assertRefused(result, { status: 403, error: "insufficient_scope", reason: "insufficient_scope" });
    assert.equal(
      result.headers["WWW-Authenticate"],
      'Bearer error="insufficient_scope", error_description="The token lacks a scope this request requires", scope="crm:read crm:write"',
    );
  });

  test("a revoked approval is refused from the next poll on", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW, { approval_id: "appr_revoked" }));
    assert.equal((await verify(token)).ok, true);
    sts.revoke("appr_other");
    sts.revoke("appr_revoked");
    sts.revoke("appr_third");
    // The background poll (every 20 ms, two pages) picks them up; a fixed pause was too short on a slow
    // machine.
    await sts.caughtUp();
    const result = await verify(token);
    assertRefused(result, invalidToken("approval_revoked"));
    assert.equal(
      result.headers["WWW-Authenticate"],
      'Bearer error="invalid_token", error_description="The approval has been revoked"',
    );
    assert.equal((await verify(await mintToken(key))).ok, true, "other approvals still pass");
  });

  test("an unknown signing key is refused after a refetch", async () => {
    const other = await generateSigningKey("key-not-published");
    assertRefused(await verify(await mintToken(other)), invalidToken("unknown_kid"));
  });

  test("an oversized token and malformed tokens are refused", async () => {
    assertRefused(await verify("a".repeat(8193)), invalidToken("token_too_large"));
    assertRefused(await verify("not-a-jwt"), invalidToken("malformed_token"));
    assertRefused(await verify("a.b.c.d"), invalidToken("malformed_token"));
    assertRefused(await verify(`${b64url("[1]")}.${b64url({})}.AA`), invalidToken("malformed_token"));
    const badPayload = `${b64url({ alg: "ES256", typ: "at+jwt", kid: key.kid })}.${b64url("not json")}`;
    const signed = rawToken({ alg: "ES256", typ: "at+jwt", kid: key.kid }, {}, key);
    assertRefused(await verify(signed), invalidToken("invalid_issuer"));
    for (const payload of ["not json", "[1,2]", "null"]) {
      const input = `${b64url({ alg: "ES256", typ: "at+jwt", kid: key.kid })}.${b64url(payload)}`;
      const signature = sign("sha256", Buffer.from(input), {
        key: key.privateKeyObject,
        dsaEncoding: "ieee-p1363",
      });
      assertRefused(
        await verify(`${input}.${signature.toString("base64url")}`),
        invalidToken("malformed_token"),
      );
    }
    assertRefused(await verify(`${badPayload}.${"A".repeat(86)}`), invalidToken("invalid_signature"));
    assertRefused(
      await verifier.verify({ authorization: "Bearer" }),
      invalidToken("malformed_authorization"),
    );
    assertRefused(
      await verifier.verify({ authorization: "Bearer   " }),
      invalidToken("malformed_authorization"),
    );
  });

  test("tampered claims with a bad signature report the signature, not the claims", async () => {
    const token = await mintToken(key);
    const [header, , signature] = token.split(".");
    const tampered = {
      iss: "https://evil.example.test",
      aud: "https://other.example.test",
      exp: NOW - 3600,
      iat: NOW + 3600,
      scope: "crm:admin",
    };
    const forged = `${header}.${b64url(tampered)}.${signature}`;
    assertRefused(await verify(forged, ["crm:admin"]), invalidToken("invalid_signature"));
    const upgraded = `${header}.${b64url(accessTokenClaims(NOW, { scope: "crm:read crm:admin" }))}.${signature}`;
    assertRefused(await verify(upgraded, ["crm:admin"]), invalidToken("invalid_signature"));
  });
});

describe("gateway verifier: fails closed", () => {
  test("JWKS unreachable with no cached key: 503 temporarily_unavailable", async () => {
    const key = await generateSigningKey();
    const sts = await startFakeSts([key.publicJwk]);
    await sts.close();
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      jwksOptions: { cooldownMs: 10, timeoutMs: 500 },
      now: () => NOW_MS,
    });
    const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
    verifier.close();
    assertRefused(result, { status: 503, error: "temporarily_unavailable", reason: "jwks_unavailable" });
    assert.deepEqual(result.headers, {});
  });

  test("revocation feed unreachable: 503 temporarily_unavailable", async () => {
    const key = await generateSigningKey();
    const sts = await startFakeSts([key.publicJwk]);
    sts.state.feedDown = true;
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 1000 },
      now: () => NOW_MS,
    });
    const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
    verifier.close();
    await sts.close();
    assertRefused(result, {
      status: 503,
      error: "temporarily_unavailable",
      reason: "revocation_unavailable",
    });
  });

  test("revocation feed stale beyond maxStalenessMs: 503", async () => {
    const key = await generateSigningKey();
    const sts = await startFakeSts([key.publicJwk]);
    let clock = NOW_MS;
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 60_000, maxStalenessMs: 30_000 },
      now: () => clock,
      maxTokenAgeSeconds: 600,
    });
    await verifier.ready();
    const token = await mintToken(key);
    assert.equal((await verifier.verify({ authorization: `Bearer ${token}` })).ok, true);
    clock += 30_001;
    const result = await verifier.verify({ authorization: `Bearer ${token}` });
    verifier.close();
    await sts.close();
    assertRefused(result, {
      status: 503,
      error: "temporarily_unavailable",
      reason: "revocation_unavailable",
    });
  });

  test("invalid options are all named at construction", () => {
    assert.throws(
      () =>
        createVerifier({
          issuer: "",
          audience: [],
          algorithms: ["none" as "ES256"],
          clockToleranceSeconds: -1,
          maxTokenAgeSeconds: 0,
          rateLimit: { perSecond: 0, burst: 0 },
        }),
      (error: Error) => {
        for (const name of [
          "issuer",
          "audience",
          "algorithms: none",
          "clockToleranceSeconds",
          "maxTokenAgeSeconds",
          "rateLimit.perSecond",
          "rateLimit.burst",
        ]) {
          assert.match(error.message, new RegExp(name.replace(".", "\\.")));
        }
        return error instanceof TypeError;
      },
    );
  });
});
