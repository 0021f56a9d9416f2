import assert from "node:assert/strict";
import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import { describe, test } from "node:test";
import fc from "fast-check";
import { createVerifier, type VerifyResult } from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  accessTokenClaims,
  b64url,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW_MS,
  rawToken,
} from "../gateway-verifier/helpers.js";
import { propertyRuns } from "./runs.js";

/**
 * Property: the gateway verifier never accepts a token that differs from one the STS signed. Valid
 * tokens are minted, then mutated (bits, bytes, segments, headers, claims, re-signing); every mutant
 * must be refused with a 401 invalid_token, while the original still verifies.
 */

const key = await generateSigningKey("key-1");
const attacker = await generateSigningKey("key-1");
const rsaKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;

function verifierFor() {
  return createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    rateLimit: false,
    now: () => NOW_MS,
  });
}

const verifier = verifierFor();
const verify = (token: string): Promise<VerifyResult> =>
  verifier.verify({
    authorization: `Bearer ${token}`,
    method: "GET",
    url: `${AUDIENCE}/contacts`,
    requiredScopes: [],
  });

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The three segments of a compact JWS. */
function segments(token: string): [string, string, string] {
  const [h, p, s] = token.split(".");
  return [h ?? "", p ?? "", s ?? ""];
}

/** The segment's JSON object, or `{}` when an earlier mutation broke it. */
function decodeJson(segment: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A mutation of a valid token, described for the failure message. */
type Mutation = { label: string; apply: (token: string) => string };

/** Prints a mutation by its label in fast-check's counterexamples. */
function described(mutation: Mutation): Mutation {
  return Object.assign(mutation, { [fc.toStringMethod]: () => mutation.label });
}

const segmentIndex = fc.constantFrom(0, 1, 2);

/** Flips one bit of one base64url character (so the text changes; the decoded bytes may not). */
const bitFlip: fc.Arbitrary<Mutation> = fc
  .record({ segment: segmentIndex, position: fc.nat(), bit: fc.integer({ min: 0, max: 5 }) })
  .map(({ segment, position, bit }) =>
    described({
      label: `flip bit ${bit} of char ${position} in segment ${segment}`,
      apply: (token) => {
        const parts = segments(token);
        const text = parts[segment];
        const at = position % text.length;
        const value = ALPHABET.indexOf(text[at] ?? "A");
        parts[segment] = text.slice(0, at) + ALPHABET[value ^ (1 << bit)] + text.slice(at + 1);
        return parts.join(".");
      },
    }),
  );

/** XORs one decoded byte of one segment and re-encodes it canonically. */
const byteFlip: fc.Arbitrary<Mutation> = fc
  .record({ segment: segmentIndex, position: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) })
  .map(({ segment, position, mask }) =>
    described({
      label: `xor byte ${position} of segment ${segment} with ${mask}`,
      apply: (token) => {
        const parts = segments(token);
        const bytes = Buffer.from(parts[segment], "base64url");
        const at = position % bytes.length;
        bytes[at] = (bytes[at] ?? 0) ^ mask;
        parts[segment] = bytes.toString("base64url");
        return parts.join(".");
      },
    }),
  );

/** Reorders or duplicates segments. */
const segmentShuffle: fc.Arbitrary<Mutation> = fc
  .constantFrom(
    [1, 0, 2],
    [0, 2, 1],
    [2, 1, 0],
    [1, 2, 0],
    [2, 0, 1],
    [0, 0, 2],
    [1, 1, 2],
    [0, 1, 1],
    [0, 1],
    [0, 1, 2, 2],
    [0, 1, 2, 0],
  )
  .map((order) =>
    described({
      label: `segments in order ${order.join(",")}`,
      apply: (token) => {
        const parts = segments(token);
        return order.map((i) => parts[i] ?? "").join(".");
      },
    }),
  );

/** Truncates, appends or inserts characters (base64url or not). */
const textEdit: fc.Arbitrary<Mutation> = fc
  .record({
    kind: fc.constantFrom("truncate", "append", "insert", "delete"),
    position: fc.nat(),
    text: fc.string({ minLength: 1, maxLength: 4 }),
  })
  .map(({ kind, position, text }) =>
    described({
      label: `${kind} ${JSON.stringify(text)} at ${position}`,
      apply: (token) => {
        const at = position % token.length;
        if (kind === "truncate") return token.slice(0, Math.max(1, at));
        if (kind === "append") return token + text;
        if (kind === "insert") return token.slice(0, at) + text + token.slice(at);
        return token.slice(0, at) + token.slice(at + 1);
      },
    }),
  );

/** Replaces the protected header (keeping payload and signature, or re-signing with a non-ES256 scheme). */
const headerSwap: fc.Arbitrary<Mutation> = fc
  .record({
    alg: fc.constantFrom(
      "none",
      "None",
      "NONE",
      "HS256",
      "HS384",
      "HS512",
      "ES384",
      "ES512",
      "RS256",
      "PS256",
      "EdDSA",
      "es256",
      "ES256 ",
      "",
    ),
    typ: fc.constantFrom("at+jwt", "JWT", "application/at+jwt", undefined),
    kid: fc.constantFrom("key-1", "key-2", undefined),
    signature: fc.constantFrom("keep", "empty", "hmac-public-jwk", "hmac-x", "rsa"),
  })
  .map(({ alg, typ, kid, signature }) =>
    described({
      label: `header alg=${JSON.stringify(alg)} typ=${typ} kid=${kid} signature=${signature}`,
      apply: (token) => {
        const [, payload, original] = segments(token);
        const header: Record<string, unknown> = { alg };
        if (typ !== undefined) header.typ = typ;
        if (kid !== undefined) header.kid = kid;
        const input = `${b64url(header)}.${payload}`;
        let sig: string;
        if (signature === "keep") sig = original;
        else if (signature === "empty") sig = "";
        else if (signature === "rsa") {
          sig = sign("sha256", Buffer.from(input), rsaKey).toString("base64url");
        } else {
          // The classic confusion: HMAC keyed with the public key (RFC 8725 §2.1).
          const secret =
            signature === "hmac-public-jwk" ? JSON.stringify(key.publicJwk) : String(key.publicJwk.x);
          sig = createHmac("sha256", secret).update(input).digest("base64url");
        }
        return `${input}.${sig}`;
      },
    }),
  );

/** Changes claims (widening or retargeting) and keeps the original signature, or re-signs with another key. */
const claimTamper: fc.Arbitrary<Mutation> = fc
  .record({
    claim: fc.constantFrom("scope", "aud", "exp", "sub", "approval_id", "client_id", "iss", "extra"),
    value: fc.oneof(fc.string(), fc.integer(), fc.constant("crm:read crm:write crm:delete admin")),
    resign: fc.constantFrom("keep", "attacker", "attacker-jwk-header"),
  })
  .map(({ claim, value, resign }) =>
    described({
      label: `set ${claim}=${JSON.stringify(value)} (${resign})`,
      apply: (token) => {
        const [header, payload, sig] = segments(token);
        const claims = decodeJson(payload);
        claims[claim] = claim === "exp" ? Number(claims.exp) + 1 + Math.abs(Number(value) || 1) : value;
        if (resign === "keep") return `${header}.${b64url(claims)}.${sig}`;
        const head: Record<string, unknown> = { alg: "ES256", typ: "at+jwt", kid: "key-1" };
        if (resign === "attacker-jwk-header") head.jwk = attacker.publicJwk;
        return rawToken(head, claims, attacker);
      },
    }),
  );

const mutation = fc.oneof(bitFlip, byteFlip, segmentShuffle, textEdit, headerSwap, claimTamper);

/** What the token's claims may be: random but valid at the frozen clock. */
const claimsArb = fc.record({
  scope: fc.subarray(["crm:read", "crm:write", "crm:delete"], { minLength: 1 }).map((s) => s.join(" ")),
  sub: fc.string({ minLength: 1, maxLength: 40 }),
  approval_id: fc.string({ minLength: 1, maxLength: 40 }),
  age: fc.integer({ min: 0, max: 200 }),
});

/** Whether `mutant` is `token` with only the signature segment spelled differently (same bytes). */
function sameSignatureBytes(token: string, mutant: string): boolean {
  const [h, p, sig] = segments(token);
  const parts = mutant.split(".");
  return (
    parts.length === 3 &&
    parts[0] === h &&
    parts[1] === p &&
    /^[A-Za-z0-9_-]*$/.test(parts[2] ?? "") &&
    Buffer.from(parts[2] ?? "", "base64url").equals(Buffer.from(sig, "base64url"))
  );
}

describe("property: the verifier never accepts a mutated token", () => {
  test("mutants of valid tokens are refused with 401 invalid_token; the originals verify", async () => {
    let checked = 0;
    await fc.assert(
      fc.asyncProperty(
        claimsArb,
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        async (c, mutations) => {
          const now = NOW_MS / 1000;
          const token = await mintToken(
            key,
            accessTokenClaims(now - c.age, { scope: c.scope, sub: c.sub, approval_id: c.approval_id }),
          );
          const original = await verify(token);
          assert.equal(original.ok, true, JSON.stringify(original));
          let mutant = token;
          for (const m of mutations) mutant = m.apply(mutant);
          if (mutant === token) return;
          // Spaces around the token are the header's, not the credential's (RFC 6750 §2.1: "Bearer"
          // 1*SP b64token; RFC 9110 §5.5: no leading or trailing whitespace in a field value), so a
          // mutant that only adds them presents the same token, which the verifier rightly accepts.
          if (/^ | $/.test(mutant) && mutant.trim() === token) return;
          const result = await verify(mutant);
          checked += 1;
          assert.equal(
            result.ok,
            false,
            `accepted a mutant (${mutations.map((m) => m.label).join("; ")}): ${mutant}`,
          );
          if (!result.ok) {
            assert.equal(
              result.status,
              401,
              `${result.reason} for ${mutations.map((m) => m.label).join("; ")}`,
            );
            assert.equal(result.error, "invalid_token");
          }
        },
      ),
      propertyRuns(200, 2000),
    );
    assert.ok(checked > 0);
  });

  test("a signature segment with non-canonical trailing bits (same bytes, another token string) is refused", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW_MS / 1000));
    const last = ALPHABET.indexOf(token.at(-1) ?? "A");
    // An ES256 signature is 64 bytes = 86 base64url characters: the last character's low 4 bits are padding.
    const mutant = token.slice(0, -1) + ALPHABET[last ^ 1];
    assert.notEqual(mutant, token);
    assert.ok(sameSignatureBytes(token, mutant));
    const result = await verify(mutant);
    assert.equal(result.ok, false, "the verifier accepted a re-spelled signature");
    if (!result.ok) {
      assert.equal(result.status, 401);
      assert.equal(result.error, "invalid_token");
      assert.equal(result.reason, "invalid_signature");
    }
  });

  test("a payload character re-spelled outside latin1 (same low byte) is refused, also once the header is known", async () => {
    const token = await mintToken(key, accessTokenClaims(NOW_MS / 1000));
    const first = await verify(token); // the header is now known to the verifier
    assert.equal(first.ok, true);
    const [header, payload] = segments(token);
    for (const position of [0, 5, payload.length - 1]) {
      const at = header.length + 1 + position;
      const mutant =
        token.slice(0, at) + String.fromCharCode(token.charCodeAt(at) + 0x100) + token.slice(at + 1);
      assert.equal(Buffer.from(mutant, "latin1").equals(Buffer.from(token, "latin1")), true);
      const result = await verify(mutant);
      assert.equal(result.ok, false, `accepted a re-spelled payload at ${position}`);
      if (!result.ok) {
        assert.equal(result.status, 401);
        assert.equal(result.error, "invalid_token");
        assert.equal(result.reason, "malformed_token");
      }
    }
  });
});
