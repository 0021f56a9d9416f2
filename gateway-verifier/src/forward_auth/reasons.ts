/**
 * Refusals of the forward-auth service itself (the verifier's are in `REASONS`): stable reason codes,
 * the HTTP status, the OAuth-style `error` and a fixed `error_description`.
 */
export const FORWARD_AUTH_REASONS = {
  /**
   * The proxy sent the original method/URI in `X-Original-*` or `X-Forwarded-Method`/`-Uri` headers but
   * the service was not told to trust them (`trustForwardedHeaders`). Operator error: fail closed.
   */
  forwarded_headers_untrusted: {
    status: 500,
    error: "server_error",
    description: "The authorization service is misconfigured",
  },
  /** `trustForwardedHeaders` is set but the proxy sent no original method or URI. Operator error. */
  original_request_missing: {
    status: 500,
    error: "server_error",
    description: "The authorization service is misconfigured",
  },
  /** Both header families (nginx's and Caddy/Traefik's) are present and disagree: a client added one. */
  original_request_ambiguous: {
    status: 400,
    error: "invalid_request",
    description: "The original request is ambiguous",
  },
  /** The original method or URI is malformed, too long, or its path climbs above the root. */
  original_request_invalid: {
    status: 400,
    error: "invalid_request",
    description: "The original request is invalid",
  },
  /** The verifier threw (it never should); fail closed. */
  verifier_failed: {
    status: 503,
    error: "temporarily_unavailable",
    description: "Authorization is temporarily unavailable",
  },
} as const satisfies Record<string, { status: number; error: string; description: string }>;

/** A reason code of the forward-auth service's own refusals. */
export type ForwardAuthReason = keyof typeof FORWARD_AUTH_REASONS;
