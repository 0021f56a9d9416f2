/**
 * Stable reason codes for every refusal the verifier can produce, with the HTTP status, the OAuth
 * error code (RFC 6750 §3.1, RFC 9449 §7.1) and the fixed `error_description` sent to the client.
 *
 * Reason codes are part of the public contract: they never change meaning and are safe to alert on.
 * Descriptions are constants (never interpolated with request data), so they are always safe to put
 * in a `WWW-Authenticate` quoted-string.
 */
export const REASONS = {
  /** No `Authorization` header, or a scheme other than `Bearer`/`DPoP` (RFC 6750 §3.1: no error code in the challenge). */
  missing_token: { status: 401, error: "invalid_token", description: "An access token is required" },
  /** `Authorization` header not of the form `<scheme> <token>`. */
  malformed_authorization: {
    status: 401,
    error: "invalid_token",
    description: "The Authorization header is malformed",
  },
  /** The token is longer than `maxTokenBytes` (8 KiB by default). */
  token_too_large: { status: 401, error: "invalid_token", description: "The access token is too large" },
  /** Not three base64url segments, or a header/payload that is not a JSON object. */
  malformed_token: { status: 401, error: "invalid_token", description: "The access token is malformed" },
  /** `alg` missing or outside the allow-list (`none` and HMAC are never allowed). */
  alg_not_allowed: {
    status: 401,
    error: "invalid_token",
    description: "The token's signing algorithm is not allowed",
  },
  /** The header embeds or points at a key (`jwk`, `jku`, `x5u`, `x5c`); keys come from the JWKS only. */
  forbidden_header: {
    status: 401,
    error: "invalid_token",
    description: "The token header carries a forbidden key parameter",
  },
  /** `b64` header present and not `true` (RFC 7797 unencoded payloads are refused). */
  unencoded_payload: {
    status: 401,
    error: "invalid_token",
    description: "Unencoded JWS payloads are not accepted",
  },
  /** `crit` header present: no extensions are understood (RFC 7515 §4.1.11). */
  unsupported_crit: {
    status: 401,
    error: "invalid_token",
    description: "The token has critical header parameters that are not understood",
  },
  /** `typ` is not `at+jwt` (RFC 9068 §2.1, RFC 8725 §3.11); ID tokens and plain JWTs land here. */
  invalid_typ: { status: 401, error: "invalid_token", description: "The token is not an access token (typ)" },
  /** `kid` is not a string of 1..256 characters. */
  invalid_kid: { status: 401, error: "invalid_token", description: "The token's key id is invalid" },
  /** No key with this `kid` (and a compatible algorithm) in the JWKS, even after a refetch. */
  unknown_kid: { status: 401, error: "invalid_token", description: "The token's signing key is unknown" },
  /** The signature does not verify. */
  invalid_signature: { status: 401, error: "invalid_token", description: "The token signature is invalid" },
  /** The JWKS could not be fetched and no usable key is cached (fail closed). */
  jwks_unavailable: {
    status: 503,
    error: "temporarily_unavailable",
    description: "The signing keys are temporarily unavailable",
  },
  /** `iss` is not the configured issuer. */
  invalid_issuer: { status: 401, error: "invalid_token", description: "The token issuer is not accepted" },
  /** `aud` does not name this gateway's resource. */
  invalid_audience: {
    status: 401,
    error: "invalid_token",
    description: "The token is not meant for this resource",
  },
  /** A required claim (`exp`, `iat`, `sub`, `client_id`) is missing or of the wrong type. */
  missing_claim: { status: 401, error: "invalid_token", description: "The token lacks a required claim" },
  /** A claim has an invalid value (`scope`, `rate_limit`, `cnf`). */
  invalid_claim: { status: 401, error: "invalid_token", description: "The token has an invalid claim" },
  /** `exp` is more than `clockToleranceSeconds` in the past. */
  token_expired: { status: 401, error: "invalid_token", description: "The token has expired" },
  /** `nbf` is more than `clockToleranceSeconds` in the future. */
  token_not_yet_valid: { status: 401, error: "invalid_token", description: "The token is not yet valid" },
  /** `iat` is more than `clockToleranceSeconds` in the future. */
  iat_in_future: { status: 401, error: "invalid_token", description: "The token was issued in the future" },
  /** `iat` is older than `maxTokenAgeSeconds` (+ tolerance), whatever `exp` says. */
  token_stale: { status: 401, error: "invalid_token", description: "The token is too old" },
  /** No `approval_id` claim: every Countersign token is tied to a human approval. */
  missing_approval_id: {
    status: 401,
    error: "invalid_token",
    description: "The token is not tied to an approval",
  },
  /** `act` is not an object with a string `sub`. */
  invalid_act: { status: 401, error: "invalid_token", description: "The token's actor chain is invalid" },
  /** `act` nests deeper than `maxActDepth`. */
  act_too_deep: { status: 401, error: "invalid_token", description: "The token's actor chain is too deep" },
  /** The approval was revoked (or expired) according to the revocation feed. */
  approval_revoked: { status: 401, error: "invalid_token", description: "The approval has been revoked" },
  /** The revocation feed has not been read successfully within `maxStalenessMs` (fail closed). */
  revocation_unavailable: {
    status: 503,
    error: "temporarily_unavailable",
    description: "Revocation status is temporarily unavailable",
  },
  /** A required scope is missing (RFC 6750 §3.1). */
  insufficient_scope: {
    status: 403,
    error: "insufficient_scope",
    description: "The token lacks a scope this request requires",
  },
  /** A DPoP-bound token (`cnf.jkt`) sent with the `Bearer` scheme (RFC 9449 §7.1). */
  dpop_bound_token_as_bearer: {
    status: 401,
    error: "invalid_token",
    description: "A DPoP-bound token must use the DPoP authorization scheme",
  },
  /** The `DPoP` scheme used with a token that has no `cnf.jkt`. */
  token_not_dpop_bound: {
    status: 401,
    error: "invalid_token",
    description: "The token is not bound to a DPoP key",
  },
  /** A DPoP-bound token without a `DPoP` proof header. */
  dpop_proof_missing: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "A DPoP proof is required",
  },
  /** The DPoP proof is malformed, has a wrong `typ`/`alg`/`jwk`, or a bad signature. */
  dpop_proof_invalid: { status: 401, error: "invalid_dpop_proof", description: "The DPoP proof is invalid" },
  /** The proof's key thumbprint differs from the token's `cnf.jkt` (RFC 9449 §7.1 uses invalid_token). */
  dpop_key_mismatch: {
    status: 401,
    error: "invalid_token",
    description: "The DPoP proof key does not match the token binding",
  },
  /** `htm` differs from the request method. */
  dpop_htm_mismatch: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "The DPoP proof is for another HTTP method",
  },
  /** `htu` differs from the request URL (query and fragment ignored). */
  dpop_htu_mismatch: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "The DPoP proof is for another URL",
  },
  /** `iat` outside the accepted window. */
  dpop_iat_invalid: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "The DPoP proof is outside its validity window",
  },
  /** `ath` is not base64url(SHA-256(access token)). */
  dpop_ath_mismatch: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "The DPoP proof is not for this access token",
  },
  /** The proof's `jti` was already seen within its validity window. */
  dpop_proof_replayed: {
    status: 401,
    error: "invalid_dpop_proof",
    description: "The DPoP proof has already been used",
  },
  /**
   * This client's proofs already hold its share of the DPoP replay cache (`dpop.replayCachePerClient`
   * within one proof window); `Retry-After` says when all of them have expired.
   */
  dpop_client_share_exceeded: {
    status: 429,
    error: "rate_limited",
    description: "Too many DPoP proofs from this client",
  },
  /** The DPoP replay cache is full of unexpired proofs (`dpop.replayCacheSize`): refused rather than evict one (fail closed). */
  dpop_replay_cache_full: {
    status: 503,
    error: "temporarily_unavailable",
    description: "DPoP replay protection is temporarily unavailable",
  },
  /** Above the rate or burst for this (client, approval); `Retry-After` says when to retry. */
  rate_limited: { status: 429, error: "rate_limited", description: "Too many requests" },
  /** The shared rate-limit store could not be reached (fail closed). */
  rate_limit_unavailable: {
    status: 503,
    error: "temporarily_unavailable",
    description: "Rate limiting is temporarily unavailable",
  },
} as const satisfies Record<string, { status: number; error: string; description: string }>;

/** A stable machine-readable refusal code; see {@link REASONS} and the README's table. */
export type Reason = keyof typeof REASONS;

/** The OAuth `error` codes the verifier produces. */
export type VerifyErrorCode = (typeof REASONS)[Reason]["error"];

/** The HTTP statuses the verifier produces on refusal. */
export type VerifyErrorStatus = (typeof REASONS)[Reason]["status"];
