import type { IncomingMessage, ServerResponse } from "node:http";
import {
  type RequiredScopes,
  requestUrl,
  scopesFor,
  verifyRequestFrom,
  writeFailure,
} from "./http_adapter.js";
import type { Verifier, VerifySuccess } from "./types.js";

/** Options of {@link connectVerifier}. */
export interface ConnectMiddlewareOptions {
  /** Scopes every request through this middleware needs, or a function of (method, path). Default none. */
  requiredScopes?: RequiredScopes;
  /** Public origin clients address, e.g. `https://crm.example.test`, used for DPoP `htu`. */
  publicOrigin?: string;
  /** Trust `X-Forwarded-Proto` for the scheme when `publicOrigin` is unset. Default false. */
  trustProxy?: boolean;
}

/** A request after the middleware let it through. */
export type VerifiedRequest = IncomingMessage & { countersign?: VerifySuccess };

/**
 * Express/connect middleware `(req, res, next)`: answers refusals itself, and on success sets
 * `req.countersign` and calls `next()`. Uses `req.originalUrl` when Express provides it.
 */
export function connectVerifier(
  verifier: Verifier,
  options: ConnectMiddlewareOptions = {},
): (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void {
  const trustProxy = options.trustProxy ?? false;
  return (req, res, next) => {
    const path = (req as { originalUrl?: string }).originalUrl ?? req.url ?? "/";
    const method = req.method ?? "GET";
    const pathname = path.split("?", 1)[0] ?? path;
    const request = verifyRequestFrom(
      req,
      method,
      requestUrl(req, path, options.publicOrigin, trustProxy),
      scopesFor(options.requiredScopes, method, pathname),
    );
    verifier.verify(request).then(
      (result) => {
        if (!result.ok) {
          writeFailure(res, result);
          return;
        }
        (req as VerifiedRequest).countersign = result;
        next();
      },
      (error: unknown) => next(error),
    );
  };
}
