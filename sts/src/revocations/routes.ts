import Router from "@koa/router";
import type { Context } from "koa";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { HttpError } from "../http/errors.js";
import { clientAddress, type TrustProxy } from "./client_address.js";
import {
  type CursorReset,
  checkCursor,
  type FeedCursor,
  formatCursor,
  MAX_FEED_PAGE,
  parseCursor,
  readFeed,
  readFeedState,
} from "./feed.js";
import type { FeedReadLimiter } from "./feed_rate_limit.js";
import type { RevocationHub } from "./hub.js";
import type { WaitRefusal } from "./wire.js";

/** Options for {@link revocationRoutes}. */
export interface RevocationRoutesOptions {
  /** `revocations.trust_proxy`: whether `X-Forwarded-For` names the client address. */
  readonly trustProxy: TrustProxy;
  /** Reads of `GET /revocations` per client address (`revocations.max_feed_reads_per_address_per_minute`). */
  readonly feedReads: FeedReadLimiter;
}

/**
 * `Retry-After` (RFC 9110 §10.2.3) of the 503 answered when every stream slot of the instance is
 * taken (`max_stream_subscribers`). Short: a slot frees as soon as any of the instance's subscribers
 * leaves, and behind a load balancer the retry may reach an instance with free slots. A gateway loses
 * nothing meanwhile (polling keeps its list fresh; the stream only speeds revocations up), so there is
 * no reason to go below the gateway verifier's own first reconnection delay (1 s) by much either.
 */
export const STREAMS_FULL_RETRY_AFTER_SECONDS = 5;

/**
 * `Retry-After` of the 429 answered when the client address holds `max_streams_per_address` streams.
 * Longer than {@link STREAMS_FULL_RETRY_AFTER_SECONDS}: only one of the address's own streams closing
 * frees a slot, and those are the caller's; retrying sooner rarely finds one.
 */
export const ADDRESS_STREAMS_RETRY_AFTER_SECONDS = 10;

function invalidRequest(description: string): HttpError {
  return new HttpError(400, "invalid_request", description);
}

/** One query parameter as a string; repeated parameters are refused. */
function single(value: string | string[] | undefined, name: string): string | undefined {
  if (Array.isArray(value)) throw invalidRequest(`${name} must be given once`);
  return value;
}

function parseAfter(value: string | undefined, name: string): FeedCursor | undefined {
  if (value === undefined) return undefined;
  const cursor = parseCursor(value);
  if (cursor === undefined) throw invalidRequest(`${name} must be a cursor from this feed`);
  return cursor;
}

/**
 * 410 `cursor_reset`: the cursor cannot be continued from; `cursor` says where to restart (reading
 * `GET /revocations?after=<cursor>` from there misses nothing the feed holds).
 */
function answerReset(ctx: Context, reset: CursorReset): void {
  ctx.status = 410;
  ctx.set("Cache-Control", "no-store");
  ctx.body = {
    error: "cursor_reset",
    error_description: reset.description,
    reason: reset.reason,
    cursor: reset.restart,
  };
}

/** A refusal of the feed or the stream asking the caller to wait (429 or 503): `Retry-After`, never cached. */
function refuseWait(ctx: Context, status: 429 | 503, retryAfter: number, body: WaitRefusal): void {
  ctx.status = status;
  ctx.set("Retry-After", String(retryAfter));
  ctx.set("Cache-Control", "no-store");
  ctx.body = body;
}

/**
 * `GET /revocations?after=<cursor>&limit=<n>` (docs/reference.md#the-revocation-feed): revoked and expired approvals whose
 * tokens may still be alive, oldest first, at most `limit` (default and maximum 500) per page. Cursors
 * are `<epoch>.<n>`; a plain `<n>` (earlier versions) is read as the current epoch. Without `after` the
 * read starts at the low-water mark (the whole current snapshot). `cursor` is the last entry's, or the
 * feed's head when the page is empty. A cursor of another epoch, below the low-water mark or ahead of
 * the head is answered 410 `cursor_reset` with where to restart. No credentials: the feed lists ids only.
 * Reads per client address are bounded (`max_feed_reads_per_address_per_minute`): beyond it 429
 * `slow_down`, reason `feed_rate_limited`, with `Retry-After`.
 *
 * `GET /revocations/stream`: the same entries pushed as server-sent events (`id: <cursor>`, `data:
 * <entry JSON>`), from now on, or after `Last-Event-ID` / `?after=` when resuming (replayed from the
 * instance's memory, at most `max_replay_entries`). Slots are bounded per instance (503, reason
 * `stream_subscribers_reached`) and per client address (429 `too_many_streams`, reason
 * `streams_per_address_reached`), and so are replays per client address and minute (429
 * `too_many_streams`, reason `replay_rate_limited`): resuming with a backlog, or with a cursor that
 * makes the instance re-read the feed (ahead of its head, or of another epoch), costs one.
 */
export function revocationRoutes(
  db: Kysely<Database>,
  hub: RevocationHub,
  options: RevocationRoutesOptions,
): Router {
  const router = new Router();

  router.get("/revocations", async (ctx) => {
    const address = clientAddress(
      ctx.req.socket.remoteAddress,
      ctx.req.headers["x-forwarded-for"],
      options.trustProxy,
    );
    const retryAfter = await options.feedReads.take(address);
    if (retryAfter > 0) {
      refuseWait(ctx, 429, retryAfter, {
        error: "slow_down",
        error_description: "too many revocation feed reads from this address: poll less often",
        reason: "feed_rate_limited",
      });
      return;
    }
    const after = parseAfter(single(ctx.query.after, "after"), "after");
    const limitText = single(ctx.query.limit, "limit");
    let limit = MAX_FEED_PAGE;
    if (limitText !== undefined) {
      if (!/^[1-9][0-9]{0,5}$/.test(limitText) || Number(limitText) > MAX_FEED_PAGE) {
        throw invalidRequest(`limit must be an integer from 1 to ${MAX_FEED_PAGE}`);
      }
      limit = Number(limitText);
    }
    const state = await readFeedState(db);
    const reset = after === undefined ? undefined : checkCursor(after, state);
    if (reset !== undefined) {
      answerReset(ctx, reset);
      return;
    }
    const from = after?.position ?? state.lowWater;
    const revocations = await readFeed(db, state.epoch, from, limit);
    ctx.set("Cache-Control", "no-store");
    ctx.body = {
      revocations,
      // An empty page: every entry up to the head was read (the cursor was checked: it is at most the head).
      cursor: revocations.at(-1)?.cursor ?? formatCursor(state.epoch, state.head),
      has_more: revocations.length === limit,
      low_water: formatCursor(state.epoch, state.lowWater),
    };
  });

  router.get("/revocations/stream", async (ctx) => {
    const header = ctx.get("Last-Event-ID");
    const after =
      header !== ""
        ? parseAfter(header.trim(), "Last-Event-ID")
        : parseAfter(single(ctx.query.after, "after"), "after");
    const { req, res } = ctx;
    const address = clientAddress(
      req.socket.remoteAddress,
      req.headers["x-forwarded-for"],
      options.trustProxy,
    );
    const admission = await hub.admit(res, address, after);
    if (admission.outcome === "full") {
      refuseWait(ctx, 503, STREAMS_FULL_RETRY_AFTER_SECONDS, {
        error: "temporarily_unavailable",
        error_description: "too many revocation stream subscribers",
        reason: "stream_subscribers_reached",
      });
      return;
    }
    if (admission.outcome === "address_full") {
      refuseWait(ctx, 429, ADDRESS_STREAMS_RETRY_AFTER_SECONDS, {
        error: "too_many_streams",
        error_description:
          "too many revocation streams from this address: close one, or poll GET /revocations",
        reason: "streams_per_address_reached",
      });
      return;
    }
    if (admission.outcome === "replays_exhausted") {
      refuseWait(ctx, 429, admission.retryAfterSeconds, {
        error: "too_many_streams",
        error_description:
          "too many revocation stream replays for this address: resume less often, or poll GET /revocations",
        reason: "replay_rate_limited",
      });
      return;
    }
    if (admission.outcome === "reset") {
      answerReset(ctx, admission.reset);
      return;
    }
    ctx.respond = false;
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
    await admission.subscription.run();
  });

  return router;
}
