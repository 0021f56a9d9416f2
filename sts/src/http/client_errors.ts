import { type ServerResponse, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "../ops/logger.js";

/** Stable reason codes of a client's connection failing, as logged. */
export type ClientErrorReason =
  | "client_disconnected"
  | "client_request_malformed"
  | "client_request_timeout"
  | "client_headers_too_large";

/**
 * Error codes meaning the client went away mid-request: reset (RST), closed early (EOF inside a
 * request), or a write to a socket it already closed.
 */
const DISCONNECT_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ERR_STREAM_PREMATURE_CLOSE",
  "HPE_INVALID_EOF_STATE",
]);

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The reason a client error is logged under. */
export function clientErrorReason(error: unknown): ClientErrorReason {
  const code = codeOf(error);
  if (code === "ERR_HTTP_REQUEST_TIMEOUT") return "client_request_timeout";
  if (code === "HPE_HEADER_OVERFLOW") return "client_headers_too_large";
  if (isClientDisconnect(error)) return "client_disconnected";
  return "client_request_malformed";
}

/** True when `error` is the client going away (reset, early close), not a fault of the STS. */
export function isClientDisconnect(error: unknown): boolean {
  const code = codeOf(error);
  if (code !== undefined && DISCONNECT_CODES.has(code)) return true;
  // Node's IncomingMessage says "aborted" when its connection closes before the body is complete.
  return error instanceof Error && error.message === "aborted";
}

/** Logs client connection failures: one structured line per connection, never a stack. */
export interface ClientErrorLog {
  /**
   * Logs `error` (its code and a reason, no stack) unless this socket already had its line: the same
   * reset reaches the server, the request stream and Koa, and is one event.
   */
  report(socket: Socket | undefined, error: unknown, request?: { method: string; path: string }): void;
}

/** A {@link ClientErrorLog} writing to `logger` at info level (a reset client is not an STS fault). */
export function createClientErrorLog(logger: Logger): ClientErrorLog {
  const reported = new WeakSet<Socket>();
  return {
    report(socket, error, request) {
      if (socket) {
        if (reported.has(socket)) return;
        reported.add(socket);
      }
      const reason = clientErrorReason(error);
      logger.info(
        {
          event: "http.client_error",
          reason,
          code: codeOf(error) ?? null,
          ...(request ? { method: request.method, path: request.path } : {}),
        },
        reason === "client_disconnected"
          ? "client closed the connection mid-request"
          : "client request refused",
      );
    },
  };
}

function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`;
}

/**
 * A `clientError` listener for the HTTP server: logs through `log` and answers as Node does by default
 * (400, 408 or 431 when nothing of a response was written yet), then destroys the socket without an
 * error, so Koa does not print the same failure again as a stack trace.
 */
export function clientErrorListener(log: ClientErrorLog): (error: Error, socket: Socket) => void {
  return (error, socket) => {
    // The response of a request in progress on this socket, if any (Node's own field).
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    const request = inFlight?.req;
    log.report(
      socket,
      error,
      request?.method && request.url
        ? { method: request.method, path: request.url.split("?")[0]?.slice(0, 256) ?? "" }
        : undefined,
    );
    if (socket.writable && !isClientDisconnect(error) && !inFlight?.headersSent) {
      const reason = clientErrorReason(error);
      const status =
        reason === "client_request_timeout" ? 408 : reason === "client_headers_too_large" ? 431 : 400;
      socket.write(statusLine(status));
    }
    socket.destroy();
  };
}

/**
 * A Koa `error` listener (Koa's report of an error no middleware answered, e.g. a socket failing under
 * a response): a client going away is reported to `log`; anything else is one error line on `logger`.
 * Registering it also replaces Koa's default, which prints a stack trace to stderr.
 */
export function koaErrorListener(
  log: ClientErrorLog,
  logger: Logger,
): (error: unknown, ctx?: { method: string; path: string; req: { socket: Socket } }) => void {
  return (error, ctx) => {
    if (isClientDisconnect(error)) {
      log.report(
        ctx?.req.socket,
        error,
        ctx ? { method: ctx.method, path: ctx.path.slice(0, 256) } : undefined,
      );
      return;
    }
    logger.error({ err: error }, "http error");
  };
}
