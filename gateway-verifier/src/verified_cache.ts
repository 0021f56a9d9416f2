import { hash } from "node:crypto";
import type { VerifiedToken } from "./access_token_claims.js";
import { deepFreeze } from "./deep_freeze.js";
import { LruCache } from "./lru.js";

/**
 * The verified-token cache: tokens whose signature and claims passed, keyed by the SHA-256 of the
 * token, each kept until its `deadlineMs` (min(exp, iat + maxTokenAge) + tolerance), at most
 * `maxEntries` (least recently used first out). A hit skips the signature and claims checks, never the
 * per-request ones. Emptied when a JWKS refresh removes a key.
 */
export class VerifiedTokenCache {
  readonly #entries: LruCache<string, VerifiedToken>;

  constructor(maxEntries: number) {
    this.#entries = new LruCache(maxEntries);
  }

  /** The cache key of `token`: its SHA-256, base64 (the token itself is never kept). */
  static key(token: string): string {
    return hash("sha256", token, "base64");
  }

  /** The token cached under `key` if it is still valid at `nowMs`; an expired entry is dropped. */
  get(key: string, nowMs: number): VerifiedToken | undefined {
    const hit = this.#entries.get(key);
    if (hit === undefined) return undefined;
    if (nowMs < hit.deadlineMs) return hit;
    this.#entries.delete(key);
    return undefined;
  }

  /** Keeps `token` under `key`. Its result is shared by every request presenting the token: it is deeply frozen first. */
  set(key: string, token: VerifiedToken): void {
    deepFreeze(token.success);
    this.#entries.set(key, token);
  }

  clear(): void {
    this.#entries.clear();
  }
}
