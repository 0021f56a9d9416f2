import type { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { Logger } from "../ops/logger.js";

/** A subscription to the revocations NOTIFY channel. */
export interface NotificationListener {
  /** Stops listening and closes the connection. Idempotent. */
  close(): Promise<void>;
}

/** Options for {@link listenPostgres}. */
export interface PostgresListenOptions {
  /** Connection settings: the pool's own options, so the listener reaches the same database. */
  readonly connection: pg.ClientConfig;
  readonly channel: string;
  /** Called on every notification, and after every (re)connection (notifications may have been missed). */
  readonly onWake: () => void;
  readonly logger: Logger;
  /** First reconnection delay in milliseconds, doubled up to `maxBackoffMs`. Default 250. */
  readonly minBackoffMs?: number;
  /** Longest reconnection delay in milliseconds. Default 10 000. */
  readonly maxBackoffMs?: number;
}

/**
 * One dedicated `LISTEN` connection per instance (outside the pool, which must not hold a session open),
 * reconnecting with exponential backoff. The approval API's `pg_notify` (delivered on commit) and the
 * expiry sweeper's wake every instance's stream fan-out at once.
 */
export function listenPostgres(options: PostgresListenOptions): NotificationListener {
  const minBackoff = options.minBackoffMs ?? 250;
  const maxBackoff = options.maxBackoffMs ?? 10_000;
  let backoff = minBackoff;
  let closed = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;

  function schedule(): void {
    if (closed || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, backoff);
    timer.unref();
    backoff = Math.min(maxBackoff, backoff * 2);
  }

  async function connect(): Promise<void> {
    if (closed) return;
    const current = new pg.Client({
      ...options.connection,
      application_name: "countersign-listen",
      keepAlive: true,
    });
    client = current;
    let lost = false;
    const onLost = (error?: Error): void => {
      if (lost) return;
      lost = true;
      if (client === current) client = undefined;
      current.end().catch(() => {});
      if (!closed) {
        options.logger.warn({ err: { message: error?.message ?? "ended" } }, "revocation LISTEN lost");
        schedule();
      }
    };
    current.on("error", onLost);
    current.on("end", () => onLost());
    current.on("notification", (message) => {
      if (message.channel === options.channel) options.onWake();
    });
    try {
      await current.connect();
      await current.query(`listen ${pg.escapeIdentifier(options.channel)}`);
      if (closed) {
        await current.end().catch(() => {});
        return;
      }
      backoff = minBackoff;
      options.onWake();
    } catch (error) {
      onLost(error as Error);
    }
  }

  void connect();
  return {
    async close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      const current = client;
      client = undefined;
      if (current) await current.end().catch(() => {});
    },
  };
}

/** PGlite's in-process `LISTEN`: the same channel, one process. */
export async function listenPglite(
  pglite: PGlite,
  channel: string,
  onWake: () => void,
): Promise<NotificationListener> {
  const unsubscribe = await pglite.listen(channel, () => onWake());
  let closed = false;
  return {
    async close() {
      if (closed) return;
      closed = true;
      if (!pglite.closed) await unsubscribe().catch(() => {});
    },
  };
}
