import { hash } from "node:crypto";
import type { TokenUsage, VerifiedIdentity } from "../identity/trusted_issuers.js";

/** Options of {@link createVerifiedTokenCache}. */
export interface VerifiedTokenCacheOptions {
  /** Most entries kept; the least recently used goes first. Default 10 000. */
  readonly maxEntries?: number;
  /**
   * Longest time a verification is reused, in milliseconds. Default 60 000. Bounds how long a token
   * signed by a key its issuer has since withdrawn stays accepted: well under the 10 minutes the
   * issuers' JWKS themselves are cached for, so the cache adds no exposure of its own.
   */
  readonly maxAgeMs?: number;
  /** Clock tolerance on `exp`, in seconds: the same as the identity verifier's. Default 30. */
  readonly clockToleranceSeconds?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly now?: () => number;
}

/**
 * Successful verifications of identity JWTs (subject and actor tokens), keyed by usage and the SHA-256
 * of the exact token bytes. A workload presents the same subject token many times until it expires
 * (docs/reference.md#token-exchange); a hit skips the signature check and claim checks that passed moments ago for the same
 * bytes. An entry is reused only until the token's `exp` (with the verifier's tolerance) and at most
 * `maxAgeMs`; refusals are never cached. Everything after identity verification (approval, policy, rate
 * limits, budget) still runs on every exchange.
 */
export interface VerifiedTokenCache {
  /** The cached verification, or the result of `verify` (cached when it succeeds). */
  verify(
    token: string,
    usage: TokenUsage,
    verify: () => Promise<VerifiedIdentity>,
  ): Promise<VerifiedIdentity>;
  readonly size: number;
}

interface Entry {
  readonly identity: VerifiedIdentity;
  /** Epoch ms after which the entry is not used. */
  readonly until: number;
}

export function createVerifiedTokenCache(options: VerifiedTokenCacheOptions = {}): VerifiedTokenCache {
  const maxEntries = options.maxEntries ?? 10_000;
  const maxAgeMs = options.maxAgeMs ?? 60_000;
  const toleranceMs = (options.clockToleranceSeconds ?? 30) * 1000;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();

  return {
    get size() {
      return entries.size;
    },
    async verify(token, usage, verify) {
      const key = `${usage}:${hash("sha256", token, "base64url")}`;
      const cached = entries.get(key);
      const at = now();
      if (cached !== undefined) {
        entries.delete(key);
        if (at < cached.until) {
          entries.set(key, cached);
          return cached.identity;
        }
      }
      const identity = await verify();
      const exp = identity.claims.exp;
      // Only tokens with a numeric exp are cached (the verifier requires one).
      if (typeof exp === "number" && Number.isFinite(exp)) {
        // An age bound of the issuer entry (max_token_age_seconds) ends reuse too (it includes the tolerance).
        const aged =
          identity.acceptUntil === undefined ? Number.POSITIVE_INFINITY : identity.acceptUntil * 1000;
        const until = Math.min(at + maxAgeMs, exp * 1000 + toleranceMs, aged);
        if (until > at) {
          entries.set(key, { identity, until });
          if (entries.size > maxEntries) {
            const oldest = entries.keys().next().value;
            if (oldest !== undefined) entries.delete(oldest);
          }
        }
      }
      return identity;
    },
  };
}
