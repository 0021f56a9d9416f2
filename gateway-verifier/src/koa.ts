import type { Context, Middleware } from "koa";
import { failureBody, type RequiredScopes, requestUrl, scopesFor } from "./http_adapter.js";
import type { Verifier } from "./types.js";

/** Options of {@link koaVerifier}. */
export interface KoaMiddlewareOptions {
  /** Scopes every request through this middleware needs, or a function of (method, path). Default none. */
  requiredScopes?: RequiredScopes;
  /**
   * Public origin clients address, e.g. `https://crm.example.test`, used for DPoP `htu`. Default: the
   * scheme of the connection (or `X-Forwarded-Proto` when `app.proxy` is true) and the `Host` header,
   * as the Express/connect adapter builds it; never the `Origin` header, which the client chooses.
   */
  publicOrigin?: string;
  /** `ctx.state` key receiving the {@link VerifySuccess}. Default `"countersign"`. */
  stateKey?: string;
}

/**
 * Koa middleware: verifies the request, answers refusals itself (status, `WWW-Authenticate`,
 * `Retry-After`, JSON `{error, error_description}`), and on success stores the result in
 * `ctx.state.countersign` and calls the next middleware.
 */
export function koaVerifier(verifier: Verifier, options: KoaMiddlewareOptions = {}): Middleware {
  const stateKey = options.stateKey ?? "countersign";
  return async (ctx: Context, next) => {
    const result = await verifier.verify({
      authorization: ctx.get("authorization") || undefined,
      method: ctx.method,
      // Koa 3's ctx.origin is the client's Origin header: never use it for htu (RFC 9449 §4.3).
      url: requestUrl(ctx.req, ctx.originalUrl, options.publicOrigin, ctx.app.proxy),
      requiredScopes: scopesFor(options.requiredScopes, ctx.method, ctx.path),
      dpop: ctx.get("dpop") || undefined,
    });
    if (!result.ok) {
      ctx.status = result.status;
      for (const [name, value] of Object.entries(result.headers)) ctx.set(name, value);
      ctx.set("cache-control", "no-store");
      ctx.type = "application/json";
      ctx.body = failureBody(result);
      return;
    }
    ctx.state[stateKey] = result;
    await next();
  };
}
