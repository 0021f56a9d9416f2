import type { Context, Next } from "koa";
import type { Logger } from "../ops/logger.js";
import { type ClientErrorLog, createClientErrorLog, isClientDisconnect } from "./client_errors.js";

/**
 * An HTTP error with an OAuth-style body: `{"error", "error_description"}` (docs/reference.md#error). Every refusal
 * has a stable `error` code; 401s carry a `WWW-Authenticate` challenge (RFC 6750 §3).
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
    this.name = "HttpError";
  }
}

/**
 * An API refusal: an {@link HttpError} that also carries the stable `reason` behind its wire `error`,
 * the finer machine code an API logs and audits (e.g. the approval API's `credentials_expired`).
 */
export class ApiError<Reason extends string = string> extends HttpError {
  constructor(
    status: number,
    error: string,
    description: string,
    readonly reason: Reason,
    headers: Record<string, string> = {},
  ) {
    super(status, error, description, headers);
    this.name = "ApiError";
  }
}

/**
 * Koa middleware rendering {@link HttpError}s as JSON and anything else as a 500 without internals
 * (or a 503 `temporarily_unavailable` when the database is unreachable): no stack traces on the wire.
 * A client that closed its connection mid-request (e.g. while its body was read) is one line on
 * `clientErrors` (reason `client_disconnected`), not an error: nobody is left to answer.
 */
export function errorHandler(
  logger: Logger,
  isDatabaseError: (error: unknown) => boolean,
  clientErrors: ClientErrorLog = createClientErrorLog(logger),
) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
    } catch (error) {
      if (error instanceof HttpError) {
        ctx.status = error.status;
        ctx.set(error.headers);
        ctx.body = { error: error.error, error_description: error.description };
        return;
      }
      const expose = (error as { expose?: boolean; status?: number }).expose === true;
      const status = (error as { status?: number }).status;
      if (expose && typeof status === "number" && status >= 400 && status < 500) {
        // Koa/body-parser client errors (e.g. malformed JSON, body too large).
        ctx.status = status;
        ctx.body = { error: "invalid_request", error_description: (error as Error).message };
        return;
      }
      // Before the database check: a reset client's "aborted" carries ECONNRESET too.
      if (isClientDisconnect(error) && (ctx.req.destroyed || ctx.req.socket?.destroyed)) {
        clientErrors.report(ctx.req.socket, error, { method: ctx.method, path: ctx.path.slice(0, 256) });
        ctx.status = 400;
        return;
      }
      if (isDatabaseError(error)) {
        logger.warn({ err: { message: (error as Error).message } }, "database unavailable");
        ctx.status = 503;
        ctx.set("Retry-After", "1");
        ctx.body = {
          error: "temporarily_unavailable",
          error_description: "the service is temporarily unavailable",
        };
        return;
      }
      logger.error({ err: error }, "unhandled error");
      ctx.status = 500;
      ctx.body = { error: "server_error", error_description: "an unexpected error occurred" };
    }
  };
}
