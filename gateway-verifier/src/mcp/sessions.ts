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
}

/**
 * Binds `Mcp-Session-Id` values to the client and subject whose request opened them, so that another
 * agent that learns a session ID cannot ride on it (MCP security best practices: session hijacking).
 * Bounded (LRU) and expiring (sliding idle TTL). A forgotten session answers 404, which MCP clients
 * treat as "start a new session". Per gateway instance: several instances need sticky routing.
 */
export class SessionBindings {
  readonly #bindings: LruCache<string, Binding>;
  readonly #idleTtlMs: number;
  readonly #now: () => number;

  constructor(options: SessionBindingOptions = {}, now: () => number = Date.now) {
    this.#bindings = new LruCache(options.maxEntries ?? 10_000);
    this.#idleTtlMs = options.idleTtlMs ?? 3_600_000;
    this.#now = now;
  }

  /** Records that `owner` opened `sessionId` (ignored when the ID is malformed). */
  bind(sessionId: string, owner: SessionOwner): void {
    if (!SESSION_ID.test(sessionId)) return;
    this.#bindings.set(sessionId, { ...owner, expiresAtMs: this.#now() + this.#idleTtlMs });
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
      if (binding !== undefined) this.#bindings.delete(sessionId);
      return "session_not_found";
    }
    if (binding.clientId !== owner.clientId) return "session_client_mismatch";
    if (binding.subject !== owner.subject) return "session_subject_mismatch";
    binding.expiresAtMs = now + this.#idleTtlMs;
    return "ok";
  }

  /** Forgets `sessionId` (after a successful DELETE). */
  forget(sessionId: string): void {
    this.#bindings.delete(sessionId);
  }

  /** Sessions currently remembered (expired ones included until touched or evicted). */
  get size(): number {
    return this.#bindings.size;
  }
}
