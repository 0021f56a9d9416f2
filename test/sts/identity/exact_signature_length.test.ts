import assert from "node:assert/strict";
import { test } from "node:test";
import { exportJWK, generateKeyPair, errors as joseErrors, SignJWT } from "jose";
import { loadConfig } from "../../../sts/src/config/load.js";
import { createTrustedIssuers } from "../../../sts/src/identity/trusted_issuers.js";
import { createOwnTokenVerifier } from "../../../sts/src/keys/own_tokens.js";

const ISSUER = "https://idp.example.test";
const AUDIENCE = "https://sts.example.test";

for (const alg of ["PS256", "RS256"] as const) {
  test(`a trusted issuer's ${alg} subject token whose signature leaves out its leading zero octet is refused (signature_invalid); the token as signed is accepted`, async () => {
    const pair = await generateKeyPair(alg, { modulusLength: 2048, extractable: true });
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg, use: "sig" };
    const config = loadConfig(
      {},
      {
        trusted_issuers: [
          {
            issuer: ISSUER,
            audience: AUDIENCE,
            jwks: { keys: [jwk] },
            usage: ["subject"],
            algorithms: [alg],
          },
        ],
      },
    );
    const issuers = createTrustedIssuers(config.trusted_issuers);
    const now = Math.floor(Date.now() / 1000);
    // About 1 signature in 256 starts with a zero octet; vary the claims until one does.
    let signed: string | undefined;
    let shortened: string | undefined;
    for (let i = 0; i < 5_000 && shortened === undefined; i++) {
      signed = await new SignJWT({ sub: "alice", jti: `jti-${i}` })
        .setProtectedHeader({ alg, kid: "k1" })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .sign(pair.privateKey);
      const dot = signed.lastIndexOf(".");
      const signature = Buffer.from(signed.slice(dot + 1), "base64url");
      if (signature[0] === 0)
        shortened = `${signed.slice(0, dot)}.${signature.subarray(1).toString("base64url")}`;
    }
    assert.ok(
      signed !== undefined && shortened !== undefined,
      "no signature with a leading zero octet in 5,000",
    );
    assert.equal((await issuers.verify(signed, "subject")).subject, "alice");
    await assert.rejects(issuers.verify(shortened, "subject"), (error: unknown) => {
      assert.equal((error as { reason?: string }).reason, "signature_invalid");
      return true;
    });
  });
}

test("the STS's own PS256 access tokens (keys.signing_alg PS256): a signature without its leading zero octet is refused", async () => {
  const pair = await generateKeyPair("PS256", { modulusLength: 2048, extractable: true });
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "own", alg: "PS256", use: "sig" };
  const privateJwk = { ...(await exportJWK(pair.privateKey)), kid: "own", alg: "PS256", use: "sig" };
  const issuer = "https://sts.example.test";
  const verifier = createOwnTokenVerifier(issuer, [
    { kid: "own", alg: "PS256", status: "current", privateJwk, publicJwk },
  ]);
  const now = Math.floor(Date.now() / 1000);
  let signed: string | undefined;
  let shortened: string | undefined;
  for (let i = 0; i < 5_000 && shortened === undefined; i++) {
    signed = await new SignJWT({ client_id: "billing-agent", jti: `jti-${i}` })
      .setProtectedHeader({ alg: "PS256", typ: "at+jwt", kid: "own" })
      .setIssuer(issuer)
      .setAudience(`${issuer}/approvals`)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(pair.privateKey);
    const dot = signed.lastIndexOf(".");
    const signature = Buffer.from(signed.slice(dot + 1), "base64url");
    if (signature[0] === 0)
      shortened = `${signed.slice(0, dot)}.${signature.subarray(1).toString("base64url")}`;
  }
  assert.ok(
    signed !== undefined && shortened !== undefined,
    "no signature with a leading zero octet in 5,000",
  );
  assert.equal(
    (await verifier.verify(signed, { audience: `${issuer}/approvals` })).client_id,
    "billing-agent",
  );
  await assert.rejects(
    verifier.verify(shortened, { audience: `${issuer}/approvals` }),
    joseErrors.JWSSignatureVerificationFailed,
  );
});
