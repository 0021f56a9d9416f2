import type Router from "@koa/router";
import { sql } from "kysely";
import type { RevocationsConfig } from "../config/schema.js";
import type { DatabaseHandle } from "../db/connect.js";
import type { Logger } from "../ops/logger.js";
import { REVOCATIONS_CHANNEL } from "./channel.js";
import { FeedReadLimiter } from "./feed_rate_limit.js";
import { RevocationHub } from "./hub.js";
import { listenPglite, listenPostgres, type NotificationListener } from "./listener.js";
import { revocationRoutes } from "./routes.js";
import { compactFeed, sweepExpiredApprovals } from "./sweeper.js";

/**
 * The revocation feed, its stream, the sweeper (expiries in, compaction out) and the NOTIFY listener of
 * one instance.
 */
export interface RevocationService {
  /** `GET /revocations` and `GET /revocations/stream`. */
  readonly router: Router;
  readonly hub: RevocationHub;
  /**
   * Runs one sweep that starts after this call: writes expiries, then compacts the feed. Resolves with
   * the approval ids it wrote (tests, operators); `compacted` is how many entries the compaction removed.
   * A sweep already running (the timer's) is not joined, since it may have read the approvals before
   * the caller's change: the new one runs after it. Calls made meanwhile share that one queued sweep.
   */
  sweep(): Promise<SweepResult>;
  /** Ends open streams and refuses new ones, so a draining server is not held open by them. */
  drain(): void;
  /** Stops the sweeper, the listener and the hub. Idempotent. */
  close(): Promise<void>;
}

/** What one sweep did. */
export interface SweepResult {
  /** Approval ids whose expiry entered the feed. */
  readonly expired: string[];
  /** Entries compacted away. */
  readonly compacted: number;
}

/** Optional dependencies of {@link startRevocationService}. */
export interface RevocationServiceOptions {
  /**
   * The clock of the stream's replay budget, in milliseconds since the epoch. Default `Date.now` (tests
   * freeze it). The feed read limiter is rate-limiter-flexible's and reads `Date.now()` itself.
   */
  readonly now?: () => number;
}

/**
 * Builds and starts the revocation machinery for one instance. On real Postgres one dedicated LISTEN
 * connection on `countersign_revocations` wakes the stream fan-out whenever any instance revokes or
 * sweeps; on PGlite the embedded database's own `listen` does (one process).
 * @param maxTokenTtlSeconds - `tokens.max_ttl_seconds`: bounds the tokens of an entry whose
 *   `issued_tokens` rows are gone (see {@link compactFeed}).
 */
export async function startRevocationService(
  database: DatabaseHandle,
  config: RevocationsConfig,
  logger: Logger,
  maxTokenTtlSeconds: number,
  options: RevocationServiceOptions = {},
): Promise<RevocationService> {
  const { db } = database;
  const hub = new RevocationHub({
    db,
    logger,
    maxSubscribers: config.max_stream_subscribers,
    maxPerAddress: config.max_streams_per_address,
    maxReplaysPerMinute: config.max_replays_per_address_per_minute,
    maxReplayEntries: config.max_replay_entries,
    heartbeatMs: config.stream_heartbeat_seconds * 1000,
    pollMs: config.poll_interval_seconds * 1000,
    now: options.now,
  });
  await hub.start();
  const wake = (): void => hub.wake();
  let listener: NotificationListener | undefined;
  if (database.pool) {
    listener = listenPostgres({
      connection: database.pool.options,
      channel: REVOCATIONS_CHANNEL,
      onWake: wake,
      logger,
    });
  } else if (database.pglite) {
    listener = await listenPglite(database.pglite, REVOCATIONS_CHANNEL, wake);
  }

  /** The sweep running now, and the one queued behind it (at most one of each). */
  let sweeping: Promise<SweepResult> | undefined;
  let queued: Promise<SweepResult> | undefined;
  let closing: Promise<void> | undefined;
  let lastErrorLog = 0;
  async function sweepOnce(): Promise<SweepResult> {
    const expired = await sweepExpiredApprovals(db, config.compaction_grace_seconds);
    if (expired.length > 0) {
      logger.info({ count: expired.length }, "approval expiries added to the revocation feed");
      await sql`select pg_notify(${REVOCATIONS_CHANNEL}, 'expired')`.execute(db);
      hub.wake();
    }
    const compacted = await compactFeed(db, {
      graceSeconds: config.compaction_grace_seconds,
      maxTokenTtlSeconds,
    });
    if (compacted > 0) {
      logger.info({ event: "revocations.compacted", count: compacted }, "revocation feed compacted");
      hub.wake();
    }
    return { expired, compacted };
  }
  function startSweep(): Promise<SweepResult> {
    const running: Promise<SweepResult> = sweepOnce().finally(() => {
      if (sweeping === running) sweeping = undefined;
    });
    sweeping = running;
    return running;
  }
  function sweep(): Promise<SweepResult> {
    // A queued sweep has not started yet (it may be about to, the running one just ended): join it.
    if (queued) return queued;
    if (!sweeping) return startSweep();
    queued = sweeping
      .catch(() => undefined)
      .then(() => {
        queued = undefined;
        if (closing) throw new Error("the revocation service is closed");
        return startSweep();
      });
    return queued;
  }
  const tick = (): void => {
    // The timer skips a beat rather than queue behind a slow sweep.
    (sweeping ?? queued ?? startSweep()).catch((error: unknown) => {
      const now = Date.now();
      if (now - lastErrorLog > 10_000) {
        lastErrorLog = now;
        logger.warn({ err: { message: (error as Error).message } }, "approval expiry sweep failed");
      }
    });
  };
  const timer = setInterval(tick, config.sweep_interval_seconds * 1000);
  timer.unref();
  tick();

  return {
    router: revocationRoutes(db, hub, {
      trustProxy: config.trust_proxy,
      feedReads: new FeedReadLimiter({ perMinute: config.max_feed_reads_per_address_per_minute }),
    }),
    hub,
    sweep,
    drain: () => hub.endStreams(),
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        await hub.close();
        await listener?.close();
        await queued?.catch(() => {});
        await sweeping?.catch(() => {});
      })();
      return closing;
    },
  };
}
