import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type RequiredScopes,
  requestUrl,
  scopesFor,
  verifyRequestFrom,
  writeFailure,
} from "./http_adapter.js";
import type { Verifier, VerifySuccess } from "./types.js";

/** Options of {@link createExtAuthzHandler}. */
export interface ExtAuthzOptions {
  /** Scopes each request needs, fixed or as a function of the original (method, path). Default none. */
  requiredScopes?: RequiredScopes;
  /** The `path_prefix` set in Envoy's `http_service`, stripped to recover the original path. Default "". */
  pathPrefix?: string;
  /**
   * Public origin clients address (for DPoP `htu`), e.g. `https://crm.example.test`. Default: the
   * `X-Forwarded-Proto` Envoy sets (or `http`) and the original `Host`.
   */
  publicOrigin?: string;
  /** Prefix of the identity headers returned on success. Default `"x-countersign-"`. */
  headerPrefix?: string;
}

const VISIBLE_ASCII = /^[\x20-\x7E]*$/;

function headerSafe(value: string): string {
  return VISIBLE_ASCII.test(value) ? value : encodeURIComponent(value);
}

function allow(res: ServerResponse, result: VerifySuccess, prefix: string): void {
  res.statusCode = 200;
  res.setHeader(`${prefix}client-id`, headerSafe(result.clientId));
  res.setHeader(`${prefix}approval-id`, headerSafe(result.approvalId));
  res.setHeader(`${prefix}subject`, headerSafe(result.subject));
  res.setHeader(`${prefix}scope`, headerSafe(result.scopes.join(" ")));
  res.setHeader("content-length", 0);
  res.end();
}

/**
 * A node:http handler for Envoy's HTTP `ext_authz` filter. Envoy forwards the original method, path
 * (after `path_prefix`) and allowed headers; a 200 answer allows the request and Envoy copies the
 * `x-countersign-*` headers (`allowed_upstream_headers`) upstream, replacing any the client sent.
 * Any other answer is returned to the client as is (status, `WWW-Authenticate`, `Retry-After`, body).
 */
export function createExtAuthzHandler(
  verifier: Verifier,
  options: ExtAuthzOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const prefix = options.pathPrefix ?? "";
  const headerPrefix = (options.headerPrefix ?? "x-countersign-").toLowerCase();
  return (req, res) => {
    req.resume();
    const raw = req.url ?? "/";
    const path = prefix !== "" && raw.startsWith(prefix) ? raw.slice(prefix.length) || "/" : raw;
    const method = req.method ?? "GET";
    const pathname = path.split("?", 1)[0] ?? path;
    const request = verifyRequestFrom(
      req,
      method,
      requestUrl(req, path, options.publicOrigin, true),
      scopesFor(options.requiredScopes, method, pathname),
    );
    verifier.verify(request).then(
      (result) => (result.ok ? allow(res, result, headerPrefix) : writeFailure(res, result)),
      () => {
        res.statusCode = 503;
        res.end();
      },
    );
  };
}

/** Options of {@link startExtAuthzServer}. */
export interface ExtAuthzServerOptions extends ExtAuthzOptions {
  /** TCP port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Address to bind. Default `127.0.0.1` (Envoy usually runs beside the service). */
  host?: string;
}

/** Starts the `ext_authz` service. Resolves with the listening server and its port. */
export async function startExtAuthzServer(
  verifier: Verifier,
  options: ExtAuthzServerOptions = {},
): Promise<{ server: Server; port: number }> {
  const server = createServer(createExtAuthzHandler(verifier, options));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
