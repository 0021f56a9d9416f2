import { constants, createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import type { Reason } from "./reasons.js";
import type { JwsAlgorithm } from "./types.js";

interface AlgorithmSpec {
  /** node:crypto digest, or null for EdDSA. */
  hash: string | null;
  kty: "EC" | "OKP" | "RSA";
  /** EC curve / OKP subtype. */
  crv?: string;
  /** Exact signature length in bytes when fixed. */
  signatureBytes?: number;
  pss?: boolean;
}

/** RFC 7518 §3 / RFC 8037: the asymmetric algorithms we verify. HMAC and `none` are absent on purpose. */
export const ALGORITHMS: Readonly<Record<JwsAlgorithm, AlgorithmSpec>> = {
  ES256: { hash: "sha256", kty: "EC", crv: "P-256", signatureBytes: 64 },
  ES384: { hash: "sha384", kty: "EC", crv: "P-384", signatureBytes: 96 },
  ES512: { hash: "sha512", kty: "EC", crv: "P-521", signatureBytes: 132 },
  EdDSA: { hash: null, kty: "OKP", crv: "Ed25519", signatureBytes: 64 },
  Ed25519: { hash: null, kty: "OKP", crv: "Ed25519", signatureBytes: 64 },
  RS256: { hash: "sha256", kty: "RSA" },
  RS384: { hash: "sha384", kty: "RSA" },
  RS512: { hash: "sha512", kty: "RSA" },
  PS256: { hash: "sha256", kty: "RSA", pss: true },
  PS384: { hash: "sha384", kty: "RSA", pss: true },
  PS512: { hash: "sha512", kty: "RSA", pss: true },
};

export function isSupportedAlgorithm(alg: unknown): alg is JwsAlgorithm {
  return typeof alg === "string" && Object.hasOwn(ALGORITHMS, alg);
}

/** Receives the outcome of a verification run on the thread pool: an error, or whether it verified. */
export type SignatureCallback = (error: Error | null, valid: boolean) => void;

/** Verifies a signature over `data` (the JWS signing input bytes) with one key under one algorithm. */
export interface SignatureCheck {
  /** Verifies synchronously, on the calling thread. */
  inline(data: Buffer, signature: Buffer): boolean;
  /**
   * The same check on libuv's thread pool (`crypto.verify` with a callback). `data` and `signature`
   * must not be changed or reused until `done` has been called. `done` is called synchronously,
   * with `false`, when the signature has the wrong length for the algorithm.
   */
  threadpool(data: Buffer, signature: Buffer, done: SignatureCallback): void;
}

const RSA_MIN_MODULUS_BITS = 2048;

/**
 * Builds a signature check for `key` under `alg`, or returns undefined when the key cannot be used
 * with that algorithm (wrong type or curve, RSA below 2048 bits).
 */
export function signatureCheck(key: KeyObject, alg: JwsAlgorithm): SignatureCheck | undefined {
  const spec = ALGORITHMS[alg];
  if (key.type !== "public") return undefined;
  const kind = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (spec.kty === "EC") {
    const curve = { "P-256": "prime256v1", "P-384": "secp384r1", "P-521": "secp521r1" }[spec.crv as string];
    if (kind !== "ec" || details?.namedCurve !== curve) return undefined;
    const hash = spec.hash as string;
    const length = spec.signatureBytes as number;
    const options = { key, dsaEncoding: "ieee-p1363" as const };
    return {
      inline: (data, signature) =>
        signature.length === length && cryptoVerify(hash, data, options, signature),
      threadpool(data, signature, done) {
        if (signature.length !== length) done(null, false);
        else cryptoVerify(hash, data, options, signature, done);
      },
    };
  }
  if (spec.kty === "OKP") {
    if (kind !== "ed25519") return undefined;
    return {
      inline: (data, signature) => signature.length === 64 && cryptoVerify(null, data, key, signature),
      threadpool(data, signature, done) {
        if (signature.length !== 64) done(null, false);
        else cryptoVerify(null, data, key, signature, done);
      },
    };
  }
  if (kind !== "rsa" || (details?.modulusLength ?? 0) < RSA_MIN_MODULUS_BITS) return undefined;
  const hash = spec.hash as string;
  const options = spec.pss
    ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
    : { key, padding: constants.RSA_PKCS1_PADDING };
  // RFC 8017 §8.1.2 and §8.2.2, step 1: a signature is exactly k octets (the modulus's length).
  // OpenSSL also accepts one with its leading zero octets left out, which would give a token a second
  // spelling (1 in 256 signatures starts with a zero octet).
  const length = Math.ceil((details?.modulusLength ?? 0) / 8);
  return {
    inline: (data, signature) => signature.length === length && cryptoVerify(hash, data, options, signature),
    threadpool(data, signature, done) {
      if (signature.length !== length) done(null, false);
      else cryptoVerify(hash, data, options, signature, done);
    },
  };
}

/** Imports a public JWK with node:crypto; undefined if it is not a usable public key. */
export function importPublicJwk(jwk: Record<string, unknown>): KeyObject | undefined {
  if ("d" in jwk || "p" in jwk || "k" in jwk) return undefined;
  try {
    const key = createPublicKey({ key: jwk as import("node:crypto").JsonWebKey, format: "jwk" });
    return key.type === "public" ? key : undefined;
  } catch {
    return undefined;
  }
}

/** The base64url alphabet, possibly empty. */
export const BASE64URL = /^[A-Za-z0-9_-]*$/;

const BASE64URL_VALUES = new Map(
  [..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"].map((c, i) => [c, i]),
);

/**
 * True when `segment` (already known to use the base64url alphabet) is the canonical unpadded spelling
 * of its bytes: its length is not 1 mod 4, and the bits of the last character past the final byte are
 * zero (RFC 4648 §3.5). Decoders ignore those bits, so without this check several strings decode alike.
 */
export function isCanonicalBase64url(segment: string): boolean {
  const remainder = segment.length % 4;
  if (remainder === 0) return true;
  if (remainder === 1) return false;
  const last = BASE64URL_VALUES.get(segment.charAt(segment.length - 1)) ?? 0;
  return (last & (remainder === 2 ? 0x0f : 0x03)) === 0;
}

/** base64url alphabet only, three segments; the signature may be empty (so `alg: none` reaches the alg check). */
export const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Header parameters that embed or point at keys: keys come only from the configured JWKS. */
const KEY_HEADERS = ["jwk", "jku", "x5u", "x5c"] as const;

export interface ParsedHeader {
  alg: JwsAlgorithm;
  kid: string | undefined;
}

/** Decodes a base64url segment into a JSON object, or undefined. */
export function decodeJsonObject(segment: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  return value as Record<string, unknown>;
}

/**
 * Header checks in the documented order (gateway-verifier/README.md): shape, alg allow-list,
 * key-bearing headers, `b64`, `crit`, `typ`, `kid`. Returns the parsed header or the refusal reason.
 */
export function checkAccessTokenHeader(
  header: Record<string, unknown>,
  allowed: ReadonlySet<string>,
): ParsedHeader | Reason {
  const alg = header.alg;
  if (typeof alg !== "string" || !allowed.has(alg) || !isSupportedAlgorithm(alg)) return "alg_not_allowed";
  for (const name of KEY_HEADERS) if (name in header) return "forbidden_header";
  if ("b64" in header && header.b64 !== true) return "unencoded_payload";
  if ("crit" in header) return "unsupported_crit";
  const typ = header.typ;
  if (typeof typ !== "string") return "invalid_typ";
  const lower = typ.toLowerCase();
  if (lower !== "at+jwt" && lower !== "application/at+jwt") return "invalid_typ";
  const kid = header.kid;
  if (kid !== undefined && (typeof kid !== "string" || kid.length === 0 || kid.length > 256)) {
    return "invalid_kid";
  }
  return { alg, kid };
}
