import { LRUCache } from "lru-cache";
import type { Approval } from "../db/schema.js";

/** Options of {@link createApprovalCache}. */
export interface ApprovalCacheOptions {
  /** Most approvals kept; the least recently used goes first. Default 10 000. */
  readonly maxEntries?: number;
  /** How long a read is reused, in milliseconds. Default 5 000. */
  readonly ttlMs?: number;
}

/**
 * Recently read **approved** approvals, so that an agent's burst of exchanges under one approval reads
 * it once instead of at every exchange. Safe because an approval's terms (client, resource, subject,
 * scope, expiry, rate limit, budget size) are written once, when it is approved, and never change
 * afterwards; what does change — `status` (revoked, expired) and `tokens_issued` — is re-checked
 * atomically by the budget statement, which also compares the terms the token was decided on, so a
 * stale copy can never mint a token its approval no longer allows. Approvals in any other status are
 * never kept (a pending one may be approved at any moment).
 */
export interface ApprovalCache {
  /** The cached approval, or `read()`'s answer (kept when it is approved). */
  get(id: string, read: () => Promise<Approval | undefined>): Promise<Approval | undefined>;
  /** Forgets an approval (after the budget statement saw it differ). */
  forget(id: string): void;
  readonly size: number;
}

/** Builds an {@link ApprovalCache}. */
export function createApprovalCache(options: ApprovalCacheOptions = {}): ApprovalCache {
  const cache = new LRUCache<string, Approval>({
    max: options.maxEntries ?? 10_000,
    ttl: options.ttlMs ?? 5_000,
  });
  return {
    async get(id, read) {
      const known = cache.get(id);
      if (known !== undefined) return known;
      const approval = await read();
      if (approval?.status === "approved") cache.set(id, approval);
      return approval;
    },
    forget(id) {
      cache.delete(id);
    },
    get size() {
      return cache.size;
    },
  };
}
