/**
 * The canonical URI of an MCP server (MCP 2026-07-28 `basic/authorization` "Canonical Server URI",
 * RFC 8707 §2): an absolute `http(s)` URI, lower-case scheme and host, default port elided, no
 * fragment, no query, and no trailing slash (unless the path is only `/`, which is dropped).
 *
 * @throws TypeError when `uri` is not an absolute http(s) URI, or carries a fragment, a query or
 *   credentials.
 */
export function canonicalResourceUri(uri: string): string {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new TypeError(`resource must be an absolute URI, got ${JSON.stringify(uri)}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new TypeError("resource must be an http or https URI");
  }
  if (uri.includes("#")) throw new TypeError("resource must not contain a fragment (RFC 8707 §2)");
  if (url.search !== "" || uri.includes("?")) throw new TypeError("resource must not contain a query");
  if (url.username !== "" || url.password !== "")
    throw new TypeError("resource must not contain credentials");
  // URL lower-cases scheme and host and drops a default port; only the trailing slash is left.
  const path = url.pathname.replace(/\/+$/, "");
  return `${url.protocol}//${url.host}${path}`;
}

/** The path of a canonical resource URI (`""` when it has none), as the MCP endpoint path. */
export function resourcePath(canonical: string): string {
  return new URL(canonical).pathname.replace(/\/+$/, "");
}

/** The well-known URI suffix of RFC 9728 §3. */
export const PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource";

/**
 * The metadata URL of RFC 9728 §3.1: the well-known suffix inserted between the host and the path of
 * the resource identifier, e.g. `https://tools.example.test/mcp` →
 * `https://tools.example.test/.well-known/oauth-protected-resource/mcp`.
 */
export function resourceMetadataUrl(canonical: string): string {
  const url = new URL(canonical);
  return `${url.protocol}//${url.host}${PRM_WELL_KNOWN}${resourcePath(canonical)}`;
}
