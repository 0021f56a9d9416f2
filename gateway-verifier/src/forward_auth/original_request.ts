import type { IncomingMessage } from "node:http";
import { headerValue } from "../http_adapter.js";
import { canonicalPath, MAX_URI_CHARS } from "./canonical_path.js";
import type { ForwardAuthReason } from "./reasons.js";

/** The request the client sent to the proxy, as the service reconstructs it. */
export interface OriginalRequest {
  method: string;
  /** The raw path and query the client sent (for DPoP `htu`). */
  uri: string;
  /** The path routes are matched on (see {@link canonicalPath}). */
  path: string;
  /** Absolute URL for DPoP `htu`, when an origin is known. */
  url: string | undefined;
}

/** How to read the original request. */
export interface OriginalRequestOptions {
  trustForwardedHeaders: boolean;
  publicOrigin: string | undefined;
  pathPrefix: string;
}

const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const HOST = /^[A-Za-z0-9.:[\]_-]{1,255}$/;
const PROTO = /^https?$/;

/** The single header value, refusing a header sent twice (a proxy sends it once). */
function single(req: IncomingMessage, name: string): string | undefined | null {
  const value = req.headers[name];
  if (Array.isArray(value)) return value.length === 1 ? value[0] : null;
  return value === "" ? undefined : value;
}

/** nginx (`X-Original-*`) or Caddy/Traefik (`X-Forwarded-Method`/`-Uri`), refusing disagreement. */
function pick(req: IncomingMessage, nginx: string, forwarded: string): string | undefined | null {
  const a = single(req, nginx);
  const b = single(req, forwarded);
  if (a === null || b === null) return null;
  if (a !== undefined && b !== undefined && a !== b) return null;
  return a ?? b;
}

function origin(req: IncomingMessage, options: OriginalRequestOptions): string | undefined {
  if (options.publicOrigin !== undefined) return options.publicOrigin.replace(/\/+$/, "");
  // Envoy and every proxy set X-Forwarded-Proto themselves (a client's value is replaced).
  const proto = headerValue(req.headers["x-forwarded-proto"])?.split(",")[0]?.trim();
  const host =
    (options.trustForwardedHeaders ? headerValue(req.headers["x-forwarded-host"]) : undefined) ??
    headerValue(req.headers.host);
  if (host === undefined || !HOST.test(host)) return undefined;
  const scheme = proto !== undefined && PROTO.test(proto) ? proto : "http";
  return `${scheme}://${host}`;
}

/**
 * Reconstructs the original request from an authorization subrequest.
 *
 * - Without `trustForwardedHeaders` (Envoy `ext_authz`): the subrequest's own method and path (after
 *   `pathPrefix`) are the original ones. A subrequest carrying `X-Original-Method`/`-URI` or
 *   `X-Forwarded-Method`/`-Uri` is refused (`forwarded_headers_untrusted`): it comes from a proxy
 *   (nginx, Caddy, Traefik) whose subrequest line is not the client's, so judging it would be wrong.
 * - With it (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`): the method and URI
 *   come from those headers, required (`original_request_missing`), and when both families are present
 *   they must agree (`original_request_ambiguous`: a client slipped one in). The origin for DPoP `htu`
 *   is `publicOrigin` when set, else `X-Forwarded-Proto` and `X-Forwarded-Host` (or `Host`).
 */
export function originalRequest(
  req: IncomingMessage,
  options: OriginalRequestOptions,
): { ok: true; request: OriginalRequest } | { ok: false; reason: ForwardAuthReason } {
  const method = pick(req, "x-original-method", "x-forwarded-method");
  const uri = pick(req, "x-original-uri", "x-forwarded-uri");
  let originalMethod: string;
  let originalUri: string;
  if (options.trustForwardedHeaders) {
    if (method === null || uri === null) return { ok: false, reason: "original_request_ambiguous" };
    if (method === undefined || uri === undefined) return { ok: false, reason: "original_request_missing" };
    originalMethod = method;
    originalUri = uri;
  } else {
    if (method !== undefined || uri !== undefined)
      return { ok: false, reason: "forwarded_headers_untrusted" };
    const raw = req.url ?? "/";
    const prefix = options.pathPrefix;
    originalMethod = req.method ?? "GET";
    originalUri = prefix !== "" && raw.startsWith(prefix) ? raw.slice(prefix.length) || "/" : raw;
    if (!originalUri.startsWith("/")) originalUri = `/${originalUri}`;
  }
  if (!METHOD.test(originalMethod) || originalUri.length > MAX_URI_CHARS) {
    return { ok: false, reason: "original_request_invalid" };
  }
  const rawPath = originalUri.split(/[?#]/, 1)[0] ?? originalUri;
  const path = canonicalPath(rawPath);
  if (path === undefined) return { ok: false, reason: "original_request_invalid" };
  const base = origin(req, options);
  return {
    ok: true,
    request: {
      method: originalMethod,
      uri: originalUri,
      path,
      url: base === undefined ? undefined : `${base}${originalUri}`,
    },
  };
}
