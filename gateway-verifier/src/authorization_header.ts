import type { Scheme } from "./error_response.js";
import type { Reason } from "./reasons.js";

/** The access token an `Authorization` header presents, and whether under the `DPoP` scheme. */
export interface Credentials {
  token: string;
  dpop: boolean;
}

/** Why an `Authorization` header presents no usable token, and the scheme to challenge with. */
export interface CredentialsRefusal {
  readonly reason: Reason;
  readonly scheme: Scheme;
}

function refusal(reason: Reason, scheme: Scheme): CredentialsRefusal {
  return Object.freeze({ reason, scheme });
}

const MISSING = refusal("missing_token", "Bearer");
const TOO_LARGE = refusal("token_too_large", "Bearer");
const TOO_LARGE_DPOP = refusal("token_too_large", "DPoP");
const MALFORMED = refusal("malformed_authorization", "Bearer");
const MALFORMED_DPOP = refusal("malformed_authorization", "DPoP");

/**
 * Reads the access token from an `Authorization` header: `Bearer <token>` (RFC 6750 §2.1) or
 * `DPoP <token>` (RFC 9449 §7.1), the scheme case-insensitive, the token at most `maxTokenBytes`
 * characters (the whole header at most 64 more, checked first).
 */
export function parseAuthorization(
  authorization: string | undefined,
  maxTokenBytes: number,
): Credentials | CredentialsRefusal {
  if (authorization === undefined || authorization === "") return MISSING;
  if (authorization.length > maxTokenBytes + 64) return TOO_LARGE;
  let token: string;
  let dpop: boolean;
  if (authorization.startsWith("Bearer ")) {
    token = authorization.slice(7);
    dpop = false;
  } else {
    const space = authorization.indexOf(" ");
    const scheme = (space < 0 ? authorization : authorization.slice(0, space)).toLowerCase();
    if (scheme !== "bearer" && scheme !== "dpop") return MISSING;
    if (space < 0) return MALFORMED;
    token = authorization.slice(space + 1);
    dpop = scheme === "dpop";
  }
  if (token.charCodeAt(0) === 32 || token.charCodeAt(token.length - 1) === 32) token = token.trim();
  if (token === "") return dpop ? MALFORMED_DPOP : MALFORMED;
  if (token.length > maxTokenBytes) return dpop ? TOO_LARGE_DPOP : TOO_LARGE;
  return { token, dpop };
}
