import { createLocalJWKSet, type JSONWebKeySet, type JWTPayload, jwtVerify } from "jose";
import { exactSignatureLength } from "../oauth/exact_signature_length.js";
import type { SigningKeyMaterial } from "./signing_keys.js";

/** Verifies access tokens this STS issued (RFC 9068 `at+jwt`), against its own published keys. */
export interface OwnTokenVerifier {
  /**
   * Verifies signature, `typ`, `iss`, `aud`, `exp`. Throws jose errors on any failure.
   * @param audience - the expected `aud` (a resource indicator).
   */
  verify(token: string, options: { audience?: string }): Promise<JWTPayload>;
}

/** Builds the verifier from the keys loaded at start (next, current and previous). */
export function createOwnTokenVerifier(
  issuer: string,
  keys: readonly SigningKeyMaterial[],
): OwnTokenVerifier {
  // PS256 keys (keys.signing_alg) need the exact-length check: see exactSignatureLength.
  const jwks = exactSignatureLength(
    createLocalJWKSet({ keys: keys.map((key) => key.publicJwk) } as JSONWebKeySet),
  );
  const algorithms = [...new Set(keys.map((key) => key.alg))];
  return {
    async verify(token, { audience }) {
      const { payload } = await jwtVerify(token, jwks, {
        issuer,
        typ: "at+jwt",
        algorithms,
        clockTolerance: 5,
        requiredClaims: ["exp", "iat", "jti", "client_id"],
        ...(audience ? { audience } : {}),
      });
      return payload;
    },
  };
}
