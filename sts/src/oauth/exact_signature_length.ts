import { KeyObject } from "node:crypto";
import { type JWTVerifyGetKey, errors as joseErrors } from "jose";

/** The RSA modulus length of `key` in bits, or undefined when it is no RSA key. */
function rsaModulusBits(key: unknown): number | undefined {
  if (key instanceof KeyObject) {
    const type = key.asymmetricKeyType;
    return type === "rsa" || type === "rsa-pss" ? key.asymmetricKeyDetails?.modulusLength : undefined;
  }
  // A Web Crypto key (what jose 6 resolves JWKs to): RSA ones name their modulus length.
  if (typeof key === "object" && key !== null && "algorithm" in key) {
    const algorithm = (key as { algorithm?: { name?: unknown; modulusLength?: unknown } }).algorithm;
    const rsa = typeof algorithm?.name === "string" && algorithm.name.startsWith("RSA");
    return rsa && typeof algorithm?.modulusLength === "number" ? algorithm.modulusLength : undefined;
  }
  return undefined;
}

/**
 * Wraps a jose key resolver so that a token signed with an RSA key must carry a signature of exactly
 * the modulus's length (RFC 8017 §8.1.2 and §8.2.2, step 1). OpenSSL, under jose, also accepts an
 * RSA-PSS signature with its leading zero octets left out (1 signature in 256 starts with one), which
 * gives a token a second spelling. Other key types are passed through: their signature lengths are
 * fixed, and checked by the verification itself.
 */
export function exactSignatureLength(keys: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    const key = await keys(header, token);
    const bits = rsaModulusBits(key);
    if (bits !== undefined) {
      // The unpadded base64url length of k octets is ceil(4k / 3).
      const expected = Math.ceil((4 * Math.ceil(bits / 8)) / 3);
      if (token.signature.length !== expected) throw new joseErrors.JWSSignatureVerificationFailed();
    }
    return key;
  };
}
