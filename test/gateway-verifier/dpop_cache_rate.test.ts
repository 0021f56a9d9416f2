import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import {
  createMemoryRateLimitStore,
  type RateLimitStore,
  type VerifierOptions,
  type VerifyResult,
} from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  accessTokenClaims,
  countMapIteratorSteps,
  createVerifier,
  dpopProof,
  generateDpopKey,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  type SigningKey,
  startFakeSts,
} from "./helpers.js";

function refusal(result: VerifyResult) {
  assert.equal(result.ok, false, "expected a refusal");
  if (result.ok) throw new Error("unreachable");
  return { status: result.status, error: result.error, reason: result.reason };
}

async function setup(options: Partial<VerifierOptions> = {}) {
  const key = await generateSigningKey("key-1");
  let clock = NOW_MS;
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    now: () => clock,
    ...options,
  });
  await verifier.ready();
  return {
    key,
    verifier,
    advance(ms: number) {
      clock += ms;
    },
  };
}

const URL_CONTACTS = `${AUDIENCE}/contacts`;

describe("DPoP-bound tokens (RFC 9449)", () => {
  async function bound() {
    const context = await setup();
    const holder = await generateDpopKey();
    const token = await mintToken(context.key, accessTokenClaims(NOW, { cnf: { jkt: holder.jkt } }));
    const call = (dpop: string | undefined, scheme = "DPoP", url = URL_CONTACTS, method = "GET") =>
      context.verifier.verify({
        authorization: `${scheme} ${token}`,
        method,
        url,
        requiredScopes: ["crm:read"],
        dpop,
      });
    return { ...context, holder, token, call };
  }

  test("a valid proof is accepted", async () => {
    const { holder, token, call } = await bound();
    const result = await call(await dpopProof(holder, token));
    assert.equal(result.ok, true);
  });

  test("htu ignores the query and fragment, and URL normalization (default port, host case)", async () => {
    const { holder, token, call } = await bound();
    const proof = await dpopProof(holder, token, { htu: "https://CRM.example.test:443/contacts" });
    assert.equal((await call(proof, "DPoP", `${URL_CONTACTS}?page=2#top`)).ok, true);
  });

  test("a missing proof is refused with a DPoP challenge", async () => {
    const { call } = await bound();
    const result = await call(undefined);
    assert.deepEqual(refusal(result), {
      status: 401,
      error: "invalid_dpop_proof",
      reason: "dpop_proof_missing",
    });
    assert.ok(!result.ok);
    assert.equal(
      result.headers["WWW-Authenticate"],
      'DPoP error="invalid_dpop_proof", error_description="A DPoP proof is required", algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"',
    );
  });

  test("a replayed proof is refused", async () => {
    const { holder, token, call } = await bound();
    const proof = await dpopProof(holder, token);
    assert.equal((await call(proof)).ok, true);
    assert.deepEqual(refusal(await call(proof)), {
      status: 401,
      error: "invalid_dpop_proof",
      reason: "dpop_proof_replayed",
    });
  });

  test("a bound token sent with the Bearer scheme is refused, even with a proof", async () => {
    const { holder, token, call } = await bound();
    assert.deepEqual(refusal(await call(await dpopProof(holder, token), "Bearer")), {
      status: 401,
      error: "invalid_token",
      reason: "dpop_bound_token_as_bearer",
    });
  });

  test("the DPoP scheme with an unbound token is refused", async () => {
    const { key, verifier } = await setup();
    const token = await mintToken(key);
    const result = await verifier.verify({ authorization: `DPoP ${token}`, url: URL_CONTACTS });
    assert.deepEqual(refusal(result), {
      status: 401,
      error: "invalid_token",
      reason: "token_not_dpop_bound",
    });
  });

  test("each wrong proof field has its own reason", async () => {
    const { holder, token, call } = await bound();
    const other = await generateDpopKey();
    const cases: [Promise<string>, string, string][] = [
      [dpopProof(other, token), "invalid_token", "dpop_key_mismatch"],
      [dpopProof(holder, token, { htm: "POST" }), "invalid_dpop_proof", "dpop_htm_mismatch"],
      [dpopProof(holder, token, { htu: `${AUDIENCE}/invoices` }), "invalid_dpop_proof", "dpop_htu_mismatch"],
      [dpopProof(holder, token, { iat: NOW - 60 - 5 - 1 }), "invalid_dpop_proof", "dpop_iat_invalid"],
      [dpopProof(holder, token, { iat: NOW + 6 }), "invalid_dpop_proof", "dpop_iat_invalid"],
      [dpopProof(holder, token, { ath: "x".repeat(43) }), "invalid_dpop_proof", "dpop_ath_mismatch"],
      [dpopProof(holder, token, {}, { typ: "JWT" }), "invalid_dpop_proof", "dpop_proof_invalid"],
      [Promise.resolve("not.a.proof"), "invalid_dpop_proof", "dpop_proof_invalid"],
    ];
    for (const [proof, error, reason] of cases) {
      assert.deepEqual(refusal(await call(await proof)), { status: 401, error, reason }, reason);
    }
    const good = await dpopProof(holder, token);
    const [h, p] = good.split(".");
    assert.deepEqual(refusal(await call(`${h}.${p}.${"A".repeat(86)}`)), {
      status: 401,
      error: "invalid_dpop_proof",
      reason: "dpop_proof_invalid",
    });
    const twoProofs = `${good}, ${await dpopProof(holder, token)}`;
    assert.equal(refusal(await call(twoProofs)).reason, "dpop_proof_invalid");
  });

  test("a failed proof does not burn its jti", async () => {
    const { holder, token, call } = await bound();
    const jti = randomUUID();
    assert.equal(
      refusal(await call(await dpopProof(holder, token, { jti, htm: "POST" }))).reason,
      "dpop_htm_mismatch",
    );
    assert.equal((await call(await dpopProof(holder, token, { jti }))).ok, true);
  });
});

describe("verified-token cache", () => {
  test("per-request checks run on cache hits: scope, revocation and rate", async () => {
    const sts = await startFakeSts();
    const context = await setup({
      revocation: { url: `${sts.url}/revocations`, intervalMs: 20 },
      rateLimit: { perSecond: 1, burst: 2 },
    });
    const token = await mintToken(context.key, accessTokenClaims(NOW, { scope: "crm:read" }));
    const verify = (requiredScopes: string[]) =>
      context.verifier.verify({ authorization: `Bearer ${token}`, requiredScopes });
    assert.equal((await verify(["crm:read"])).ok, true);
    assert.equal(refusal(await verify(["crm:write"])).reason, "insufficient_scope");
    assert.equal((await verify(["crm:read"])).ok, true);
    assert.deepEqual(refusal(await verify(["crm:read"])), {
      status: 429,
      error: "rate_limited",
      reason: "rate_limited",
    });
    sts.revoke("appr_123");
    // The background poll (every 20 ms) picks it up; a fixed pause was too short on a slow machine.
    await sts.caughtUp();
    assert.equal(refusal(await verify(["crm:read"])).reason, "approval_revoked");
    context.verifier.close();
    await sts.close();
  });

  test("a cached token dies at exp: the full check then reports the expiry", async () => {
    const context = await setup({ clockToleranceSeconds: 0 });
    const token = await mintToken(context.key, accessTokenClaims(NOW, { exp: NOW + 10 }));
    assert.equal((await context.verifier.verify({ authorization: `Bearer ${token}` })).ok, true);
    context.advance(9_999);
    assert.equal((await context.verifier.verify({ authorization: `Bearer ${token}` })).ok, true);
    context.advance(1);
    assert.equal(
      refusal(await context.verifier.verify({ authorization: `Bearer ${token}` })).reason,
      "token_expired",
    );
  });

  test("a cached token dies at iat + maxTokenAgeSeconds", async () => {
    const context = await setup({ clockToleranceSeconds: 0, maxTokenAgeSeconds: 60 });
    const token = await mintToken(context.key, accessTokenClaims(NOW, { exp: NOW + 600 }));
    assert.equal((await context.verifier.verify({ authorization: `Bearer ${token}` })).ok, true);
    context.advance(60_001);
    assert.equal(
      refusal(await context.verifier.verify({ authorization: `Bearer ${token}` })).reason,
      "token_stale",
    );
  });

  test("the cache is bounded: past maxEntries the least recently used token is verified again", async () => {
    const context = await setup({ cache: { maxEntries: 2 } });
    const [a, b, c] = await Promise.all([
      mintToken(context.key),
      mintToken(context.key),
      mintToken(context.key),
    ]);
    const verify = (token: string) => context.verifier.verify({ authorization: `Bearer ${token}` });
    const firstA = await verify(a);
    await verify(b);
    assert.equal(await verify(a), firstA, "a is still cached (and now most recent)");
    await verify(c);
    const firstB = await verify(b);
    assert.equal(firstB.ok, true);
    assert.equal(await verify(b), firstB);
    assert.notEqual(await verify(a), firstA, "a was evicted when b came back");
  });

  test("a cache hit returns the same frozen result", async () => {
    const context = await setup();
    const token = await mintToken(context.key);
    const first = await context.verifier.verify({ authorization: `Bearer ${token}` });
    const second = await context.verifier.verify({ authorization: `Bearer ${token}` });
    assert.equal(first, second);
    assert.ok(first.ok && Object.isFrozen(first.claims));
  });
});

describe("rate and burst per (client, approval)", () => {
  async function hammer(key: SigningKey, verify: (token: string) => Promise<VerifyResult>, claims = {}) {
    const token = await mintToken(key, accessTokenClaims(NOW, claims));
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const result = await verify(token);
      outcomes.push(result.ok ? "ok" : `${result.status}:${result.headers["Retry-After"]}`);
    }
    return outcomes;
  }

  test("over the gateway's burst: 429 with Retry-After", async () => {
    const { key, verifier } = await setup({ rateLimit: { perSecond: 1, burst: 3 } });
    const verify = (token: string) => verifier.verify({ authorization: `Bearer ${token}` });
    assert.deepEqual(await hammer(key, verify), ["ok", "ok", "ok", "429:1", "429:1", "429:1"]);
    const refused = await verify(await mintToken(key));
    assert.deepEqual(refusal(refused), { status: 429, error: "rate_limited", reason: "rate_limited" });
    assert.ok(!refused.ok);
    assert.deepEqual(refused.headers, { "Retry-After": "1" });
  });

  test("the token's rate_limit applies when tighter, per field", async () => {
    const { key, verifier } = await setup({ rateLimit: { perSecond: 10, burst: 5 } });
    const verify = (token: string) => verifier.verify({ authorization: `Bearer ${token}` });
    const outcomes = await hammer(key, verify, {
      rate_limit: { per_second: 0.5, burst: 2 },
      approval_id: "a2",
    });
    assert.deepEqual(outcomes, ["ok", "ok", "429:2", "429:2", "429:2", "429:2"]);
  });

  test("the bucket refills at perSecond", async () => {
    const context = await setup({ rateLimit: { perSecond: 2, burst: 1 } });
    const token = await mintToken(context.key);
    const verify = () => context.verifier.verify({ authorization: `Bearer ${token}` });
    assert.equal((await verify()).ok, true);
    assert.equal(refusal(await verify()).reason, "rate_limited");
    context.advance(499);
    assert.equal(refusal(await verify()).reason, "rate_limited");
    context.advance(1);
    assert.equal((await verify()).ok, true);
  });

  test("limits are per (client_id, approval_id), and new tokens share the bucket", async () => {
    const { key, verifier } = await setup({ rateLimit: { perSecond: 1, burst: 1 } });
    const verify = async (claims: Record<string, unknown>) =>
      (
        await verifier.verify({
          authorization: `Bearer ${await mintToken(key, accessTokenClaims(NOW, claims))}`,
        })
      ).ok;
    assert.equal(await verify({}), true);
    assert.equal(await verify({}), false, "a fresh token of the same approval shares the bucket");
    assert.equal(await verify({ approval_id: "appr_other" }), true);
    assert.equal(await verify({ client_id: "triage-agent" }), true);
  });

  test("rateLimit: false disables limiting, even the token's", async () => {
    const { key, verifier } = await setup({ rateLimit: false });
    const verify = (token: string) => verifier.verify({ authorization: `Bearer ${token}` });
    assert.deepEqual(await hammer(key, verify, { rate_limit: { per_second: 1, burst: 1 } }), [
      "ok",
      "ok",
      "ok",
      "ok",
      "ok",
      "ok",
    ]);
  });

  test("a failing store fails closed with 503", async () => {
    const broken: RateLimitStore = {
      consume: () => Promise.reject(new Error("store down")),
    };
    const { key, verifier } = await setup({ rateLimit: { perSecond: 1, burst: 1 }, rateLimitStore: broken });
    const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
    assert.deepEqual(refusal(result), {
      status: 503,
      error: "temporarily_unavailable",
      reason: "rate_limit_unavailable",
    });
  });

  test("a flood of 100 000 distinct agents keeps the memory store at maxKeys, evicting in O(1) (never a scan of the buckets); an agent in use keeps its bucket", () => {
    const store = createMemoryRateLimitStore({ maxKeys: 1000 });
    const limit = { perSecond: 1, burst: 1 };
    const refused = { allowed: false, retryAfterSeconds: 1 };
    assert.deepEqual(store.consume("hot", limit, 0), { allowed: true, retryAfterSeconds: 0 });
    const flood = 100_000;
    // More than 3 Map iterator steps per new agent is a scan.
    const hotAnswers: unknown[] = [];
    const steps = countMapIteratorSteps(3 * flood, () => {
      for (let i = 0; i < flood; i++) {
        store.consume(`agent-${i}`, limit, 0);
        if (i % 500 === 0) hotAnswers.push(store.consume("hot", limit, 0));
      }
    });
    assert.equal(store.size, 1000);
    assert.ok(steps <= flood, `${steps} iterator steps for ${flood} new agents`);
    // "hot" was used every 500 new agents (within the 1000 kept): never evicted, so still drained.
    assert.equal(hotAnswers.length, flood / 500);
    assert.ok(hotAnswers.every((answer) => JSON.stringify(answer) === JSON.stringify(refused)));
    // The flood's early agents were evicted: they start again with a full bucket.
    assert.deepEqual(store.consume("agent-0", limit, 0), { allowed: true, retryAfterSeconds: 0 });
    assert.deepEqual(store.consume(`agent-${flood - 1}`, limit, 0), refused);
    assert.equal(store.size, 1000);
  });

  test("the memory store stays bounded: refilled buckets go first, then the oldest", () => {
    const store = createMemoryRateLimitStore({ maxKeys: 2 });
    const limit = { perSecond: 1, burst: 1 };
    const allowed = { allowed: true, retryAfterSeconds: 0 };
    const refused = { allowed: false, retryAfterSeconds: 1 };
    assert.deepEqual(store.consume("a", limit, 0), allowed);
    assert.deepEqual(store.consume("b", limit, 0), allowed);
    // Full: "a" and "b" are drained, so the oldest ("a") is evicted to admit "c".
    assert.deepEqual(store.consume("c", limit, 0), allowed);
    assert.deepEqual(store.consume("b", limit, 0), refused, "b was kept");
    assert.deepEqual(store.consume("c", limit, 0), refused, "c was kept");
    // At t=1s "b" and "c" have refilled: dropping them loses nothing; "d" is admitted.
    assert.deepEqual(store.consume("d", limit, 1_000), allowed);
    assert.deepEqual(store.consume("d", limit, 1_000), refused);
  });
});

describe("DPoP replay cache under a flood (fails closed, never evicts a live proof)", () => {
  // Default maxProofAgeSeconds 60 and clockToleranceSeconds 5: a proof with iat = now is live for
  // 65 s (Retry-After says 71 s: the longest, for an iat 5 s ahead, plus one).
  const LIVE_MS = 65_000;

  async function clients(options: Partial<VerifierOptions>) {
    const context = await setup(options);
    let clock = NOW_MS;
    /** A DPoP-bound token of `clientId` and a call sending it with a fresh proof (or `proof`). */
    async function client(clientId: string) {
      const holder = await generateDpopKey();
      const token = await mintToken(
        context.key,
        accessTokenClaims(NOW, { client_id: clientId, cnf: { jkt: holder.jkt }, exp: NOW + 600 }),
      );
      const proof = () => dpopProof(holder, token, { iat: Math.floor(clock / 1000) });
      const call = async (sent?: string) =>
        context.verifier.verify({
          authorization: `DPoP ${token}`,
          method: "GET",
          url: URL_CONTACTS,
          dpop: sent ?? (await proof()),
        });
      return { proof, call };
    }
    return {
      client,
      advance(ms: number) {
        clock += ms;
        context.advance(ms);
      },
    };
  }

  function outcome(result: VerifyResult): string {
    return result.ok ? "ok" : `${result.status} ${result.reason} ${result.headers["Retry-After"] ?? "-"}`;
  }

  function tally(outcomes: string[]): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
    return counts;
  }

  test("one client's 150 fresh proofs (on two keys) into a cache of 100 cannot make another client's proof replayable: past its share of 10 it is refused 429 dpop_client_share_exceeded, and its share comes back when its proofs expire", async () => {
    const { client, advance } = await clients({ dpop: { replayCacheSize: 100 } });
    const victim = await client("victim-agent");
    const captured = await victim.proof();
    assert.equal((await victim.call(captured)).ok, true);
    // The hostile agent binds two tokens to two keys: the share is per client_id, not per key.
    const onKeys = [await client("hostile-agent"), await client("hostile-agent")] as const;
    const hostile = (i: number) => onKeys[i % 2 === 0 ? 0 : 1];
    const outcomes: string[] = [];
    for (let i = 0; i < 150; i++) outcomes.push(outcome(await hostile(i).call()));
    assert.deepEqual(refusal(await victim.call(captured)), {
      status: 401,
      error: "invalid_dpop_proof",
      reason: "dpop_proof_replayed",
    });
    assert.deepEqual(outcomes.slice(0, 10), Array(10).fill("ok"));
    assert.deepEqual(tally(outcomes), { ok: 10, "429 dpop_client_share_exceeded 71": 140 });
    const refused = await hostile(0).call();
    assert.deepEqual(refusal(refused), {
      status: 429,
      error: "rate_limited",
      reason: "dpop_client_share_exceeded",
    });
    assert.ok(!refused.ok);
    assert.deepEqual(refused.headers, { "Retry-After": "71" });
    // Other clients are unaffected meanwhile.
    assert.equal((await victim.call()).ok, true);
    advance(LIVE_MS);
    assert.equal(outcome(await hostile(0).call()), "429 dpop_client_share_exceeded 71", "not yet expired");
    advance(1);
    const after: string[] = [];
    for (let i = 0; i < 11; i++) after.push(outcome(await hostile(i).call()));
    assert.deepEqual(tally(after), { ok: 10, "429 dpop_client_share_exceeded 71": 1 });
    assert.equal(after[10], "429 dpop_client_share_exceeded 71");
  });

  test("a cache full of unexpired proofs refuses new proofs with 503 dpop_replay_cache_full rather than evict one, until they expire", async () => {
    const { client, advance } = await clients({ dpop: { replayCacheSize: 100, replayCachePerClient: 50 } });
    const first = await client("agent-1");
    const captured = await first.proof();
    assert.equal((await first.call(captured)).ok, true);
    for (let i = 1; i < 50; i++) assert.equal((await first.call()).ok, true);
    const second = await client("agent-2");
    for (let i = 0; i < 50; i++) assert.equal((await second.call()).ok, true);
    const third = await client("agent-3");
    const refused = await third.call();
    assert.deepEqual(refusal(refused), {
      status: 503,
      error: "temporarily_unavailable",
      reason: "dpop_replay_cache_full",
    });
    assert.ok(!refused.ok);
    assert.deepEqual(refused.headers, {});
    assert.equal(refusal(await first.call(captured)).reason, "dpop_proof_replayed");
    advance(LIVE_MS);
    assert.equal(refusal(await third.call()).reason, "dpop_replay_cache_full", "not yet expired");
    advance(1);
    assert.equal((await third.call()).ok, true);
    assert.equal(refusal(await first.call(captured)).reason, "dpop_iat_invalid", "expired, not replayable");
  });

  test("replayCacheSize and replayCachePerClient must be integers ≥ 1", () => {
    for (const dpop of [
      { replayCacheSize: 0 },
      { replayCacheSize: Number.NaN },
      { replayCachePerClient: 1.5 },
    ]) {
      assert.throws(
        () => createVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [] }, dpop }),
        /dpop\.replayCache(Size|PerClient): must be an integer ≥ 1/,
      );
    }
  });
});
