import { importJWK, type JWTPayload, SignJWT } from "jose";
import type { SigningKeyMaterial } from "./signing_keys.js";

/** Signs RFC 9068 JWT access tokens with the current signing key. */
export interface AccessTokenSigner {
  /** `kid` of the key in use. */
  readonly kid: string;
  /** Signs `claims` with header `{alg, typ: "at+jwt", kid}` (RFC 9068 §2.1). */
  sign(claims: JWTPayload): Promise<string>;
}

/** Builds a signer over the `current` key for `alg`. The private key is imported once. */
export async function createAccessTokenSigner(
  keys: readonly SigningKeyMaterial[],
  alg: string,
): Promise<AccessTokenSigner> {
  const current = keys.find((key) => key.status === "current" && key.alg === alg);
  if (!current) throw new Error(`no current ${alg} signing key`);
  const key = await importJWK(current.privateJwk, alg);
  const header = { alg, typ: "at+jwt", kid: current.kid };
  return {
    kid: current.kid,
    sign: (claims) => new SignJWT(claims).setProtectedHeader(header).sign(key),
  };
}
