import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import {
  ACCESS_TOKEN_TYPE,
  agentTask,
  exchange,
  insertApproval,
  JWT_TOKEN_TYPE,
} from "../../helpers/exchange.js";

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

async function dpopKey(): Promise<{ privateKey: PrivateKey; jwk: JWK; jkt: string }> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}

function proof(
  key: { privateKey: PrivateKey; jwk: JWK },
  htu: string,
  overrides: Record<string, unknown> = {},
) {
  return new SignJWT({
    htm: "POST",
    htu,
    jti: randomUUID(),
    iat: Math.floor(Date.now() / 1000),
    ...overrides,
  })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: key.jwk })
    .sign(key.privateKey);
}

for (const engine of testEngines()) {
  describe(`DPoP at the token endpoint on ${engine}`, () => {
    let sts: TestApp;
    before(async () => {
      const config = baseConfig();
      config.tokens = {
        default_ttl_seconds: 300,
        max_ttl_seconds: 900,
        signing_alg: "ES256",
        max_delegation_depth: 2,
      };
      sts = await startTestApp({ engine, config });
    });
    after(() => sts.stop());
    const subject = () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });

    test("a proof binds the token: token_type DPoP, cnf.jkt, recorded", async () => {
      const key = await dpopKey();
      const approvalId = await insertApproval(sts.handle.db);
      const { status, body } = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop: await proof(key, `${sts.url}/token`) },
      );
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.token_type, "DPoP");
      const claims = decodeJwt(body.access_token as string);
      assert.deepEqual(claims.cnf, { jkt: key.jkt });
      const row = await sts.handle.db
        .selectFrom("issued_tokens")
        .select("jkt")
        .where("jti", "=", claims.jti as string)
        .executeTakeFirstOrThrow();
      assert.equal(row.jkt, key.jkt);
    });

    test("a replayed proof is refused", async () => {
      const key = await dpopKey();
      const approvalId = await insertApproval(sts.handle.db);
      const dpop = await proof(key, `${sts.url}/token`);
      const first = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop },
      );
      assert.equal(first.status, 200);
      const replay = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop },
      );
      assert.equal(replay.status, 400);
      assert.equal(replay.body.error, "invalid_grant");
      assert.equal(replay.body.error_description, "the DPoP proof was already used");
      const approval = await sts.handle.db
        .selectFrom("approvals")
        .select("tokens_issued")
        .where("id", "=", approvalId)
        .executeTakeFirstOrThrow();
      assert.equal(approval.tokens_issued, 1);
    });

    test("a proof for another URL or method is refused with invalid_dpop_proof", async () => {
      const key = await dpopKey();
      const approvalId = await insertApproval(sts.handle.db);
      const wrongUrl = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop: await proof(key, "https://elsewhere.example.test/token") },
      );
      assert.equal(wrongUrl.status, 400);
      assert.equal(wrongUrl.body.error, "invalid_dpop_proof");
      assert.equal(wrongUrl.body.error_description, "DPoP proof htu mismatch");
      const wrongMethod = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop: await proof(key, `${sts.url}/token`, { htm: "GET" }) },
      );
      assert.equal(wrongMethod.body.error, "invalid_dpop_proof");
      assert.equal(wrongMethod.body.error_description, "DPoP proof htm mismatch");
    });

    test("a DPoP-bound subject token is exchanged only with a proof of the same key", async () => {
      const key = await dpopKey();
      const other = await dpopKey();
      const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read crm:write" });
      const parent = await exchange(
        sts.url,
        { subject_token: await subject(), authorization_details: agentTask(approvalId) },
        undefined,
        { dpop: await proof(key, `${sts.url}/token`) },
      );
      assert.equal(parent.status, 200);
      const chained = {
        subject_token: parent.body.access_token as string,
        subject_token_type: ACCESS_TOKEN_TYPE,
        scope: "crm:read",
        authorization_details: agentTask(approvalId),
      };
      const bare = await exchange(sts.url, chained);
      assert.equal(bare.status, 400);
      assert.equal(bare.body.error, "invalid_grant");
      assert.equal(
        bare.body.error_description,
        "the subject token is DPoP-bound: send a DPoP proof signed with its key",
      );
      const wrongKey = await exchange(sts.url, chained, undefined, {
        dpop: await proof(other, `${sts.url}/token`),
      });
      assert.equal(wrongKey.status, 400);
      assert.equal(
        wrongKey.body.error_description,
        "the subject token is DPoP-bound: send a DPoP proof signed with its key",
      );
      const ok = await exchange(sts.url, chained, undefined, { dpop: await proof(key, `${sts.url}/token`) });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.deepEqual(decodeJwt(ok.body.access_token as string).cnf, { jkt: key.jkt });
    });

    test("the delegation chain is bounded by tokens.max_delegation_depth", async () => {
      const approvalId = await insertApproval(sts.handle.db);
      const actor = (sub: string) => sts.app.services.devIssuer!.mint({ sub, usage: "actor" });
      let token = await subject();
      let type = JWT_TOKEN_TYPE;
      for (const [i, name] of ["agent-1", "agent-2"].entries()) {
        const hop = await exchange(sts.url, {
          subject_token: token,
          subject_token_type: type,
          actor_token: await actor(name),
          actor_token_type: JWT_TOKEN_TYPE,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(hop.status, 200, `hop ${i}: ${JSON.stringify(hop.body)}`);
        token = hop.body.access_token as string;
        type = ACCESS_TOKEN_TYPE;
      }
      const third = await exchange(sts.url, {
        subject_token: token,
        subject_token_type: type,
        actor_token: await actor("agent-3"),
        actor_token_type: JWT_TOKEN_TYPE,
        authorization_details: agentTask(approvalId),
      });
      assert.equal(third.status, 400);
      assert.equal(third.body.error, "invalid_grant");
      assert.equal(third.body.error_description, "the delegation chain would exceed 2 actors");
    });
  });
}
