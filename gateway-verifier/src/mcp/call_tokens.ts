/**
 * Where the MCP gateway remembers the tokens whose one bound `tools/call` was made, by `jti`, until
 * they expire: a token bound to a call is consumed by that call.
 */
export interface CallTokenStore {
  /**
   * Records `jti` until `expiresAtMs` (milliseconds since the epoch). Resolves `true` when it was not
   * recorded yet (this is the first use), `false` when it was (a replay). Rejects when it cannot tell:
   * the gateway then refuses the call (fail closed).
   */
  consume(jti: string, expiresAtMs: number): Promise<boolean>;
}

/** Options of {@link createMemoryCallTokenStore}. */
export interface MemoryCallTokenStoreOptions {
  /** Most unexpired tokens remembered; when full, new calls are refused (503). Default 10,000. */
  maxEntries?: number;
  /** Clock in milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * An in-memory {@link CallTokenStore}, per gateway instance. Bounded: expired entries are dropped when
 * it is full, and when every entry is still live it refuses rather than forget one (forgetting a live
 * token would let it be replayed). Several gateway instances need {@link createRedisCallTokenStore}.
 */
export function createMemoryCallTokenStore(options: MemoryCallTokenStoreOptions = {}): CallTokenStore {
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  const used = new Map<string, number>();

  function prune(at: number): void {
    for (const [jti, expiresAt] of used) if (expiresAt <= at) used.delete(jti);
  }

  return {
    async consume(jti, expiresAtMs) {
      const at = now();
      const known = used.get(jti);
      if (known !== undefined && known > at) return false;
      if (used.size >= maxEntries) prune(at);
      if (used.size >= maxEntries) throw new Error("call token store is full");
      used.set(jti, expiresAtMs);
      return true;
    },
  };
}

/** The one ioredis method the Redis store uses (`SET key value PX ms NX`). */
export interface RedisSetClient {
  set(key: string, value: string, px: "PX", milliseconds: number, nx: "NX"): Promise<string | null>;
}

/** Options of {@link createRedisCallTokenStore}. */
export interface RedisCallTokenStoreOptions {
  /** An `ioredis` client you create and own (the store never closes it). */
  client: RedisSetClient;
  /** Prefix of the Redis keys. Default `"countersign:call"`. */
  keyPrefix?: string;
  /** Clock in milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * A {@link CallTokenStore} on Redis, shared by several gateway instances: an atomic
 * `SET <prefix>:<jti> 1 PX <ms until expiry> NX` per call. Redis errors reject, so the call is refused.
 */
export function createRedisCallTokenStore(options: RedisCallTokenStoreOptions): CallTokenStore {
  const prefix = options.keyPrefix ?? "countersign:call";
  const now = options.now ?? Date.now;
  return {
    async consume(jti, expiresAtMs) {
      const ttl = Math.max(1000, Math.ceil(expiresAtMs - now()));
      return (await options.client.set(`${prefix}:${jti}`, "1", "PX", ttl, "NX")) === "OK";
    },
  };
}
