import type { JSONWebKeySet } from "jose";
import type { VerifierBackgroundError } from "./background_error.js";
import type { Reason, VerifyErrorCode, VerifyErrorStatus } from "./reasons.js";
import type { VerifierTracer } from "./tracing.js";

/** Asymmetric JWS algorithms the verifier can check. `none` and HMAC (`HS*`) are deliberately absent. */
export type JwsAlgorithm =
  | "ES256"
  | "ES384"
  | "ES512"
  | "EdDSA"
  | "Ed25519"
  | "RS256"
  | "RS384"
  | "RS512"
  | "PS256"
  | "PS384"
  | "PS512";

/** A rate and burst limit, as a token bucket. */
export interface RateLimit {
  /** Sustained rate, in requests per second (may be fractional, must be > 0). */
  perSecond: number;
  /** Bucket capacity: requests allowed at once after an idle period (integer ≥ 1). */
  burst: number;
}

/** The outcome of one rate-limit consumption. */
export interface RateDecision {
  /** Whether the request may proceed. */
  allowed: boolean;
  /** When refused: seconds (integer ≥ 1) until a request would be allowed again. */
  retryAfterSeconds: number;
}

/**
 * Where token buckets live. The in-memory store is the default; `createRedisRateLimitStore` shares
 * limits across gateway instances. A store that throws or rejects makes the verifier fail closed
 * (503 `rate_limit_unavailable`).
 */
export interface RateLimitStore {
  /**
   * Take one request from the bucket `key` (a (client_id, approval_id) pair) under `limit`.
   * Must be atomic per key: concurrent calls never allow more than the limit.
   * @param nowMs the verifier's clock, in milliseconds since the epoch.
   */
  consume(key: string, limit: RateLimit, nowMs: number): RateDecision | Promise<RateDecision>;
  /** Release timers or connections the store owns (not the caller's Redis client). */
  close?(): void;
}

/** Revocation feed options (docs/reference.md#the-revocation-feed). */
export interface RevocationOptions {
  /** The feed, e.g. `http://127.0.0.1:8080/revocations`; polled with `?after=<cursor>`. */
  url: string;
  /** Poll interval in milliseconds. Default 5000. A revoked approval is refused from the next poll on. */
  intervalMs?: number;
  /**
   * Also listen to the push variant, `<url>/stream` (server-sent events carrying the same revocation
   * objects), so revocations apply within milliseconds; polling still runs and decides freshness.
   * Default false.
   */
  stream?: boolean;
  /**
   * Fail closed when the feed has not been read successfully for this long, in milliseconds:
   * every token is then refused with 503 `revocation_unavailable`. Default max(30000, 6 × intervalMs).
   */
  maxStalenessMs?: number;
  /** Per-request HTTP timeout in milliseconds. Default 5000. */
  timeoutMs?: number;
  /** Largest accepted response body, in bytes. Default 4 MiB. */
  maxResponseBytes?: number;
  /** Pages fetched per poll at most (the feed is paged). Default 100. */
  maxPagesPerPoll?: number;
  /**
   * Most revoked approval ids kept. Entries are dropped once no token tied to them can still be
   * valid (revoked_at + maxTokenAgeSeconds + tolerance); past this cap the one added longest ago goes
   * first even if tokens tied to it may still be valid (they are then accepted again until they
   * expire), reported through `onError` as `revocation_list_full`. Only the feed at `url` fills the
   * list. Default 1,000,000.
   */
  maxEntries?: number;
}

/** DPoP (RFC 9449) proof checks for tokens carrying `cnf.jkt`. */
export interface DpopOptions {
  /** Algorithms accepted for proofs. Default `["ES256", "ES384", "EdDSA", "Ed25519", "PS256", "RS256"]`. */
  algorithms?: readonly JwsAlgorithm[];
  /** How old a proof's `iat` may be, in seconds (future skew uses `clockToleranceSeconds`). Default 60. */
  maxProofAgeSeconds?: number;
  /**
   * Capacity of the `jti` replay cache, per verifier instance (an entry lives at most
   * maxProofAgeSeconds + 2 × clockToleranceSeconds). A live entry is never evicted: when the cache is
   * full, new proofs are refused (503 `dpop_replay_cache_full`) until entries expire. Size it above
   * the peak DPoP request rate × (maxProofAgeSeconds + 2 × clockToleranceSeconds). Default 100,000.
   */
  replayCacheSize?: number;
  /**
   * Most replay-cache entries the proofs of one `client_id` may hold; its further proofs are refused
   * (429 `dpop_client_share_exceeded`) until some expire, so one client cannot fill the cache for the
   * others. Size it above one client's peak DPoP request rate × (maxProofAgeSeconds + 2 ×
   * clockToleranceSeconds). Default a tenth of `replayCacheSize` (10,000).
   */
  replayCachePerClient?: number;
}

/** Options of the remote JWKS cache. */
export interface JwksOptions {
  /** How long a fetched JWKS is used before a background refresh, in milliseconds. Default 300000 (5 min). */
  cacheMaxAgeMs?: number;
  /**
   * Minimum time between two fetches, in milliseconds. A token with an unknown `kid` waits for the
   * next allowed fetch (at most this long) and is refused if the key is still unknown. Default 1000.
   */
  cooldownMs?: number;
  /** HTTP timeout in milliseconds. Default 5000. */
  timeoutMs?: number;
  /** Largest accepted JWKS body, in bytes. Default 512 KiB. */
  maxResponseBytes?: number;
}

/** Options of {@link createVerifier}. Only `issuer` and `audience` are required. */
export interface VerifierOptions {
  /** Expected `iss`, compared exactly. Security: the one issuer (the STS) this gateway trusts. */
  issuer: string;
  /** This gateway's resource id(s); the token's `aud` must contain one of them. */
  audience: string | readonly string[];
  /** The STS's JWKS URL. Default `<issuer>/jwks` when neither `jwksUri` nor `jwks` is given. */
  jwksUri?: string;
  /** A static JWKS instead of `jwksUri` (no network, no rotation). */
  jwks?: JSONWebKeySet;
  /** Options of the remote JWKS cache (ignored with a static `jwks`). */
  jwksOptions?: JwksOptions;
  /** Accepted access-token algorithms. Default `["ES256"]`. HMAC and `none` are rejected at construction. */
  algorithms?: readonly JwsAlgorithm[];
  /** Allowed clock skew for `exp`, `nbf`, `iat`, in seconds. Default 5. */
  clockToleranceSeconds?: number;
  /** A token whose `iat` is older than this, in seconds, is stale whatever `exp` says. Default 300. */
  maxTokenAgeSeconds?: number;
  /** Largest accepted token, in bytes (characters). Default 8192. */
  maxTokenBytes?: number;
  /** Deepest accepted `act` nesting (RFC 8693 §4.1), 0 forbids `act`. Default 5. */
  maxActDepth?: number;
  /**
   * The gateway's own limit per (client_id, approval_id); the tighter of it and the token's
   * `rate_limit` applies (each field separately). Unset: only the token's `rate_limit` applies.
   * `false`: no rate limiting at all, not even the token's.
   */
  rateLimit?: RateLimit | false;
  /** Where buckets live. Default: in memory (per instance). */
  rateLimitStore?: RateLimitStore;
  /**
   * Revocation feed to poll (the STS's `GET /revocations`). Security: unset, revocations are not
   * checked (a revoked approval's tokens keep working until they expire) and the verifier says so
   * once, through `onError` (code `revocation_not_configured`) or, without a hook,
   * `process.emitWarning`. `false`: revocations deliberately not checked, no warning.
   */
  revocation?: RevocationOptions | false;
  /** DPoP proof options. */
  dpop?: DpopOptions;
  /**
   * Verified-token cache: most entries kept (LRU, keyed by SHA-256 of the token, each dying at
   * min(exp, iat + maxTokenAgeSeconds)). `false` disables it. Default `{ maxEntries: 10000 }`.
   */
  cache?: { maxEntries?: number } | false;
  /**
   * Where the access token's signature is verified when it is not served from the cache.
   *
   * - `"threadpool"` (default): `crypto.verify` with a callback, on libuv's thread pool, so the event
   *   loop keeps serving other requests during the public-key operation (about 60 µs for ES256) and
   *   concurrent requests can use more than one core. The pool has `UV_THREADPOOL_SIZE` threads
   *   (default 4) and is shared with `fs`, `dns.lookup`, `zlib` and other asynchronous crypto. The
   *   hand-off to a pool thread and back costs CPU time (tens of µs per uncached token on a small VM,
   *   see BENCHMARKS.md): it pays off only when the process has an idle core to give the pool.
   * - `"inline"`: synchronous `crypto.verify` on the event loop: the least CPU per token and the
   *   lowest latency for one request at a time; the better choice when the process is held to one
   *   core (a CPU quota of 1, a busy shared host).
   *
   * The checks, their order (signature before any claim is acted on) and every outcome are the same
   * in both modes; cache hits never verify a signature. DPoP proofs are always verified inline.
   */
  signatureVerification?: "threadpool" | "inline";
  /** `realm` put in `WWW-Authenticate` challenges (RFC 6750 §3). Default: none. */
  realm?: string;
  /** Clock, in milliseconds since the epoch. Default `Date.now` (tests freeze it). */
  now?: () => number;
  /**
   * An OpenTelemetry tracer, e.g. `trace.getTracer("my-gateway")` from `@opentelemetry/api`: each
   * `verify()` is then one span, `countersign.verify`, recording its outcome (`countersign.outcome`:
   * `allow` or `deny`) and, for a refusal, `countersign.reason`, `error.type` and
   * `http.response.status_code`; never a token, a claim or a header. Default: no spans (the package
   * has no OpenTelemetry dependency). Whatever the tracer throws is ignored.
   */
  tracer?: VerifierTracer;
  /**
   * Called with what goes wrong in the background, where no request sees it: each failed JWKS fetch
   * (first fetch, refresh, refetch for an unknown `kid`), each failed revocation poll or stream
   * connection, and once, shortly after construction, `revocation_not_configured` when `revocation`
   * is unset. Meanwhile the verifier fails closed (`jwks_unavailable`, `revocation_unavailable`).
   * Never receives tokens. Called synchronously from the verifier's background tasks: keep it cheap.
   * Whatever it throws (or an async hook rejects with) is ignored, never reaching the verifier.
   */
  onError?: (error: VerifierBackgroundError) => void;
  /**
   * How long {@link Verifier.ready} waits for the JWKS and the revocation feed, in milliseconds.
   * Default 10000.
   */
  readyTimeoutMs?: number;
  /**
   * Called with background failures (JWKS fetch, revocation poll or stream): the same
   * {@link VerifierBackgroundError}s as `onError` and their `source`, not the warnings
   * (`revocation_not_configured`, `revocation_list_full`). Whatever it throws is ignored.
   * @deprecated Use `onError`, whose error carries `source`, `code` and `reason`.
   */
  onBackgroundError?: (error: Error, source: VerifierBackgroundErrorSource) => void;
}

/** Which background task of the verifier a {@link VerifierBackgroundError} comes from. */
export type VerifierBackgroundErrorSource = "jwks" | "revocation";

/**
 * What a {@link VerifierBackgroundError} reports. Stable: safe to alert on.
 *
 * - `jwks_fetch_failed` (source `jwks`): a JWKS fetch failed; the keys already fetched stay in use.
 * - `revocation_poll_failed` (source `revocation`): a poll of the revocation feed failed; past
 *   `revocation.maxStalenessMs` without a successful poll every token is refused (503).
 * - `revocation_stream_failed` (source `revocation`): the SSE stream failed or sent a malformed
 *   event; it reconnects with backoff, polling continues.
 * - `revocation_not_configured` (source `revocation`, reason `not_configured`): a warning, once per
 *   verifier: `revocation` is unset, so revoked approvals are not refused.
 * - `revocation_list_full` (source `revocation`, reason `list_full`): a warning, at most once per poll:
 *   the list held `revocation.maxEntries` ids and dropped some still in force (those added longest
 *   ago) to take new ones, so tokens of those approvals are accepted again until they expire. The
 *   message says how many since the last report. Without `onError`, `process.emitWarning` says it
 *   once per process (code `COUNTERSIGN_REVOCATION_LIST_FULL`).
 * - `not_ready` (the source not loaded): {@link Verifier.ready} gave up after `readyTimeoutMs`, or the
 *   verifier was closed first (reason `closed`).
 */
export type VerifierBackgroundErrorCode =
  | "jwks_fetch_failed"
  | "revocation_poll_failed"
  | "revocation_stream_failed"
  | "revocation_not_configured"
  | "revocation_list_full"
  | "not_ready";

/**
 * Why, in a {@link VerifierBackgroundError}. Stable.
 *
 * - `unreachable`: no HTTP answer (connection refused, DNS, TLS, reset, a redirect, which is refused).
 * - `timeout`: no complete answer in time (`jwksOptions.timeoutMs`, `revocation.timeoutMs`; for
 *   `not_ready`, `readyTimeoutMs` ran out while a request was still pending).
 * - `http_error`: an HTTP status other than 2xx (`status` says which).
 * - `response_too_large`: a body (or one stream event) above its size limit.
 * - `invalid_response`: not JSON, or not the expected shape (a JWKS without `keys`, a malformed feed
 *   page or stream event).
 * - `not_configured`: see `revocation_not_configured`.
 * - `list_full`: see `revocation_list_full`.
 * - `closed`: `close()` was called while `ready()` was waiting.
 */
export type VerifierBackgroundErrorReason =
  | "unreachable"
  | "timeout"
  | "http_error"
  | "response_too_large"
  | "invalid_response"
  | "not_configured"
  | "list_full"
  | "closed";

/** One request to authorize. */
export interface VerifyRequest {
  /** The `Authorization` header value: `Bearer <token>` or `DPoP <token>`. */
  authorization?: string | undefined;
  /** The HTTP method (needed for DPoP `htm`). Default `GET`. */
  method?: string | undefined;
  /** The absolute request URL as the client addressed it (needed for DPoP `htu`). */
  url?: string | undefined;
  /** Scopes this route requires; all must be in the token's `scope`. */
  requiredScopes?: readonly string[] | undefined;
  /** The `DPoP` header value, for DPoP-bound tokens. */
  dpop?: string | undefined;
}

/** An actor (RFC 8693 §4.1), possibly nested. */
export interface ActorClaim {
  sub: string;
  act?: ActorClaim;
  [claim: string]: unknown;
}

/** The claims of a Countersign access token (RFC 9068 plus Countersign's). */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  client_id: string;
  scope?: string;
  iat: number;
  exp: number;
  nbf?: number;
  jti?: string;
  approval_id: string;
  authorization_details?: unknown;
  act?: ActorClaim;
  rate_limit?: { per_second: number; burst: number };
  cnf?: { jkt?: string };
  [claim: string]: unknown;
}

/** A request the token authorizes. Treat it as read-only: results served from the cache are shared and deeply frozen. */
export interface VerifySuccess {
  ok: true;
  claims: Readonly<AccessTokenClaims>;
  clientId: string;
  approvalId: string;
  subject: string;
  /** The token's scopes. */
  scopes: readonly string[];
}

/** A refusal: send `status` with `headers` and `{ error, error_description: description }`. */
export interface VerifyFailure {
  ok: false;
  status: VerifyErrorStatus;
  error: VerifyErrorCode;
  /** Stable machine code (see `REASONS`). */
  reason: Reason;
  /** Fixed human-readable text, safe to return to the client. */
  description: string;
  headers: { "WWW-Authenticate"?: string; "Retry-After"?: string };
}

export type VerifyResult = VerifySuccess | VerifyFailure;

/** The verifier. */
export interface Verifier {
  /** Authorize one request. Never throws; every failure is a {@link VerifyFailure}. */
  verify(request: VerifyRequest): Promise<VerifyResult>;
  /**
   * Resolves once the keys have been loaded and, when `revocation` is configured, the revocation feed
   * has been read successfully, retrying meanwhile (JWKS at most once per `jwksOptions.cooldownMs`,
   * the feed at most once per min(`revocation.intervalMs`, 1 s)). Rejects with a
   * {@link VerifierBackgroundError} (code `not_ready`, the `source` not loaded and the `reason` of its
   * last failure, which is also its `cause`) when that has not happened within `readyTimeoutMs`, or when
   * the verifier is closed first. Optional: before it resolves, tokens are refused with 503
   * (`jwks_unavailable`, `revocation_unavailable`), and after a rejection the verifier keeps retrying
   * in the background.
   */
  ready(): Promise<void>;
  /** Stop background polling; the verifier keeps working with what it has. */
  close(): void;
}
