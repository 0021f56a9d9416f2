import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { test } from "node:test";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from "jose";
import { createAuthenticator } from "../../../sts/src/auth/authenticate.js";
import { loadConfig } from "../../../sts/src/config/load.js";
import { ApiError } from "../../../sts/src/http/errors.js";
import { createTrustedIssuers } from "../../../sts/src/identity/trusted_issuers.js";
import { createOwnTokenVerifier } from "../../../sts/src/keys/own_tokens.js";
import { baseConfig, TEST_SECRET } from "../../helpers/app.js";

/**
 * The approval API's DPoP check shares the verifier's replay cache, which refuses rather than forgets
 * a live proof. Its two load refusals are 429 and 503 with Retry-After (the credential is fine), not
 * 401, so a client keeps its token.
 */
test("approval API DPoP proofs: past a caller's share 429 slow_down (dpop_client_share_exceeded), a full cache 503 (dpop_replay_cache_full), both with Retry-After; a replay is still 401", async () => {
  const base = baseConfig();
  const config = loadConfig(
    {},
    {
      ...base,
      clients: [
        ...(base.clients as object[]),
        {
          client_id: "third-agent",
          client_secret: TEST_SECRET,
          token_endpoint_auth_method: "client_secret_basic",
        },
      ],
    },
  );
  const signing = await generateKeyPair("ES256", { extractable: true });
  const own = {
    kid: "own",
    alg: "ES256",
    status: "current" as const,
    privateJwk: { ...(await exportJWK(signing.privateKey)), kid: "own", alg: "ES256", use: "sig" },
    publicJwk: { ...(await exportJWK(signing.publicKey)), kid: "own", alg: "ES256", use: "sig" },
  };
  const authenticate = createAuthenticator({
    config,
    ownTokens: createOwnTokenVerifier(config.issuer, [own]),
    trustedIssuers: createTrustedIssuers([]),
    dpopReplay: { size: 4, perCaller: 2 },
  });
  const now = Math.floor(Date.now() / 1000);

  /** A DPoP-bound approvals:request token of `clientId`, and a proof maker for it. */
  async function agent(clientId: string) {
    const key = await generateKeyPair("ES256", { extractable: true });
    const jwk = await exportJWK(key.publicKey);
    const token = await new SignJWT({
      client_id: clientId,
      scope: "approvals:request",
      jti: randomUUID(),
      cnf: { jkt: await calculateJwkThumbprint(jwk) },
    })
      .setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid: "own" })
      .setIssuer(config.issuer)
      .setAudience(`${config.issuer}/approvals`)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(signing.privateKey);
    const proof = () =>
      new SignJWT({
        htm: "GET",
        htu: `${config.issuer}/approvals`,
        jti: randomUUID(),
        ath: createHash("sha256").update(token).digest("base64url"),
      })
        .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk })
        .setIssuedAt(now)
        .sign(key.privateKey);
    return { token, proof };
  }
  const call = (token: string, dpop: string) =>
    authenticate({ authorization: `DPoP ${token}`, dpop, method: "GET", path: "/approvals" });
  const refusal = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof ApiError, String(error));
      return { status: error.status, error: error.error, reason: error.reason, headers: error.headers };
    }
    assert.fail("expected a refusal");
  };

  const billing = await agent("billing-agent");
  const first = await billing.proof();
  assert.equal((await call(billing.token, first)).kind, "agent");
  assert.equal((await call(billing.token, await billing.proof())).kind, "agent");
  // Its share (2) is full: a third fresh proof is refused for load, with when to retry.
  assert.deepEqual(await refusal(call(billing.token, await billing.proof())), {
    status: 429,
    error: "slow_down",
    reason: "dpop_client_share_exceeded",
    headers: { "Retry-After": "71" },
  });
  // A replay is still a replay: 401, whatever the load.
  const replay = await refusal(call(billing.token, first));
  assert.deepEqual(
    [replay.status, replay.error, replay.reason],
    [401, "invalid_token", "dpop_proof_invalid"],
  );

  const post = await agent("post-agent");
  assert.equal((await call(post.token, await post.proof())).kind, "agent");
  assert.equal((await call(post.token, await post.proof())).kind, "agent");
  // The cache (4) is full of live proofs: a third caller is refused rather than any proof forgotten.
  const third = await agent("third-agent");
  assert.deepEqual(await refusal(call(third.token, await third.proof())), {
    status: 503,
    error: "temporarily_unavailable",
    reason: "dpop_replay_cache_full",
    headers: { "Retry-After": "71" },
  });
});
