/** The loopback names a `Host` header may carry (with any port): IPv4, IPv6 and `localhost`. */
const LOOPBACK_HOSTNAMES: ReadonlySet<string> = new Set(["127.0.0.1", "[::1]", "localhost"]);

/** RFC 9110 §7.2 `Host = uri-host [ ":" port ]`, narrowed to a DNS name, IPv4 or bracketed IPv6. */
const HOST_HEADER = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?$/;

/**
 * True when the `Host` header names this machine's loopback interface (`127.0.0.1`, `[::1]`,
 * `localhost`, any port) or exactly the issuer's host and port.
 *
 * A DNS-rebinding defence: a page on `http://evil.example:8080` whose name the attacker re-points at
 * 127.0.0.1 reaches a local server same-origin, but its requests still say `Host: evil.example:8080`.
 * A missing or malformed header (several values, userinfo, a path) is not allowed.
 */
export function isAllowedHost(host: string | undefined, issuer: string): boolean {
  if (host === undefined || !HOST_HEADER.test(host)) return false;
  const issuerUrl = new URL(issuer);
  // The grammar above admits no userinfo, path or query, so the parse sees only host and port; it
  // lowercases the name and drops the scheme's default port, as it does for the issuer.
  let target: URL;
  try {
    target = new URL(`${issuerUrl.protocol}//${host}`);
  } catch {
    return false;
  }
  if (LOOPBACK_HOSTNAMES.has(target.hostname)) return true;
  return target.host === issuerUrl.host;
}
