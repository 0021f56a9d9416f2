import type Router from "@koa/router";
import { sql } from "kysely";
import type { RevocationsConfig } from "../config/schema.js";
import type { DatabaseHandle } from "../db/connect.js";
import type { Logger } from "../ops/logger.js";
import { REVOCATIONS_CHANNEL } from "./channel.js";
import { RevocationHub } from "./hub.js";
import { listenPglite, listenPostgres, type NotificationListener } from "./listener.js";
import { revocationRoutes } from "./routes.js";
import { sweepExpiredApprovals } from "./sweeper.js";

/** The revocation feed, its stream, the expiry sweeper and the NOTIFY listener of one instance. */
export interface RevocationService {
  /** `GET /revocations` and `GET /revocations/stream`. */
  readonly router: Router;
  readonly hub: RevocationHub;
  /** Runs one expiry sweep now; resolves with the approval ids it wrote (tests, operators). */
  sweep(): Promise<string[]>;
  /** Ends open streams and refuses new ones, so a draining server is not held open by them. */
  drain(): void;
  /** Stops the sweeper, the listener and the hub. Idempotent. */
  close(): Promise<void>;
}

/**
 * Builds and starts the revocation machinery for one instance. On real Postgres one dedicated LISTEN
 * connection on `countersign_revocations` wakes the stream fan-out whenever any instance revokes or
 * sweeps; on PGlite the embedded database's own `listen` does (one process).
 */
export async function startRevocationService(
  database: DatabaseHandle,
  config: RevocationsConfig,
  logger: Logger,
): Promise<RevocationService> {
  const { db } = database;
  const hub = new RevocationHub({
    db,
    logger,
    maxSubscribers: config.max_stream_subscribers,
    heartbeatMs: config.stream_heartbeat_seconds * 1000,
    pollMs: config.poll_interval_seconds * 1000,
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

  let sweeping: Promise<string[]> | undefined;
  let lastErrorLog = 0;
  async function sweepOnce(): Promise<string[]> {
    const ids = await sweepExpiredApprovals(db);
    if (ids.length > 0) {
      logger.info({ count: ids.length }, "approval expiries added to the revocation feed");
      await sql`select pg_notify(${REVOCATIONS_CHANNEL}, 'expired')`.execute(db);
      hub.wake();
    }
    return ids;
  }
  function sweep(): Promise<string[]> {
    sweeping ??= sweepOnce().finally(() => {
      sweeping = undefined;
    });
    return sweeping;
  }
  const tick = (): void => {
    sweep().catch((error: unknown) => {
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

  let closing: Promise<void> | undefined;
  return {
    router: revocationRoutes(db, hub),
    hub,
    sweep,
    drain: () => hub.endStreams(),
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        await hub.close();
        await listener?.close();
        await sweeping?.catch(() => {});
      })();
      return closing;
    },
  };
}
