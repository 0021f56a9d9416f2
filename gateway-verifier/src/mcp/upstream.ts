import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from "node:http";
import https from "node:https";

/** Hop-by-hop headers (RFC 9110 §7.6.1) and those the gateway sets itself: never copied across. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
  "expect",
]);

/**
 * Request headers never forwarded: the agent's credentials (MCP `basic/authorization`: a server MUST
 * NOT pass through the token it received), plus hop-by-hop ones and those named in `Connection`.
 */
const CREDENTIALS = new Set(["authorization", "dpop"]);

function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection;
  const tokens = new Set<string>();
  for (const part of (Array.isArray(value) ? value.join(",") : (value ?? "")).split(",")) {
    const token = part.trim().toLowerCase();
    if (token !== "") tokens.add(token);
  }
  return tokens;
}

/**
 * The headers sent upstream: the client's, minus credentials, hop-by-hop headers, headers starting
 * with `stripPrefix`, then `extra` (static or minted upstream credentials, identity headers) on top.
 */
export function upstreamRequestHeaders(
  req: IncomingMessage,
  extra: Readonly<Record<string, string>>,
  stripPrefix: string,
): OutgoingHttpHeaders {
  const named = connectionTokens(req.headers);
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || CREDENTIALS.has(name) || named.has(name)) continue;
    if (name.startsWith(stripPrefix)) continue;
    headers[name] = value;
  }
  for (const [name, value] of Object.entries(extra)) headers[name.toLowerCase()] = value;
  return headers;
}

/** The headers returned to the client: the upstream's minus hop-by-hop ones and `WWW-Authenticate`. */
export function clientResponseHeaders(res: IncomingMessage): OutgoingHttpHeaders {
  const named = connectionTokens(res.headers);
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined || named.has(name)) continue;
    if (HOP_BY_HOP.has(name) && name !== "content-length") continue;
    // The upstream's challenges concern the gateway's credentials, never the agent's (no passthrough).
    if (name === "www-authenticate") continue;
    headers[name] = value;
  }
  return headers;
}

/** One forwarded exchange. */
export interface ForwardOptions {
  upstream: URL;
  method: string;
  /** The request's query string (with `?`), appended to the upstream URL. */
  search: string;
  headers: OutgoingHttpHeaders;
  body: Buffer | undefined;
  agent: http.Agent | https.Agent;
  /** Milliseconds to wait for the upstream's response headers. */
  timeoutMs: number;
}

/** How a forwarded exchange ended before the response could start. */
export type ForwardFailure = "upstream_unavailable" | "upstream_timeout";

/**
 * Sends one request upstream and calls `onResponse` with the upstream response, or `onFailure` when
 * no response headers came (refused connection, timeout). Closing the client's side aborts the
 * upstream request (for a 2026-07-28 SSE response this is the cancellation signal).
 */
export function forward(
  options: ForwardOptions,
  client: ServerResponse,
  onResponse: (upstream: IncomingMessage) => void,
  onFailure: (failure: ForwardFailure) => void,
): void {
  const target = options.upstream;
  const path =
    options.search === ""
      ? `${target.pathname}${target.search}`
      : `${target.pathname}${target.search === "" ? "?" : `${target.search}&`}${options.search.slice(1)}`;
  const transport = target.protocol === "https:" ? https : http;
  const headers: OutgoingHttpHeaders = { ...options.headers, host: target.host };
  if (options.body !== undefined) headers["content-length"] = options.body.length;
  let settled = false;
  const request = transport.request({
    protocol: target.protocol,
    hostname: target.hostname.replace(/^\[|\]$/g, ""),
    port: target.port,
    method: options.method,
    path,
    headers,
    agent: options.agent,
  });
  const timer = setTimeout(() => {
    if (settled) return;
    settled = true;
    request.destroy();
    onFailure("upstream_timeout");
  }, options.timeoutMs);
  timer.unref();
  request.on("response", (response) => {
    clearTimeout(timer);
    if (settled) {
      response.destroy();
      return;
    }
    settled = true;
    onResponse(response);
  });
  request.on("error", () => {
    clearTimeout(timer);
    if (settled) return;
    settled = true;
    onFailure("upstream_unavailable");
  });
  client.on("close", () => {
    if (!client.writableFinished) request.destroy();
  });
  request.end(options.body);
}

/**
 * Streams the upstream response to the client unchanged: status, headers (minus hop-by-hop), body
 * chunk by chunk as it arrives (SSE is never buffered: headers are flushed at once and each chunk is
 * written when read). An upstream failure mid-stream destroys the client connection, so the client
 * sees a truncated stream rather than a complete-looking one.
 */
export function relay(upstream: IncomingMessage, client: ServerResponse, status: number): void {
  const headers = clientResponseHeaders(upstream);
  const type = String(upstream.headers["content-type"] ?? "");
  if (type.toLowerCase().startsWith("text/event-stream") && headers["x-accel-buffering"] === undefined) {
    headers["x-accel-buffering"] = "no";
  }
  client.writeHead(status, headers);
  client.flushHeaders();
  upstream.on("error", () => client.destroy());
  upstream.on("close", () => {
    if (!upstream.complete) client.destroy();
  });
  client.on("close", () => {
    if (!upstream.complete) upstream.destroy();
  });
  upstream.pipe(client);
}
