import assert from "node:assert/strict";
import { sign } from "node:crypto";
import { before, describe, test } from "node:test";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import {
  createVerifier,
  type Verifier,
  type VerifierOptions,
  type VerifyResult,
} from "../../gateway-verifier/src/index.js";
import { leadingZeroSignature } from "../helpers/signatures.js";
import {
  AUDIENCE,
  accessTokenClaims,
  b64url,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  type SigningKey,
} from "./helpers.js";

type Mode = NonNullable<VerifierOptions["signatureVerification"]>;
const MODES: readonly Mode[] = ["threadpool", "inline"];

function verifierFor(mode: Mode, keys: JWK[], extra: Partial<VerifierOptions> = {}): Verifier {
  return createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys },
    now: () => NOW_MS,
    signatureVerification: mode,
    ...extra,
  });
}

const request = (token: string) => ({
  authorization: `Bearer ${token}`,
  method: "GET",
  url: `${AUDIENCE}/contacts`,
  requiredScopes: ["crm:read"],
});

/** A result's outcome in a form to compare exactly. */
type Outcome = Readonly<Record<string, string | number | boolean>>;

function outcome(result: VerifyResult): Outcome {
  return result.ok
    ? { ok: true, subject: result.subject, clientId: result.clientId, approvalId: result.approvalId }
    : { ok: false, status: result.status, error: result.error, reason: result.reason };
}

const refused = (reason: string): Outcome => ({ ok: false, status: 401, error: "invalid_token", reason });

/** The same signature with one bit of its last byte flipped. */
function flipSignatureBit(token: string): string {
  const dot = token.lastIndexOf(".");
  const signature = Buffer.from(token.slice(dot + 1), "base64url");
  signature[signature.length - 1] = (signature.at(-1) ?? 0) ^ 0x01;
  return `${token.slice(0, dot)}.${signature.toString("base64url")}`;
}

/** Token `a`'s header and signature around token `b`'s payload. */
function swapPayload(a: string, b: string): string {
  const [header, , signature] = a.split(".");
  return `${header}.${b.split(".")[1]}.${signature}`;
}

/** Whether `promise` settles while only microtasks run (no turn of the event loop). */
async function settlesWithoutEventLoopTurn(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(() => {
    settled = true;
  });
  for (let i = 0; i < 100; i++) await Promise.resolve();
  return settled;
}

describe("signatureVerification option", () => {
  test("an unknown value is named at construction", () => {
    assert.throws(
      () =>
        createVerifier({
          issuer: ISSUER,
          audience: AUDIENCE,
          jwks: { keys: [] },
          signatureVerification: "worker" as Mode,
        }),
      {
        name: "TypeError",
        message: 'createVerifier: invalid options: signatureVerification: must be "threadpool" or "inline"',
      },
    );
  });

  test("threadpool (the default) verifies off the event loop; inline and cache hits do not leave it", async () => {
    const key = await generateSigningKey("key-1");
    const verifiers = {
      default: createVerifier({
        issuer: ISSUER,
        audience: AUDIENCE,
        jwks: { keys: [key.publicJwk] },
        now: () => NOW_MS,
        cache: false,
      }),
      threadpool: verifierFor("threadpool", [key.publicJwk], { cache: false }),
      inline: verifierFor("inline", [key.publicJwk], { cache: false }),
      cached: verifierFor("threadpool", [key.publicJwk]),
    };
    for (const verifier of Object.values(verifiers)) await verifier.ready();
    const token = await mintToken(key);
    const settled: Record<string, boolean> = {};
    for (const [name, verifier] of Object.entries(verifiers)) {
      const result = verifier.verify(request(token));
      settled[name] = await settlesWithoutEventLoopTurn(result);
      assert.deepEqual(outcome(await result), {
        ok: true,
        subject: "alice",
        clientId: "billing-agent",
        approvalId: "appr_123",
      });
    }
    // The cache is warm now: a hit skips the signature, so it needs no thread.
    settled.cacheHit = await settlesWithoutEventLoopTurn(verifiers.cached.verify(request(token)));
    assert.deepEqual(settled, {
      default: false,
      threadpool: false,
      inline: true,
      cached: false,
      cacheHit: true,
    });
    for (const verifier of Object.values(verifiers)) verifier.close();
  });
});

for (const [alg, family] of [
  ["ES256", "P-256"],
  ["EdDSA", "Ed25519"],
  ["PS256", "RSA 2048"],
  ["RS256", "RSA 2048"],
] as const) {
  test(`${alg} (${family}): threadpool and inline give the same exact result for valid and bad signatures`, async () => {
    const options = alg === "PS256" || alg === "RS256" ? { modulusLength: 2048 } : {};
    const own = await generateKeyPair(alg, { ...options, extractable: true });
    const other = await generateKeyPair(alg, { ...options, extractable: true });
    const jwk = { ...(await exportJWK(own.publicKey)), kid: "k", alg, use: "sig" };
    const sign = (claims: Record<string, unknown>, privateKey = own.privateKey) =>
      new SignJWT(claims).setProtectedHeader({ alg, typ: "at+jwt", kid: "k" }).sign(privateKey);
    const valid = await sign(accessTokenClaims());
    const otherValid = await sign(accessTokenClaims(NOW, { sub: "bob" }));
    const dot = valid.lastIndexOf(".");
    const signatureLength = Buffer.from(valid.slice(dot + 1), "base64url").length;
    const cases: [string, string, Outcome][] = [
      ["valid", valid, { ok: true, subject: "alice", clientId: "billing-agent", approvalId: "appr_123" }],
      ["signature bit flipped", flipSignatureBit(valid), refused("invalid_signature")],
      ["another token's payload", swapPayload(valid, otherValid), refused("invalid_signature")],
      [
        "signed by another key",
        await sign(accessTokenClaims(), other.privateKey),
        refused("invalid_signature"),
      ],
      [
        "all-zero signature",
        `${valid.slice(0, dot)}.${Buffer.alloc(signatureLength).toString("base64url")}`,
        refused("invalid_signature"),
      ],
      [
        "signature one byte short",
        `${valid.slice(0, dot)}.${Buffer.from(valid.slice(dot + 1), "base64url")
          .subarray(1)
          .toString("base64url")}`,
        refused("invalid_signature"),
      ],
      ["empty signature", `${valid.slice(0, dot + 1)}`, refused("invalid_signature")],
      [
        "expired and badly signed: the signature is reported",
        flipSignatureBit(await sign(accessTokenClaims(NOW - 10_000))),
        refused("invalid_signature"),
      ],
      ["expired, well signed", await sign(accessTokenClaims(NOW - 10_000)), refused("token_expired")],
      [
        "another issuer, well signed",
        await sign(accessTokenClaims(NOW, { iss: "https://evil" })),
        refused("invalid_issuer"),
      ],
    ];
    const results = new Map<Mode, VerifyResult[]>();
    for (const mode of MODES) {
      const verifier = verifierFor(mode, [jwk], { algorithms: [alg], cache: false });
      await verifier.ready();
      const own: VerifyResult[] = [];
      for (const [name, token, expected] of cases) {
        const result = await verifier.verify(request(token));
        assert.deepEqual(outcome(result), expected, `${mode}: ${name}`);
        own.push(result);
      }
      results.set(mode, own);
      verifier.close();
    }
    // Whole results alike, challenge headers and claims included.
    assert.deepEqual(results.get("threadpool"), results.get("inline"));
  });
}

for (const alg of ["PS256", "RS256"] as const) {
  test(`${alg}: a signature whose leading zero octet is left out (another spelling of the same number) is refused in both modes`, async () => {
    const pair = await generateKeyPair(alg, { modulusLength: 2048, extractable: true });
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: "k", alg, use: "sig" };
    const { signed, stripped } = await leadingZeroSignature((attempt) =>
      new SignJWT(accessTokenClaims(NOW, { jti: `jti-${attempt}` }))
        .setProtectedHeader({ alg, typ: "at+jwt", kid: "k" })
        .sign(pair.privateKey),
    );
    for (const mode of MODES) {
      const verifier = verifierFor(mode, [jwk], { algorithms: [alg], cache: false });
      await verifier.ready();
      assert.deepEqual(outcome(await verifier.verify(request(stripped))), refused("invalid_signature"), mode);
      assert.deepEqual(
        outcome(await verifier.verify(request(signed))),
        { ok: true, subject: "alice", clientId: "billing-agent", approvalId: "appr_123" },
        mode,
      );
      verifier.close();
    }
  });
}

test("a well-signed payload that is not JSON is malformed in both modes, a badly signed one invalid", async () => {
  const key = await generateSigningKey("key-1");
  const input = `${b64url({ alg: "ES256", typ: "at+jwt", kid: key.kid })}.${b64url("not json")}`;
  const signature = sign("sha256", Buffer.from(input), {
    key: key.privateKeyObject,
    dsaEncoding: "ieee-p1363",
  });
  const signedToken = `${input}.${signature.toString("base64url")}`;
  for (const mode of MODES) {
    const verifier = verifierFor(mode, [key.publicJwk], { cache: false });
    await verifier.ready();
    assert.deepEqual(outcome(await verifier.verify(request(signedToken))), refused("malformed_token"), mode);
    assert.deepEqual(
      outcome(await verifier.verify(request(flipSignatureBit(signedToken)))),
      refused("invalid_signature"),
      mode,
    );
    verifier.close();
  }
});

describe("many verifications in flight at once each get their own exact result", () => {
  const VALID = 120;
  let key: SigningKey;
  let stranger: SigningKey;
  /** [token, expected outcome, expected jti when valid], in a fixed shuffled order. */
  let cases: [string, Outcome, string | undefined][];

  before(async () => {
    key = await generateSigningKey("key-1");
    stranger = await generateSigningKey("key-1");
    const valid: string[] = [];
    const expectations: [string, Outcome, string | undefined][] = [];
    for (let i = 0; i < VALID; i++) {
      const claims = accessTokenClaims(NOW, {
        sub: `user-${i}`,
        client_id: `agent-${i}`,
        approval_id: `appr-${i}`,
        jti: `jti-${i}`,
        // Tokens of different lengths, so no two in-flight signing inputs look alike.
        note: "x".repeat((i * 7) % 61),
      });
      const token = await mintToken(key, claims);
      valid.push(token);
      expectations.push([
        token,
        { ok: true, subject: `user-${i}`, clientId: `agent-${i}`, approvalId: `appr-${i}` },
        `jti-${i}`,
      ]);
    }
    for (let i = 0; i < 30; i++) {
      // Each token's signature around its neighbour's payload: both halves are individually genuine.
      const swapped = swapPayload(valid[i] as string, valid[(i + 1) % VALID] as string);
      expectations.push([swapped, refused("invalid_signature"), undefined]);
    }
    for (let i = 30; i < 55; i++) {
      expectations.push([flipSignatureBit(valid[i] as string), refused("invalid_signature"), undefined]);
    }
    for (let i = 0; i < 15; i++) {
      // Same kid, another key: the signature must fail.
      const forged = await mintToken(stranger, accessTokenClaims(NOW, { sub: `mallory-${i}` }));
      expectations.push([forged, refused("invalid_signature"), undefined]);
    }
    for (let i = 0; i < 10; i++) {
      // Well signed, expired: the signature passes and the claims decide.
      const expired = await mintToken(key, accessTokenClaims(NOW - 10_000, { sub: `late-${i}` }));
      expectations.push([expired, refused("token_expired"), undefined]);
    }
    assert.equal(expectations.length, 200);
    // A fixed interleaving of valid and refused tokens.
    cases = expectations
      .map((entry, index) => ({ entry, rank: (index * 7919) % 200 }))
      .sort((a, b) => a.rank - b.rank)
      .map(({ entry }) => entry);
  });

  async function checkAllAtOnce(verifier: Verifier, copies: number): Promise<VerifyResult[]> {
    await verifier.ready();
    const all = Array.from({ length: copies }, () => cases).flat();
    const results = await Promise.all(all.map(([token]) => verifier.verify(request(token))));
    results.forEach((result, index) => {
      const [, expected, jti] = all[index] as (typeof cases)[number];
      assert.deepEqual(outcome(result), expected, `token #${index % cases.length}`);
      if (result.ok) assert.equal(result.claims.jti, jti);
    });
    return results;
  }

  for (const mode of MODES) {
    test(`${mode}, uncached: 200 in flight (120 valid, 80 refused), every result exact`, async () => {
      const verifier = verifierFor(mode, [key.publicJwk], { cache: false });
      await checkAllAtOnce(verifier, 1);
      verifier.close();
    });
  }

  test("threadpool, cached: each token twice in flight (400), every result exact", async () => {
    const verifier = verifierFor("threadpool", [key.publicJwk]);
    await checkAllAtOnce(verifier, 2);
    // Then again from the cache.
    await checkAllAtOnce(verifier, 1);
    verifier.close();
  });

  test("threadpool and inline results are identical, token for token", async () => {
    const byMode = new Map<Mode, VerifyResult[]>();
    for (const mode of MODES) {
      const verifier = verifierFor(mode, [key.publicJwk], { cache: false });
      byMode.set(mode, await checkAllAtOnce(verifier, 1));
      verifier.close();
    }
    assert.deepEqual(byMode.get("threadpool"), byMode.get("inline"));
  });
});
