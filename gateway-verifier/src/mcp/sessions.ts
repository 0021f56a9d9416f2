import { LruCache } from "../lru.js";

/** Who opened a session: the agent (`client_id`) and the subject it acts for (`sub`). */
export interface SessionOwner {
  clientId: string;
  subject: string;
}

interface Binding extends SessionOwner {
  expiresAtMs: number;
}

/** MCP 2025-03-26..2025-11-25: a session ID is 1..n visible ASCII characters (0x21–0x7E). */
const SESSION_ID = /^[\x21-\x7E]{1,256}$/;

/** Options of {@link SessionBindings}. */
export interface SessionBindingOptions {
  /** Most sessions remembered; past it the least recently used is forgotten. Default 10,000. */
  maxEntries?: number;
  /** A session unused for this long, in milliseconds, is forgotten. Default 3,600,000 (1 h). */
  idleTtlMs?: number;
  /**
   * Most sessions remembered per client (`client_id`); past it that client's own least recently used
   * session is forgotten, so that one agent cannot evict the others' sessions. Default 100.
   */
  maxPerClient?: number;
}

/**
 * Binds `Mcp-Session-Id` values to the client and subject whose request opened them, so that another
 * agent that learns a session ID cannot ride on it (MCP security best practices: session hijacking).
 * Bounded (LRU, in all and per client) and expiring (sliding idle TTL). A forgotten session answers
 * 404, which MCP clients treat as "start a new session". Per gateway instance: several instances need
 * sticky routing.
 */
export class SessionBindings {
  readonly #bindings: LruCache<string, Binding>;
  /** Each client's session IDs, least recently used first (a `Set` keeps insertion order). */
  readonly #byClient = new Map<string, Set<string>>();
  readonly #idleTtlMs: number;
  readonly #maxPerClient: number;
  readonly #now: () => number;

  constructor(options: SessionBindingOptions = {}, now: () => number = Date.now) {
    this.#bindings = new LruCache(options.maxEntries ?? 10_000);
    this.#idleTtlMs = options.idleTtlMs ?? 3_600_000;
    this.#maxPerClient = Math.max(1, Math.floor(options.maxPerClient ?? 100));
    this.#now = now;
  }

  /**
   * Records that `owner` opened `sessionId` (ignored when the ID is malformed). Past `maxPerClient`
   * the client's own least recently used session is forgotten; past `maxEntries`, the least recently
   * used of all.
   */
  bind(sessionId: string, owner: SessionOwner): void {
    if (!SESSION_ID.test(sessionId)) return;
    this.forget(sessionId);
    const full = this.#byClient.get(owner.clientId);
    if (full !== undefined && full.size >= this.#maxPerClient) {
      const oldest = full.values().next();
      if (oldest.done !== true) this.forget(oldest.value);
    }
    let owned = this.#byClient.get(owner.clientId);
    if (owned === undefined) {
      owned = new Set();
      this.#byClient.set(owner.clientId, owned);
    }
    owned.add(sessionId);
    const evicted = this.#bindings.set(sessionId, { ...owner, expiresAtMs: this.#now() + this.#idleTtlMs });
    if (evicted !== undefined) this.#unlist(evicted[0], evicted[1].clientId);
  }

  /** Whether `owner` may use `sessionId`; a successful check extends the idle TTL. */
  check(
    sessionId: string,
    owner: SessionOwner,
  ): "ok" | "session_not_found" | "session_client_mismatch" | "session_subject_mismatch" {
    if (!SESSION_ID.test(sessionId)) return "session_not_found";
    const binding = this.#bindings.get(sessionId);
    const now = this.#now();
    if (binding === undefined || binding.expiresAtMs <= now) {
      if (binding !== undefined) this.forget(sessionId);
      return "session_not_found";
    }
    if (binding.clientId !== owner.clientId) return "session_client_mismatch";
    if (binding.subject !== owner.subject) return "session_subject_mismatch";
    binding.expiresAtMs = now + this.#idleTtlMs;
    const owned = this.#byClient.get(binding.clientId);
    if (owned !== undefined) {
      // Most recently used last: re-inserting is O(1).
      owned.delete(sessionId);
      owned.add(sessionId);
    }
    return "ok";
  }

  /** Forgets `sessionId` (after a successful DELETE, or when evicted). */
  forget(sessionId: string): void {
    const binding = this.#bindings.get(sessionId);
    if (binding === undefined) return;
    this.#bindings.delete(sessionId);
    this.#unlist(sessionId, binding.clientId);
  }

  /** Sessions currently remembered for `clientId`. */
  sizeOf(clientId: string): number {
    return this.#byClient.get(clientId)?.size ?? 0;
  }

  #unlist(sessionId: string, clientId: string): void {
    const owned = this.#byClient.get(clientId);
    if (owned === undefined) return;
    owned.delete(sessionId);
    if (owned.size === 0) this.#byClient.delete(clientId);
  }

  /** Sessions currently remembered (expired ones included until touched or evicted). */
  get size(): number {
    return this.#bindings.size;
  }
}
