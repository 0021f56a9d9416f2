import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { VerifyFailure, VerifyRequest } from "./types.js";

/** How an adapter learns which scopes a request needs: a fixed list or a function of method and path. */
export type RequiredScopes =
  | readonly string[]
  | ((method: string, path: string) => readonly string[] | undefined);

export function scopesFor(required: RequiredScopes | undefined, method: string, path: string) {
  if (required === undefined) return undefined;
  return typeof required === "function" ? required(method, path) : required;
}

/** The single value of a header (first when repeated), or undefined. */
export function headerValue(value: string | string[] | undefined): string | undefined {
  if (Array.isArray(value)) return value[0];
  return value === "" ? undefined : value;
}

/** The JSON error body RFC 6750 / RFC 6749 §5.2 style. */
export function failureBody(result: VerifyFailure): string {
  return JSON.stringify({ error: result.error, error_description: result.description });
}

/** Writes a refusal on a node:http response. */
export function writeFailure(res: ServerResponse, result: VerifyFailure): void {
  const body = failureBody(result);
  res.statusCode = result.status;
  for (const [name, value] of Object.entries(result.headers)) res.setHeader(name, value);
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(body);
}

/**
 * The absolute URL the client addressed (for DPoP `htu`): `publicOrigin` when configured (the
 * recommended setting behind proxies), else the scheme of the socket — or `X-Forwarded-Proto` when
 * `trustProxy` — and the `Host` header. Shared by every adapter; never the `Origin` header (which a
 * client sets at will) nor `X-Forwarded-Host`.
 */
export function requestUrl(
  req: IncomingMessage,
  path: string,
  publicOrigin: string | undefined,
  trustProxy: boolean,
): string | undefined {
  if (publicOrigin !== undefined) return `${publicOrigin.replace(/\/+$/, "")}${path}`;
  const forwarded = trustProxy
    ? headerValue(req.headers["x-forwarded-proto"])?.split(",")[0]?.trim()
    : undefined;
  const protocol = forwarded ?? ((req.socket as TLSSocket).encrypted === true ? "https" : "http");
  const host = headerValue(req.headers.host);
  if (host === undefined) return undefined;
  return `${protocol}://${host}${path}`;
}

export function verifyRequestFrom(
  req: IncomingMessage,
  method: string,
  url: string | undefined,
  requiredScopes: readonly string[] | undefined,
): VerifyRequest {
  return {
    authorization: headerValue(req.headers.authorization),
    method,
    url,
    requiredScopes,
    dpop: headerValue(req.headers.dpop),
  };
}
