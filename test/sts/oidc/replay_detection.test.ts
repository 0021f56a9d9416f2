import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { sweepExpiredPayloads } from "../../../sts/src/oidc/adapter.js";
import { baseConfig, postForm, startTestApp, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

/** How many requests race with one proof or one assertion. */
const RACERS = 10;
const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

function dpopProof(key: { privateKey: PrivateKey; jwk: JWK }, htu: string) {
  return new SignJWT({ htm: "POST", htu, jti: randomUUID(), iat: Math.floor(Date.now() / 1000) })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: key.jwk })
    .sign(key.privateKey);
}

/** The statuses of `responses`, counted: `{ 200: 1, 400: 9 }`. */
function tally(responses: { status: number }[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const { status } of responses) counts[status] = (counts[status] ?? 0) + 1;
  return counts;
}

// The adversary: a hostile agent (or whoever captured one request) sending the same DPoP proof or the
// same client assertion many times at once, hoping that several land between oidc-provider's look-up of
// the jti and its write (ReplayDetection.unique: find, then save).
for (const engine of testEngines()) {
  describe(`concurrent replays of one proof or assertion on ${engine}`, () => {
    let sts: TestApp;
    let clientKey: PrivateKey;

    before(async () => {
      const pair = await generateKeyPair("ES256");
      clientKey = pair.privateKey;
      const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "triage-1", alg: "ES256", use: "sig" };
      const config = baseConfig();
      config.clients = [
        ...(config.clients as unknown[]),
        {
          client_id: "triage-agent",
          jwks: { keys: [publicJwk] },
          token_endpoint_auth_method: "private_key_jwt",
        },
      ];
      sts = await startTestApp({ engine, config });
    });
    after(() => sts.stop());

    test("the same DPoP proof sent in concurrent token exchanges mints exactly one token", async () => {
      const { privateKey, publicKey } = await generateKeyPair("ES256");
      const key = { privateKey, jwk: await exportJWK(publicKey) };
      const approvalId = await insertApproval(sts.handle.db, { max_tokens: RACERS });
      const dpop = await dpopProof(key, `${sts.url}/token`);
      const subjects = await Promise.all(
        Array.from({ length: RACERS }, () =>
          sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
        ),
      );
      const responses = await Promise.all(
        subjects.map((subject_token) =>
          exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) }, undefined, {
            dpop,
          }),
        ),
      );
      assert.deepEqual(
        tally(responses),
        { 200: 1, 400: RACERS - 1 },
        JSON.stringify(responses.map((r) => r.body.error ?? r.body.token_type)),
      );
      for (const refused of responses.filter((r) => r.status !== 200)) {
        assert.equal(refused.body.error, "invalid_grant");
        assert.equal(refused.body.error_description, "the DPoP proof was already used");
      }
      const minted = responses.find((r) => r.status === 200);
      assert.equal(minted?.body.token_type, "DPoP");
      const approval = await sts.handle.db
        .selectFrom("approvals")
        .select("tokens_issued")
        .where("id", "=", approvalId)
        .executeTakeFirstOrThrow();
      assert.equal(approval.tokens_issued, 1);
    });

    test("the same private_key_jwt client assertion sent concurrently authenticates exactly one request", async () => {
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "triage-1" })
        .setIssuer("triage-agent")
        .setSubject("triage-agent")
        .setAudience(sts.url)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime("1m")
        .sign(clientKey);
      const responses = await Promise.all(
        Array.from({ length: RACERS }, () =>
          postForm(`${sts.url}/token`, {
            grant_type: "client_credentials",
            scope: "approvals:request",
            client_id: "triage-agent",
            client_assertion_type: CLIENT_ASSERTION_TYPE,
            client_assertion: assertion,
          }),
        ),
      );
      assert.deepEqual(
        tally(responses),
        { 200: 1, 401: RACERS - 1 },
        JSON.stringify(responses.map((r) => r.body.error ?? r.body.token_type)),
      );
      for (const refused of responses.filter((r) => r.status !== 200)) {
        assert.equal(refused.body.error, "invalid_client");
        assert.equal(refused.body.error_description, "client authentication failed");
      }
      const issued = responses.find((r) => r.status === 200);
      assert.equal(issued?.body.token_type, "Bearer");
      assert.equal(issued?.body.scope, "approvals:request");
    });

    test("ReplayDetection.unique: of many concurrent calls for one jti exactly one is true, and only until it expires", async () => {
      const provider = sts.app.provider;
      const jti = randomUUID();
      const exp = Math.floor(Date.now() / 1000) + 60;
      const results = await Promise.all(
        Array.from({ length: 25 }, () => provider.ReplayDetection.unique("triage-agent", jti, exp)),
      );
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(await provider.ReplayDetection.unique("triage-agent", jti, exp), false);
      // The save that follows the claim replaced its provisional expiry with the jti's own (`exp`).
      const marks = await sts.handle.db
        .selectFrom("oidc_payloads")
        .select("expires_at")
        .where("type", "=", "ReplayDetection")
        .where("id", "=", createHash("sha256").update(`triage-agent${jti}`).digest("base64url"))
        .execute();
      assert.equal(marks.length, 1);
      const expiresAt = marks[0]!.expires_at!.getTime();
      assert.ok(
        expiresAt >= exp * 1000 && expiresAt < (exp + 2) * 1000,
        `expires_at ${expiresAt}, exp ${exp}`,
      );
      // Another issuer's jti of the same value is its own.
      assert.equal(await provider.ReplayDetection.unique("billing-agent", jti, exp), true);
      // Once its mark has expired (not yet swept), the jti is claimable again, once.
      await sts.handle.db
        .updateTable("oidc_payloads")
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where("type", "=", "ReplayDetection")
        .execute();
      const again = await Promise.all(
        Array.from({ length: 5 }, () => provider.ReplayDetection.unique("triage-agent", jti, exp)),
      );
      assert.equal(again.filter(Boolean).length, 1);
      // Expired marks are swept by the retention job's oidc_payloads step.
      await sts.handle.db
        .updateTable("oidc_payloads")
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where("type", "=", "ReplayDetection")
        .execute();
      await sweepExpiredPayloads(sts.handle.db, new Date(), { batchSize: 100, maxBatches: 10 });
      const left = await sts.handle.db
        .selectFrom("oidc_payloads")
        .select("id")
        .where("type", "=", "ReplayDetection")
        .execute();
      assert.deepEqual(left, []);
    });
  });
}
