/** Why {@link DpopReplayCache.record} did not record a proof. */
export type ReplayRefusal = "dpop_proof_replayed" | "dpop_client_share_exceeded" | "dpop_replay_cache_full";

interface Entry {
  /** Milliseconds since the epoch; the proof is live while `expiresAt >= now`. */
  readonly expiresAt: number;
  /** The `client_id` of the token the proof came with: whose share the entry counts against. */
  readonly clientId: string;
}

/**
 * The per-instance memory of DPoP proof ids (`jkt.jti`, RFC 9449 §11.1), bounded, failing closed.
 *
 * Invariant: an entry is forgotten only once it has expired (its proof would then be refused for its
 * `iat` anyway), so no flood can make a recent proof replayable. Memory stays bounded by refusing
 * instead of evicting:
 *
 * - each `client_id` holds at most `perClient` entries; its further proofs are refused
 *   (`dpop_client_share_exceeded`, 429) until some of its entries expire. The share is per client,
 *   not per key: an agent can bind tokens to as many keys as it likes, not get more client ids.
 * - when the cache holds `capacity` entries, new proofs of any client are refused
 *   (`dpop_replay_cache_full`, 503) until some expire: it takes `capacity / perClient` flooding
 *   clients, and it denies service for at most one proof window, never lets a replay through.
 *
 * Expired entries are dropped from the front of the insertion-ordered map, stopping at the first
 * live one: each entry is deleted once, so a request costs O(1) amortized, never a scan. Proofs are
 * inserted in about expiry order; one live entry at the front keeps expired ones behind it for at
 * most {@link DpopReplayCache.windowMs} (an entry inserted at `t` expires by `t + windowMs`), and
 * those keep counting against their client and the capacity until then (over-remembering is safe).
 */
export class DpopReplayCache {
  readonly #capacity: number;
  readonly #perClient: number;
  /** Proof id → entry, in insertion order. */
  readonly #entries = new Map<string, Entry>();
  /** `client_id` → how many entries it holds; absent at zero. */
  readonly #held = new Map<string, number>();

  /**
   * @param capacity most entries kept.
   * @param perClient most entries one `client_id` may hold (clamped to `capacity`).
   * @param windowMs the longest an entry can live after insertion: proof age + 2 × clock tolerance.
   */
  constructor(
    capacity: number,
    perClient: number,
    readonly windowMs: number,
  ) {
    this.#capacity = Math.max(1, capacity);
    this.#perClient = Math.min(this.#capacity, Math.max(1, perClient));
  }

  /** Entries held (live, or expired behind a live one at the front). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Records proof `id` of `clientId`, live until `expiresAt`. Returns why it was not recorded: a live
   * entry with this id exists (replay), the client holds its full share, or the cache is full.
   */
  record(id: string, clientId: string, expiresAt: number, nowMs: number): ReplayRefusal | undefined {
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt >= nowMs) break;
      this.#forget(key, entry);
    }
    const known = this.#entries.get(id);
    if (known !== undefined) {
      if (known.expiresAt >= nowMs) return "dpop_proof_replayed";
      this.#forget(id, known);
    }
    const held = this.#held.get(clientId) ?? 0;
    if (held >= this.#perClient) return "dpop_client_share_exceeded";
    if (this.#entries.size >= this.#capacity) return "dpop_replay_cache_full";
    this.#entries.set(id, { expiresAt, clientId });
    this.#held.set(clientId, held + 1);
    return undefined;
  }

  #forget(id: string, entry: Entry): void {
    this.#entries.delete(id);
    const held = (this.#held.get(entry.clientId) ?? 1) - 1;
    if (held <= 0) this.#held.delete(entry.clientId);
    else this.#held.set(entry.clientId, held);
  }
}
