import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Reason } from "../reasons.js";
import type { Verifier, VerifyFailure, VerifySuccess } from "../types.js";
import { type OriginalRequest, originalRequest } from "./original_request.js";
import { FORWARD_AUTH_REASONS, type ForwardAuthReason } from "./reasons.js";
import { compileRoutes, type ForwardAuthRoute, MAX_ROUTES } from "./routes.js";

/** Options of {@link createForwardAuthHandler}. */
export interface ForwardAuthOptions {
  /** Scopes every request needs. Default none. */
  requiredScopes?: readonly string[];
  /** Per-route scopes, added to `requiredScopes` (most specific route wins). */
  routes?: readonly ForwardAuthRoute[];
  /**
   * Read the original method and URI from the proxy's `X-Original-Method`/`X-Original-URI` (nginx) or
   * `X-Forwarded-Method`/`X-Forwarded-Uri` (Caddy, Traefik) headers, and the host from
   * `X-Forwarded-Host`. Set it for nginx, Caddy, Traefik and HAProxy; leave it off for Envoy, whose
   * `ext_authz` request line is the original one. Only the proxy may reach the service (bind it to
   * 127.0.0.1 or a private network). Default false.
   */
  trustForwardedHeaders?: boolean;
  /** Public origin clients address (DPoP `htu`), e.g. `https://crm.example.test`. Recommended. */
  publicOrigin?: string;
  /** Envoy's `http_service.path_prefix`, stripped from the request line (untrusted mode only). Default "". */
  pathPrefix?: string;
  /** Called once per decision (never with a token), e.g. to log it. */
  onDecision?: (decision: ForwardAuthDecision) => void;
}

/** One decision of the service, for logs and metrics. Carries no token, query string or header value. */
export interface ForwardAuthDecision {
  outcome: "allow" | "refuse";
  status: number;
  /** The refusal's stable reason code (the verifier's or the service's own). */
  reason?: Reason | ForwardAuthReason;
  method?: string;
  /** Canonical path, without the query (which may carry secrets). */
  path?: string;
  clientId?: string;
  approvalId?: string;
}

/** Identity headers set on a 200 answer, for the proxy to copy upstream (replacing the client's). */
export const IDENTITY_HEADERS = {
  clientId: "x-countersign-client-id",
  subject: "x-countersign-subject",
  approvalId: "x-countersign-approval-id",
  scope: "x-countersign-scope",
} as const;

/**
 * Headers set on every refusal besides `WWW-Authenticate`/`Retry-After`: nginx's `auth_request` drops
 * the body and passes only 401/403 through, so its configuration rebuilds the answer from these.
 */
export const REFUSAL_HEADERS = {
  error: "x-countersign-error",
  errorDescription: "x-countersign-error-description",
} as const;

const VISIBLE_ASCII = /^[\x20-\x7E]*$/;

function headerSafe(value: string): string {
  return VISIBLE_ASCII.test(value) ? value : encodeURIComponent(value);
}

function allow(res: ServerResponse, result: VerifySuccess): void {
  res.statusCode = 200;
  res.setHeader(IDENTITY_HEADERS.clientId, headerSafe(result.clientId));
  res.setHeader(IDENTITY_HEADERS.subject, headerSafe(result.subject));
  res.setHeader(IDENTITY_HEADERS.approvalId, headerSafe(result.approvalId));
  res.setHeader(IDENTITY_HEADERS.scope, headerSafe(result.scopes.join(" ")));
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", 0);
  res.end();
}

/** A refusal to write: the verifier's or one of {@link FORWARD_AUTH_REASONS}. */
interface Refusal {
  status: number;
  error: string;
  description: string;
  headers: VerifyFailure["headers"];
}

function refuse(res: ServerResponse, failure: Refusal): void {
  const body = JSON.stringify({ error: failure.error, error_description: failure.description });
  res.statusCode = failure.status;
  for (const [name, value] of Object.entries(failure.headers)) res.setHeader(name, value);
  res.setHeader(REFUSAL_HEADERS.error, failure.error);
  res.setHeader(REFUSAL_HEADERS.errorDescription, failure.description);
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(body);
}

function validate(options: ForwardAuthOptions): void {
  const routes = options.routes ?? [];
  if (routes.length > MAX_ROUTES) throw new TypeError(`at most ${MAX_ROUTES} routes`);
  for (const route of routes) {
    if (!route.pathPrefix.startsWith("/")) throw new TypeError("a route's path_prefix must start with /");
  }
  if (options.publicOrigin !== undefined) {
    const url = new URL(options.publicOrigin);
    if (url.protocol !== "https:" && url.protocol !== "http:")
      throw new TypeError("publicOrigin must be http(s)");
    if (url.pathname !== "/" || url.search !== "" || url.hash !== "")
      throw new TypeError("publicOrigin must be an origin (scheme, host, port)");
  }
}

/**
 * A node:http handler answering authorization subrequests from Envoy (`ext_authz`, HTTP), nginx
 * (`auth_request`), Caddy (`forward_auth`), Traefik (`forwardAuth`) and HAProxy: 200 with the
 * {@link IDENTITY_HEADERS} allows; 401/403/429/503 with `WWW-Authenticate`/`Retry-After`, the
 * {@link REFUSAL_HEADERS} and a JSON `{error, error_description}` body refuse; 400/500 refuse a
 * subrequest the service cannot judge (see {@link FORWARD_AUTH_REASONS}).
 */
export function createForwardAuthHandler(
  verifier: Verifier,
  options: ForwardAuthOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  validate(options);
  const scopesFor = compileRoutes(options.requiredScopes ?? [], options.routes ?? []);
  const readOptions = {
    trustForwardedHeaders: options.trustForwardedHeaders ?? false,
    publicOrigin: options.publicOrigin,
    pathPrefix: options.pathPrefix ?? "",
  };
  const decide = options.onDecision ?? (() => {});
  const refuseOwn = (res: ServerResponse, reason: ForwardAuthReason, original?: OriginalRequest) => {
    const entry = FORWARD_AUTH_REASONS[reason];
    refuse(res, { ...entry, headers: {} });
    decide({
      outcome: "refuse",
      status: entry.status,
      reason,
      method: original?.method,
      path: original?.path,
    });
  };
  return (req, res) => {
    req.resume();
    const read = originalRequest(req, readOptions);
    if (!read.ok) return refuseOwn(res, read.reason);
    const original = read.request;
    const authorization = req.headers.authorization;
    // RFC 9449 §4.3: exactly one DPoP header; two are joined and so refused as a malformed proof.
    const dpop = Array.isArray(req.headers.dpop) ? req.headers.dpop.join(", ") : req.headers.dpop;
    verifier
      .verify({
        authorization: authorization === "" ? undefined : authorization,
        method: original.method,
        url: original.url,
        requiredScopes: scopesFor(original.method, original.path),
        dpop: dpop === "" ? undefined : dpop,
      })
      .then(
        (result) => {
          const base = { method: original.method, path: original.path };
          if (result.ok) {
            allow(res, result);
            decide({
              outcome: "allow",
              status: 200,
              ...base,
              clientId: result.clientId,
              approvalId: result.approvalId,
            });
          } else {
            refuse(res, result);
            decide({ outcome: "refuse", status: result.status, reason: result.reason, ...base });
          }
        },
        () => refuseOwn(res, "verifier_failed", original),
      );
  };
}

/** Options of {@link startForwardAuthServer}. */
export interface ForwardAuthServerOptions extends ForwardAuthOptions {
  /** TCP port; 0 picks a free one. Default 0. */
  port?: number;
  /** Address to bind. Default `127.0.0.1`: only the proxy beside it should reach the service. */
  host?: string;
}

/** Starts the forward-auth service. Resolves with the listening server and its port. */
export async function startForwardAuthServer(
  verifier: Verifier,
  options: ForwardAuthServerOptions = {},
): Promise<{ server: Server; port: number }> {
  const server = createServer({ maxHeaderSize: 16_384 }, createForwardAuthHandler(verifier, options));
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
