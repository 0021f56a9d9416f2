import Router from "@koa/router";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { HttpError } from "../http/errors.js";
import { isCursor, MAX_FEED_PAGE, readFeed } from "./feed.js";
import type { RevocationHub } from "./hub.js";

function invalidRequest(description: string): HttpError {
  return new HttpError(400, "invalid_request", description);
}

/** One query parameter as a string; repeated parameters are refused. */
function single(value: string | string[] | undefined, name: string): string | undefined {
  if (Array.isArray(value)) throw invalidRequest(`${name} must be given once`);
  return value;
}

function parseAfter(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (!isCursor(value)) throw invalidRequest(`${name} must be a cursor from this feed`);
  return value;
}

/**
 * `GET /revocations?after=<cursor>&limit=<n>` (docs/reference.md#the-revocation-feed): revoked and expired approvals, oldest first,
 * at most `limit` (default and maximum 500) per page; `cursor` is the last entry's, or `after` when the
 * page is empty. No credentials: the feed lists ids only.
 *
 * `GET /revocations/stream`: the same entries pushed as server-sent events (`id: <cursor>`, `data:
 * <entry JSON>`), from now on, or after `Last-Event-ID` / `?after=` when resuming.
 */
export function revocationRoutes(db: Kysely<Database>, hub: RevocationHub): Router {
  const router = new Router();

  router.get("/revocations", async (ctx) => {
    const after = parseAfter(single(ctx.query.after, "after"), "after") ?? "0";
    const limitText = single(ctx.query.limit, "limit");
    let limit = MAX_FEED_PAGE;
    if (limitText !== undefined) {
      if (!/^[1-9][0-9]{0,5}$/.test(limitText) || Number(limitText) > MAX_FEED_PAGE) {
        throw invalidRequest(`limit must be an integer from 1 to ${MAX_FEED_PAGE}`);
      }
      limit = Number(limitText);
    }
    const revocations = await readFeed(db, after, limit);
    ctx.set("Cache-Control", "no-store");
    ctx.body = {
      revocations,
      cursor: revocations.at(-1)?.cursor ?? after,
      has_more: revocations.length === limit,
    };
  });

  router.get("/revocations/stream", async (ctx) => {
    const header = ctx.get("Last-Event-ID");
    const after =
      header !== ""
        ? parseAfter(header.trim(), "Last-Event-ID")
        : parseAfter(single(ctx.query.after, "after"), "after");
    if (!hub.acceptsSubscribers) {
      throw new HttpError(503, "temporarily_unavailable", "too many revocation stream subscribers", {
        "Retry-After": "5",
      });
    }
    ctx.respond = false;
    const { req, res } = ctx;
    req.socket.setTimeout(0);
    req.socket.setNoDelay(true);
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      // A stream never becomes idle: closing the connection with it lets a draining server stop at once.
      Connection: "close",
      "X-Accel-Buffering": "no",
    });
    res.write("retry: 2000\n: connected\n\n");
    await hub.subscribe(res, after);
  });

  return router;
}
