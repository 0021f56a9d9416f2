import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { test } from "node:test";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { createVerifier } from "../../../gateway-verifier/src/index.js";
import { startTestApp } from "../../helpers/app.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

function proof(
  key: { privateKey: PrivateKey; jwk: JWK },
  htm: string,
  htu: string,
  extra: Record<string, unknown> = {},
) {
  return new SignJWT({ htm, htu, jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...extra })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: key.jwk })
    .sign(key.privateKey);
}

test("end to end: a DPoP-bound token works at the gateway with a proof and is refused without one", async () => {
  const sts = await startTestApp({ engine: "pglite" });
  try {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    const key = { privateKey, jwk: await exportJWK(publicKey) };
    const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read" });
    const minted = await exchange(
      sts.url,
      {
        subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
        authorization_details: agentTask(approvalId),
      },
      undefined,
      { dpop: await proof(key, "POST", `${sts.url}/token`) },
    );
    assert.equal(minted.status, 200, JSON.stringify(minted.body));
    assert.equal(minted.body.token_type, "DPoP");
    const token = minted.body.access_token as string;

    const verifier = createVerifier({
      issuer: sts.url,
      audience: "https://crm.example.test",
      jwksUri: `${sts.url}/jwks`,
      rateLimit: false,
    });
    const url = "https://crm.example.test/contacts";
    const ath = createHash("sha256").update(token).digest("base64url");

    const ok = await verifier.verify({
      authorization: `DPoP ${token}`,
      dpop: await proof(key, "GET", url, { ath }),
      method: "GET",
      url,
      requiredScopes: ["crm:read"],
    });
    assert.equal(ok.ok, true, JSON.stringify(ok));
    if (ok.ok) {
      assert.equal(ok.approvalId, approvalId);
      assert.equal((ok.claims.cnf as { jkt: string }).jkt, await calculateJwkThumbprint(key.jwk));
    }

    const withoutProof = await verifier.verify({
      authorization: `DPoP ${token}`,
      method: "GET",
      url,
      requiredScopes: ["crm:read"],
    });
    assert.equal(withoutProof.ok, false);
    if (!withoutProof.ok) {
      assert.equal(withoutProof.status, 401);
      assert.equal(withoutProof.error, "invalid_dpop_proof");
      assert.equal(withoutProof.reason, "dpop_proof_missing");
    }

    const asBearer = await verifier.verify({
      authorization: `Bearer ${token}`,
      method: "GET",
      url,
      requiredScopes: ["crm:read"],
    });
    assert.equal(asBearer.ok, false);
    if (!asBearer.ok) {
      assert.equal(asBearer.status, 401);
      assert.equal(asBearer.reason, "dpop_bound_token_as_bearer");
    }

    const stolen = await generateKeyPair("ES256");
    const thief = { privateKey: stolen.privateKey, jwk: await exportJWK(stolen.publicKey) };
    const otherKey = await verifier.verify({
      authorization: `DPoP ${token}`,
      dpop: await proof(thief, "GET", url, { ath }),
      method: "GET",
      url,
      requiredScopes: ["crm:read"],
    });
    assert.equal(otherKey.ok, false);
    if (!otherKey.ok) assert.equal(otherKey.reason, "dpop_key_mismatch");
    verifier.close();
  } finally {
    await sts.stop();
  }
});
