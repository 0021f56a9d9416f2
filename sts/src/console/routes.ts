import { readFileSync } from "node:fs";
import Router from "@koa/router";
import type { Context, Next } from "koa";
import { z } from "zod";
import { isAllowedHost } from "../http/allowed_host.js";
import { HttpError } from "../http/errors.js";
import { readJsonBody } from "../http/json_body.js";
import { isLoopbackAddress } from "../http/loopback_peer.js";
import { packagePath } from "../ops/package_root.js";
import type { StsServices } from "../services.js";

/**
 * Content-Security-Policy of every console response: scripts, styles and connections from this
 * origin only, no inline script or style, no framing (clickjacking), no plugins, no `<base>` games.
 */
export const CONSOLE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** The `error_description` of a development token refused to a peer that is not on loopback. */
export const DEV_TOKEN_PEER_REFUSAL =
  "dev-token: only a loopback peer (127.0.0.0/8 or ::1) may ask for a development token; run it on the STS's machine";

/** Lifetime of a development approver token minted by `POST /console/dev-token`, in seconds. */
export const DEV_TOKEN_TTL_SECONDS = 900;

/**
 * The console's static files: name under `/console/assets/` → content type. An allow-list: a file
 * in static/ that is not named here is not served (404), so every module the page imports is listed.
 */
const ASSETS: Readonly<Record<string, string>> = {
  "console.js": "text/javascript; charset=utf-8",
  "api.js": "text/javascript; charset=utf-8",
  "view.js": "text/javascript; charset=utf-8",
  "page.js": "text/javascript; charset=utf-8",
  "state.js": "text/javascript; charset=utf-8",
  "auth.js": "text/javascript; charset=utf-8",
  "decide.js": "text/javascript; charset=utf-8",
  "card.js": "text/javascript; charset=utf-8",
  "list.js": "text/javascript; charset=utf-8",
  "console.css": "text/css; charset=utf-8",
  "favicon.svg": "image/svg+xml",
};

const devTokenBody = z
  .object({
    /** The approver's name, the token's `sub`. */
    sub: z.string().regex(/^[A-Za-z0-9._@:-]{1,128}$/, "must be 1 to 128 of A-Z a-z 0-9 . _ @ : -"),
  })
  .strict();

function readStatic(name: string): Buffer {
  return readFileSync(packagePath(`sts/src/console/static/${name}`));
}

/** Sets the console's security headers on the response. */
function securityHeaders(ctx: Context): void {
  ctx.set({
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
  });
}

/**
 * The approval console (`GET /console`): a static page of plain ES modules (no build step, no CDN)
 * that talks to the approval API with the approver's bearer token, kept in the tab's
 * `sessionStorage`. It polls the API every two seconds for new requests.
 *
 * In dev mode only, `POST /console/dev-token` `{"sub"}` mints a short-lived development approver
 * token (the same as `countersign dev-token --usage approver`); without dev mode the route does not
 * exist (404). It answers only a peer whose socket address is loopback (127.0.0.0/8 or ::1; never
 * from `X-Forwarded-For`), so an STS in dev mode bound to another interface does not hand approver
 * tokens to the network (else 403 `access_denied`, logged with reason `peer_not_loopback`). It
 * requires a JSON body, so a cross-site form cannot trigger it, and a `Host` header naming loopback or
 * the issuer's host and port (else 403 `access_denied`, logged with reason `host_not_allowed`), so a
 * DNS-rebound page cannot call it same-origin.
 */
export function consoleRoutes(services: StsServices): Router {
  const { config, devIssuer, logger } = services;
  const devMode = config.dev_mode && devIssuer !== undefined;
  const page = readStatic("index.html")
    .toString("utf8")
    .replace('content="countersign-dev-mode"', `content="${devMode ? "true" : "false"}"`);
  const assets = new Map(
    Object.entries(ASSETS).map(([name, type]) => [name, { type, body: readStatic(name) }]),
  );

  // Strict: `/console/` is not `/console` (the page's relative URLs need the latter).
  const router = new Router({ strict: true });
  router.use(async (ctx: Context, next: Next) => {
    securityHeaders(ctx);
    await next();
  });

  router.get("/console", (ctx) => {
    ctx.set("Cache-Control", "no-store");
    ctx.type = "text/html; charset=utf-8";
    ctx.body = page;
  });
  router.get("/console/", (ctx) => {
    ctx.status = 308;
    ctx.redirect("../console");
  });
  router.get("/console/assets/:name", (ctx) => {
    const asset = assets.get(ctx.params.name ?? "");
    if (!asset) {
      ctx.status = 404;
      ctx.body = { error: "not_found", error_description: "no such file" };
      return;
    }
    ctx.set("Cache-Control", "no-cache");
    ctx.type = asset.type;
    ctx.body = asset.body;
  });

  if (devMode && devIssuer) {
    router.post("/console/dev-token", async (ctx) => {
      const peer = ctx.req.socket.remoteAddress;
      if (!isLoopbackAddress(peer)) {
        logger.warn(
          { event: "console.dev_token", reason: "peer_not_loopback", peer: peer ?? null },
          "development token refused: the peer is not on loopback",
        );
        throw new HttpError(403, "access_denied", DEV_TOKEN_PEER_REFUSAL);
      }
      const host = ctx.get("Host") || undefined;
      if (!isAllowedHost(host, config.issuer)) {
        logger.warn(
          { event: "console.dev_token", reason: "host_not_allowed", host: host?.slice(0, 256) ?? null },
          "development token refused: the Host header names neither loopback nor the issuer",
        );
        throw new HttpError(
          403,
          "access_denied",
          "dev-token: the Host header must name 127.0.0.1, [::1], localhost or the issuer's host and port",
        );
      }
      const { sub } = await readJsonBody(ctx, devTokenBody);
      const token = await devIssuer.mint({ sub, usage: "approver", ttlSeconds: DEV_TOKEN_TTL_SECONDS });
      logger.info({ event: "console.dev_token", sub }, "development approver token minted");
      ctx.set("Cache-Control", "no-store");
      ctx.body = {
        access_token: token,
        token_type: "Bearer",
        expires_in: DEV_TOKEN_TTL_SECONDS,
        sub,
      };
    });
  }

  return router;
}
