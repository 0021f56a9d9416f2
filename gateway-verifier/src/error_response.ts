import { deepFreeze } from "./deep_freeze.js";
import { REASONS, type Reason } from "./reasons.js";
import type { VerifyFailure } from "./types.js";

/** The authentication scheme a refusal challenges with: `Bearer` (RFC 6750) or `DPoP` (RFC 9449). */
export type Scheme = "Bearer" | "DPoP";

/** Builds the refusals: status, error, reason, fixed description, `WWW-Authenticate`, `Retry-After`. */
export interface ErrorResponses {
  /** The refusal for (reason, scheme): built once, deeply frozen and shared, so refusing costs nothing under attack. */
  fail(reason: Reason, scheme: Scheme): VerifyFailure;
  /** A refusal with a `scope` challenge parameter (RFC 6750 §3) or a `Retry-After` (seconds); frozen, not shared. */
  build(reason: Reason, scheme: Scheme, scope?: string, retryAfter?: number): VerifyFailure;
}

/** An RFC 7230 quoted-string of `value` without the characters that would need escaping or break a header. */
function quoted(value: string): string {
  return `"${value.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, "")}"`;
}

/**
 * Refusals as RFC 6750 §3 error responses: a missing token gets a bare challenge (§3.1, no error code)
 * for both schemes; other 401/403 refusals carry `error` and `error_description` (and `scope`), under
 * the `DPoP` scheme with `algs` for DPoP (RFC 9449 §7.1); 429 and 503 carry no challenge.
 *
 * @param realm the `realm` challenge parameter, if any.
 * @param dpopAlgorithms the DPoP proof algorithms, for `algs`.
 */
export function createErrorResponses(
  realm: string | undefined,
  dpopAlgorithms: readonly string[],
): ErrorResponses {
  const realmParameter = realm === undefined ? "" : `realm=${quoted(realm)}, `;
  const dpopAlgs = `algs=${quoted(dpopAlgorithms.join(" "))}`;
  const failures = new Map<string, VerifyFailure>();

  function challenge(reason: Reason, scheme: Scheme, scope?: string): string | undefined {
    const { status, error, description } = REASONS[reason];
    if (status === 429 || status === 503) return undefined;
    if (reason === "missing_token")
      return `Bearer${realmParameter === "" ? "" : ` ${realmParameter.slice(0, -2)}`}, DPoP ${dpopAlgs}`;
    let value = `${scheme} ${realmParameter}error=${quoted(error)}, error_description=${quoted(description)}`;
    if (scope !== undefined) value += `, scope=${quoted(scope)}`;
    if (scheme === "DPoP") value += `, ${dpopAlgs}`;
    return value;
  }

  function build(reason: Reason, scheme: Scheme, scope?: string, retryAfter?: number): VerifyFailure {
    const { status, error, description } = REASONS[reason];
    const header: VerifyFailure["headers"] = {};
    const wwwAuthenticate = challenge(reason, scheme, scope);
    if (wwwAuthenticate !== undefined) header["WWW-Authenticate"] = wwwAuthenticate;
    if (retryAfter !== undefined) header["Retry-After"] = String(retryAfter);
    return deepFreeze({ ok: false, status, error, reason, description, headers: header });
  }

  function fail(reason: Reason, scheme: Scheme): VerifyFailure {
    const id = `${reason}/${scheme}`;
    let failure = failures.get(id);
    if (failure === undefined) {
      failure = build(reason, scheme);
      failures.set(id, failure);
    }
    return failure;
  }

  return { fail, build };
}
