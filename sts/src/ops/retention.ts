import { type Kysely, sql } from "kysely";
import type { RetentionConfig } from "../config/schema.js";
import { EXPIRE_BATCH, expireLapsedPending } from "../db/approval_expiry.js";
import { exchangeRateWindowStart } from "../db/exchange_counters.js";
import type { Database } from "../db/schema.js";
import { type BatchLimits, deleteInBatches } from "./batched_delete.js";
import type { Logger } from "./logger.js";
import { dropPartitions, ensurePartitions, PARTITIONED_TABLES, type PartitionedTable } from "./partitions.js";

const DAY_MS = 86_400_000;

/**
 * How long after its window ends an issuance-limit counter row is deleted, in milliseconds (the
 * limiter treats an ended window as empty; this only leaves room for clock skew between instances).
 */
export const COUNTER_GRACE_MS = 60_000;

/** What one run of the retention job did. */
export interface RetentionCounts {
  /** Daily partitions created (of `audit_events` and `issued_tokens`). */
  readonly partitions_created: number;
  /** Daily partitions dropped, with all their rows. */
  readonly partitions_dropped: number;
  /** Rows deleted one by one, per table (for the partitioned ones: from their default partition). */
  readonly deleted: {
    readonly audit_events: number;
    readonly issued_tokens: number;
    readonly oidc_payloads: number;
    readonly issuance_rate_limits: number;
    readonly exchange_counters: number;
    readonly webhook_deliveries: number;
    readonly approvals: number;
  };
  /** Pending approvals past their expiry set to `expired` (docs/retention.md). */
  readonly expired_pending_approvals: number;
  /** Steps that failed (logged at warn; retried at the next run). */
  readonly failed: readonly string[];
}

/** Options for {@link runRetention}. */
export interface RetentionOptions {
  readonly db: Kysely<Database>;
  readonly settings: RetentionConfig;
  readonly logger: Logger;
  /**
   * Deletes expired oidc-provider rows (`oidc_payloads`) older than `now`, in batches within `limits`,
   * and returns how many: the adapter's own sweep (`sweepExpiredPayloads`, oidc/adapter.ts), passed in
   * by the composition root so that ops does not depend on oidc.
   */
  readonly sweepOidcPayloads: (db: Kysely<Database>, now: Date, limits: BatchLimits) => Promise<number>;
  /**
   * Rows one statement of the approval steps (lapsed ones set to `expired`, old ones deleted) changes
   * (default `EXPIRE_BATCH`, 1,000; the composition root passes `EXPIRE_BATCH_EMBEDDED`, 200, on PGlite).
   */
  readonly expireBatch?: number;
}

/**
 * One run of the retention job at time `now` (docs/retention.md):
 *
 * 1. daily partitions of `audit_events` and `issued_tokens` exist from today to
 *    `partitions_ahead_days` ahead;
 * 2. partitions wholly past retention are dropped: audit events older than `audit_events_days`,
 *    issued-token records whose `exp` is more than `issued_tokens_grace_seconds` ago; rows of theirs in
 *    the default partitions are deleted in batches;
 * 3. in batches: expired oidc-provider rows (`oidc_payloads`: DPoP and client assertion `jti`s, …),
 *    issuance-limit counters of every kind whose window ended (`issuance_rate_limits`: `client:`,
 *    `approval:`, `client_credentials:`), per-second exchange counters (`exchange_counters`) older than
 *    the window of `recent_exchanges_per_minute` plus {@link COUNTER_GRACE_MS}, webhook deliveries delivered or abandoned more than
 *    `webhook_deliveries_days` ago;
 * 4. in batches: pending approvals past `expires_at` are set to `expired` ({@link expireLapsedPending});
 * 5. in batches: approvals that expired more than `approvals_days` ago (and longer ago than their
 *    token records are kept) are deleted, unless token records or a revocation feed entry of theirs
 *    are still there (those go first, by their own rules).
 *
 * Each step's failure is logged and leaves the others to run. The counts are logged at debug.
 */
export async function runRetention(options: RetentionOptions, now: Date): Promise<RetentionCounts> {
  const { db, settings, logger, sweepOidcPayloads } = options;
  const failed: string[] = [];
  async function step<T>(name: string, fallback: T, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      failed.push(name);
      logger.warn(
        { event: "retention.failed", step: name, err: { message: (error as Error).message } },
        "retention step failed",
      );
      return fallback;
    }
  }
  const cutoffs: Record<PartitionedTable, Date> = {
    audit_events: new Date(now.getTime() - settings.audit_events_days * DAY_MS),
    issued_tokens: new Date(now.getTime() - settings.issued_tokens_grace_seconds * 1000),
  };
  const limits: BatchLimits = { batchSize: settings.batch_size, maxBatches: settings.max_batches_per_run };

  let created = 0;
  let dropped = 0;
  const fromDefault: Record<PartitionedTable, number> = { audit_events: 0, issued_tokens: 0 };
  for (const { table, key } of PARTITIONED_TABLES) {
    created += Math.max(
      0,
      await step(`${table}.create_partitions`, 0, () =>
        ensurePartitions(db, table, now, settings.partitions_ahead_days + 1),
      ),
    );
    dropped += Math.max(
      0,
      await step(`${table}.drop_partitions`, 0, () => dropPartitions(db, table, cutoffs[table])),
    );
    fromDefault[table] = await step(`${table}.default_partition`, 0, () =>
      deleteInBatches(
        db,
        `${table}_default`,
        sql`${sql.ref(key)} < ${cutoffs[table].toISOString()}::timestamptz`,
        limits,
      ),
    );
  }
  const oidcPayloads = await step("oidc_payloads", 0, () => sweepOidcPayloads(db, now, limits));
  const counters = await step("issuance_rate_limits", 0, () =>
    deleteInBatches(
      db,
      "issuance_rate_limits",
      sql`expire < ${now.getTime() - COUNTER_GRACE_MS}::bigint`,
      limits,
    ),
  );
  const exchangeCounters = await step("exchange_counters", 0, () =>
    deleteInBatches(
      db,
      "exchange_counters",
      sql`iat_second < ${exchangeRateWindowStart(new Date(now.getTime() - COUNTER_GRACE_MS))}::bigint`,
      limits,
    ),
  );
  const deliveries = await step("webhook_deliveries", 0, () =>
    deleteInBatches(
      db,
      "webhook_deliveries",
      sql`status <> 'pending' and coalesce(delivered_at, next_attempt_at) <
        ${new Date(now.getTime() - settings.webhook_deliveries_days * DAY_MS).toISOString()}::timestamptz`,
      limits,
    ),
  );
  const expiredPending = await step("approvals.expire_pending", 0, () =>
    expireLapsedPending(db, {
      maxBatches: limits.maxBatches,
      ...(options.expireBatch === undefined ? {} : { batchSize: options.expireBatch }),
    }),
  );
  // Token records are kept until `exp` + grace (and up to a day more, a partition at a time), and a
  // token never outlives its approval: approvals older than that have none left, so a longer token
  // grace than `approvals_days` does not make every run re-read approvals still blocked by them.
  const approvalsCutoff = new Date(
    Math.min(
      now.getTime() - settings.approvals_days * DAY_MS,
      now.getTime() - settings.issued_tokens_grace_seconds * 1000 - DAY_MS,
    ),
  );
  const approvals = await step("approvals.delete_expired", 0, () =>
    deleteInBatches(
      db,
      "approvals",
      // Every status, so approvals_status_expires_idx reads each one's expiry range.
      sql`status in ('pending', 'approved', 'denied', 'revoked', 'expired')
        and expires_at < ${approvalsCutoff.toISOString()}::timestamptz
        and not exists (select 1 from issued_tokens t where t.approval_id = approvals.id)
        and not exists (select 1 from revocations r where r.approval_id = approvals.id)`,
      { batchSize: options.expireBatch ?? EXPIRE_BATCH, maxBatches: limits.maxBatches },
    ),
  );
  const counts: RetentionCounts = {
    partitions_created: created,
    partitions_dropped: dropped,
    deleted: {
      audit_events: fromDefault.audit_events,
      issued_tokens: fromDefault.issued_tokens,
      oidc_payloads: oidcPayloads,
      issuance_rate_limits: counters,
      exchange_counters: exchangeCounters,
      webhook_deliveries: deliveries,
      approvals,
    },
    expired_pending_approvals: expiredPending,
    failed,
  };
  logger.debug({ event: "retention.run", ...counts }, "retention run");
  return counts;
}

/** The timer functions the loop uses (tests pass their own). */
export interface RetentionTimers {
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The running retention job. */
export interface RetentionLoop {
  /** Runs the job now (or joins the run in progress) and resolves with its counts. */
  runNow(): Promise<RetentionCounts>;
  /** Stops scheduling runs and waits for the one in progress. Idempotent. */
  stop(): Promise<void>;
}

/** Options for {@link startRetention}. */
export interface RetentionLoopOptions extends RetentionOptions {
  /** The time retention is measured from. Default: the system clock. */
  readonly clock?: () => Date;
  /** Default: Node's `setTimeout` / `clearTimeout` (unref'd: the loop never keeps the process alive). */
  readonly timers?: RetentionTimers;
}

const nodeTimers: RetentionTimers = {
  setTimeout: (run, ms) => setTimeout(run, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/**
 * Starts the retention job: a first run at once, then one `interval_seconds` after each run ends (runs
 * never overlap). Started and stopped by the composition root (app.ts).
 */
export function startRetention(options: RetentionLoopOptions): RetentionLoop {
  const clock = options.clock ?? (() => new Date());
  const timers = options.timers ?? nodeTimers;
  let stopped = false;
  let timer: unknown;
  let running: Promise<RetentionCounts> | undefined;

  function runNow(): Promise<RetentionCounts> {
    running ??= runRetention(options, clock()).finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(ms: number): void {
    if (stopped) return;
    timer = timers.setTimeout(() => {
      timer = undefined;
      const next = () => schedule(options.settings.interval_seconds * 1000);
      runNow().then(next, next);
    }, ms);
  }

  schedule(0);
  return {
    runNow,
    async stop() {
      stopped = true;
      if (timer !== undefined) timers.clearTimeout(timer);
      timer = undefined;
      await running?.catch(() => {});
    },
  };
}
