import { constants, createPrivateKey, type KeyObject, type SignKeyObjectInput, sign } from "node:crypto";
import type { JWK, JWTPayload } from "jose";
import type { SigningKeyMaterial } from "./signing_keys.js";

/** Signs RFC 9068 JWT access tokens with the current signing key. */
export interface AccessTokenSigner {
  /** `kid` of the key in use. */
  readonly kid: string;
  /** Signs `claims` with header `{alg, typ: "at+jwt", kid}` (RFC 9068 §2.1). */
  sign(claims: JWTPayload): Promise<string>;
}

/** RFC 7518 §3 / RFC 8037 §3.1: the digest and node:crypto options of each supported JWS algorithm. */
function signatureScheme(alg: string, key: KeyObject): { digest: string | null; key: SignKeyObjectInput } {
  switch (alg) {
    case "ES256":
      return { digest: "sha256", key: { key, dsaEncoding: "ieee-p1363" } };
    case "ES384":
      return { digest: "sha384", key: { key, dsaEncoding: "ieee-p1363" } };
    case "PS256":
      return {
        digest: "sha256",
        key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST },
      };
    case "EdDSA":
      return { digest: null, key: { key } };
    default:
      throw new Error(`unsupported signing algorithm ${alg}`);
  }
}

/**
 * Builds a signer over the `current` key for `alg`. The private key is imported once and the protected
 * header encoded once. Signing is node:crypto's one-shot `sign` (synchronous, about 40 µs for ES256):
 * cheaper than a WebCrypto job, which pays a thread-pool hand-off and a promise per token.
 */
export async function createAccessTokenSigner(
  keys: readonly SigningKeyMaterial[],
  alg: string,
): Promise<AccessTokenSigner> {
  const current = keys.find((key) => key.status === "current" && key.alg === alg);
  if (!current) throw new Error(`no current ${alg} signing key`);
  const key = createPrivateKey({ key: current.privateJwk as JWK & { kty: string }, format: "jwk" });
  const scheme = signatureScheme(alg, key);
  const header = Buffer.from(JSON.stringify({ alg, typ: "at+jwt", kid: current.kid })).toString("base64url");
  return {
    kid: current.kid,
    sign: async (claims) => {
      const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
      const signature = sign(scheme.digest, Buffer.from(input), scheme.key);
      return `${input}.${signature.toString("base64url")}`;
    },
  };
}
