import assert from "node:assert/strict";
import { test } from "node:test";
import { exportJWK, generateKeyPair, errors as joseErrors, SignJWT } from "jose";
import { loadConfig } from "../../../sts/src/config/load.js";
import { createTrustedIssuers, IdentityTokenError } from "../../../sts/src/identity/trusted_issuers.js";
import { createOwnTokenVerifier } from "../../../sts/src/keys/own_tokens.js";
import { leadingZeroSignature } from "../../helpers/signatures.js";

const ISSUER = "https://idp.example.test";
const AUDIENCE = "https://sts.example.test";

/** An RSA key pair of `alg` and its public JWK under `kid`. */
async function rsaKey(alg: "PS256" | "RS256", kid: string) {
  const pair = await generateKeyPair(alg, { modulusLength: 2048, extractable: true });
  return { pair, jwk: { ...(await exportJWK(pair.publicKey)), kid, alg, use: "sig" } };
}

/** A JWT of `claims` signed by `key`, issued now by `issuer` for `audience`, for five minutes. */
function signToken(
  claims: Record<string, unknown>,
  header: { alg: string; kid: string; typ?: string },
  key: Parameters<SignJWT["sign"]>[0],
  issuer: string,
  audience: string,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader(header)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key);
}

for (const alg of ["PS256", "RS256"] as const) {
  test(`a trusted issuer's ${alg} subject token whose signature leaves out its leading zero octet is refused (signature_invalid); the token as signed is accepted`, async () => {
    const { pair, jwk } = await rsaKey(alg, "k1");
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
    const { signed, stripped } = await leadingZeroSignature((attempt) =>
      signToken(
        { sub: "alice", jti: `jti-${attempt}` },
        { alg, kid: "k1" },
        pair.privateKey,
        ISSUER,
        AUDIENCE,
      ),
    );
    assert.equal((await issuers.verify(signed, "subject")).subject, "alice");
    await assert.rejects(issuers.verify(stripped, "subject"), (error: unknown) => {
      assert.ok(error instanceof IdentityTokenError);
      assert.equal(error.reason, "signature_invalid");
      return true;
    });
  });
}

test("the STS's own PS256 access tokens (keys.signing_alg PS256): a signature without its leading zero octet is refused", async () => {
  const { pair, jwk: publicJwk } = await rsaKey("PS256", "own");
  const privateJwk = { ...(await exportJWK(pair.privateKey)), kid: "own", alg: "PS256", use: "sig" };
  const issuer = "https://sts.example.test";
  const audience = `${issuer}/approvals`;
  const verifier = createOwnTokenVerifier(issuer, [
    { kid: "own", alg: "PS256", status: "current", privateJwk, publicJwk },
  ]);
  const { signed, stripped } = await leadingZeroSignature((attempt) =>
    signToken(
      { client_id: "billing-agent", jti: `jti-${attempt}` },
      { alg: "PS256", typ: "at+jwt", kid: "own" },
      pair.privateKey,
      issuer,
      audience,
    ),
  );
  assert.equal((await verifier.verify(signed, { audience })).client_id, "billing-agent");
  await assert.rejects(verifier.verify(stripped, { audience }), joseErrors.JWSSignatureVerificationFailed);
});
