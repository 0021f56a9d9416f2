import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  rawToken,
  startFakeSts,
} from "./helpers.js";

const jwksFetches = (requests: string[]) => requests.filter((path) => path === "/jwks").length;

test("a flood of unknown kids causes at most one JWKS fetch per cooldown", async () => {
  const key = await generateSigningKey("key-1");
  const sts = await startFakeSts([key.publicJwk]);
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwksUri: `${sts.url}/jwks`,
    jwksOptions: { cooldownMs: 300 },
  });
  await verifier.ready();
  assert.equal(jwksFetches(sts.requests), 1);
  const now = Math.floor(Date.now() / 1000);
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      verifier.verify({
        authorization: `Bearer ${rawToken({ alg: "ES256", typ: "at+jwt", kid: `random-${i}` }, accessTokenClaims(now), key)}`,
      }),
    ),
  );
  assert.deepEqual(new Set(results.map((r) => (r.ok ? "ok" : r.reason))), new Set(["unknown_kid"]));
  // The initial fetch, then one coalesced refetch after the cooldown (plus at most one chained fetch).
  // A caller waits only for a fetch, each at most one cooldown after the one before: so the flood waited
  // at most two cooldowns and two fetches (no timed assertion needed, or wanted, for that).
  assert.ok(jwksFetches(sts.requests) <= 3, `${jwksFetches(sts.requests)} fetches`);
  // Known keys are never held up by the flood.
  assert.equal(
    (await verifier.verify({ authorization: `Bearer ${await mintToken(key, accessTokenClaims(now))}` })).ok,
    true,
  );
  verifier.close();
  await sts.close();
});

test("a failed JWKS refresh keeps the keys already fetched", async () => {
  const key = await generateSigningKey("key-1");
  const sts = await startFakeSts([key.publicJwk]);
  const errors: string[] = [];
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwksUri: `${sts.url}/jwks`,
    jwksOptions: { cacheMaxAgeMs: 1, cooldownMs: 10 },
    onBackgroundError: (error, source) => errors.push(`${source}: ${error.message}`),
  });
  await verifier.ready();
  sts.state.jwksDown = true;
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < 3; i++) {
    const result = await verifier.verify({
      authorization: `Bearer ${await mintToken(key, accessTokenClaims(now))}`,
    });
    assert.equal(result.ok, true);
    await new Promise((r) => setTimeout(r, 30));
  }
  assert.ok(errors.length >= 1 && errors.every((e) => e.startsWith("jwks: ")), errors.join("; "));
  // An unknown kid while the JWKS is down cannot be resolved: fail closed with 503.
  const other = await generateSigningKey("key-2");
  const unknown = await verifier.verify({
    authorization: `Bearer ${await mintToken(other, accessTokenClaims(now))}`,
  });
  assert.equal(unknown.ok ? "ok" : `${unknown.status} ${unknown.reason}`, "503 jwks_unavailable");
  verifier.close();
  await sts.close();
});

test("keys with use enc, private keys and HMAC keys in the JWKS are ignored", async () => {
  const key = await generateSigningKey("key-1");
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: {
      keys: [
        { ...key.publicJwk, use: "enc" },
        { kty: "oct", k: "c2VjcmV0", kid: "key-1", alg: "HS256" },
      ],
    },
  });
  const result = await verifier.verify({
    authorization: `Bearer ${await mintToken(key, accessTokenClaims(Math.floor(Date.now() / 1000)))}`,
  });
  assert.equal(result.ok ? "ok" : result.reason, "unknown_kid");
});
