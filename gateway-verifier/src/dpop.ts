import { hash, timingSafeEqual } from "node:crypto";
import { DpopReplayCache } from "./dpop_replay_cache.js";
import {
  COMPACT_JWS,
  decodeJsonObject,
  importPublicJwk,
  isSupportedAlgorithm,
  signatureCheck,
} from "./jws.js";
import { LruCache } from "./lru.js";
import type { Reason } from "./reasons.js";
import type { DpopOptions, JwsAlgorithm } from "./types.js";

/** Default DPoP proof algorithms: asymmetric only (RFC 9449 §4.2). */
export const DEFAULT_DPOP_ALGORITHMS: readonly JwsAlgorithm[] = [
  "ES256",
  "ES384",
  "EdDSA",
  "Ed25519",
  "PS256",
  "RS256",
];

const MAX_PROOF_LENGTH = 8192;
const MAX_JTI_LENGTH = 256;

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of a public JWK, or undefined if not computable. */
export function jwkThumbprint(jwk: Record<string, unknown>): string | undefined {
  const { kty } = jwk;
  let members: Record<string, unknown>;
  if (kty === "EC") members = { crv: jwk.crv, kty, x: jwk.x, y: jwk.y };
  else if (kty === "OKP") members = { crv: jwk.crv, kty, x: jwk.x };
  else if (kty === "RSA") members = { e: jwk.e, kty, n: jwk.n };
  else return undefined;
  for (const value of Object.values(members)) if (typeof value !== "string") return undefined;
  return hash("sha256", JSON.stringify(members), "base64url");
}

/** Constant-time equality of two ASCII strings. */
export function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}

/** `scheme://host[:port]/path` with query and fragment removed (RFC 9449 §4.3 step 9). */
export function normalizeHtu(value: string): string | undefined {
  if (!URL.canParse(value)) return undefined;
  const url = new URL(value);
  return `${url.protocol}//${url.host}${url.pathname}`;
}

export interface DpopCheckInput {
  proof: string | undefined;
  accessToken: string;
  jkt: string;
  /** The token's `client_id`: whose share of the replay cache the proof counts against. */
  clientId: string;
  method: string;
  url: string | undefined;
  nowMs: number;
}

/**
 * Checks a DPoP proof for a resource request (RFC 9449 §4.3 and §7.1): `typ`, `alg`, `jwk`,
 * signature, `jkt` binding, `htm`, `htu`, `iat` window, `ath`, then `jti` replay, recorded in a
 * {@link DpopReplayCache} that refuses rather than forgets a live proof (fail closed).
 */
export class DpopChecker {
  readonly #algorithms: ReadonlySet<string>;
  readonly #maxAgeMs: number;
  readonly #toleranceMs: number;
  /** `jkt.jti` of every live proof accepted. */
  readonly #seen: DpopReplayCache;
  readonly #keys = new LruCache<string, ReturnType<typeof importPublicJwk>>(1024);

  constructor(options: DpopOptions, clockToleranceSeconds: number) {
    this.#algorithms = new Set(options.algorithms ?? DEFAULT_DPOP_ALGORITHMS);
    for (const alg of this.#algorithms) {
      if (!isSupportedAlgorithm(alg)) throw new TypeError(`dpop.algorithms: unsupported algorithm ${alg}`);
    }
    this.#maxAgeMs = (options.maxProofAgeSeconds ?? 60) * 1000;
    this.#toleranceMs = clockToleranceSeconds * 1000;
    const capacity = options.replayCacheSize ?? 100_000;
    const perClient = options.replayCachePerClient ?? Math.floor(capacity / 10);
    this.#seen = new DpopReplayCache(capacity, perClient, this.#maxAgeMs + 2 * this.#toleranceMs);
  }

  /**
   * The `Retry-After` (seconds) of a `dpop_client_share_exceeded` refusal: by then every proof the
   * client had recorded has expired and been dropped.
   */
  get shareRetryAfterSeconds(): number {
    return Math.floor(this.#seen.windowMs / 1000) + 1;
  }

  get algorithms(): readonly string[] {
    return [...this.#algorithms];
  }

  check(input: DpopCheckInput): Reason | undefined {
    const { proof } = input;
    if (proof === undefined || proof === "") return "dpop_proof_missing";
    if (proof.length > MAX_PROOF_LENGTH || !COMPACT_JWS.test(proof)) return "dpop_proof_invalid";
    const firstDot = proof.indexOf(".");
    const lastDot = proof.lastIndexOf(".");
    const header = decodeJsonObject(proof.slice(0, firstDot));
    if (header === undefined) return "dpop_proof_invalid";
    if (typeof header.typ !== "string" || header.typ.toLowerCase() !== "dpop+jwt")
      return "dpop_proof_invalid";
    const alg = header.alg;
    if (typeof alg !== "string" || !this.#algorithms.has(alg) || !isSupportedAlgorithm(alg)) {
      return "dpop_proof_invalid";
    }
    if ("crit" in header || ("b64" in header && header.b64 !== true)) return "dpop_proof_invalid";
    const jwk = header.jwk;
    if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) return "dpop_proof_invalid";
    const thumbprint = jwkThumbprint(jwk as Record<string, unknown>);
    if (thumbprint === undefined) return "dpop_proof_invalid";
    let key = this.#keys.get(thumbprint);
    if (key === undefined) {
      key = importPublicJwk(jwk as Record<string, unknown>);
      if (key === undefined) return "dpop_proof_invalid";
      this.#keys.set(thumbprint, key);
    }
    const verifySignature = signatureCheck(key, alg);
    if (verifySignature === undefined) return "dpop_proof_invalid";
    const signingInput = Buffer.from(proof.slice(0, lastDot), "latin1");
    if (!verifySignature.inline(signingInput, Buffer.from(proof.slice(lastDot + 1), "base64url"))) {
      return "dpop_proof_invalid";
    }
    if (!safeEqual(thumbprint, input.jkt)) return "dpop_key_mismatch";
    const claims = decodeJsonObject(proof.slice(firstDot + 1, lastDot));
    if (claims === undefined) return "dpop_proof_invalid";
    const { htm, htu, iat, jti, ath } = claims;
    if (typeof jti !== "string" || jti.length === 0 || jti.length > MAX_JTI_LENGTH)
      return "dpop_proof_invalid";
    if (typeof htm !== "string" || htm !== input.method) return "dpop_htm_mismatch";
    const requestUrl = input.url === undefined ? undefined : normalizeHtu(input.url);
    if (typeof htu !== "string" || requestUrl === undefined || normalizeHtu(htu) !== requestUrl) {
      return "dpop_htu_mismatch";
    }
    if (typeof iat !== "number" || !Number.isFinite(iat)) return "dpop_iat_invalid";
    const iatMs = iat * 1000;
    if (iatMs > input.nowMs + this.#toleranceMs || iatMs < input.nowMs - this.#maxAgeMs - this.#toleranceMs) {
      return "dpop_iat_invalid";
    }
    if (typeof ath !== "string" || !safeEqual(ath, hash("sha256", input.accessToken, "base64url"))) {
      return "dpop_ath_mismatch";
    }
    return this.#seen.record(
      `${thumbprint}.${jti}`,
      input.clientId,
      iatMs + this.#maxAgeMs + this.#toleranceMs,
      input.nowMs,
    );
  }
}
