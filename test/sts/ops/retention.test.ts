import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { type Kysely, sql } from "kysely";
import { FileMigrationProvider, Migrator } from "kysely/migration";
import { ConfigError, loadConfig } from "../../../sts/src/config/load.js";
import { DEFAULT_RETENTION, type RetentionConfig } from "../../../sts/src/config/schema.js";
import { type DatabaseHandle, openDatabase } from "../../../sts/src/db/connect.js";
import { migrateToLatest, migrationsFolder } from "../../../sts/src/db/migrate.js";
import type { Database } from "../../../sts/src/db/schema.js";
import { sweepExpiredPayloads } from "../../../sts/src/oidc/adapter.js";
import { createLogger } from "../../../sts/src/ops/logger.js";
import { dropPartitions, listPartitions, utcDay } from "../../../sts/src/ops/partitions.js";
import {
  type RetentionCounts,
  type RetentionTimers,
  runRetention,
  startRetention,
} from "../../../sts/src/ops/retention.js";
import { LogCapture, startTestApp } from "../../helpers/app.js";
import { createTestDatabase, type TestEngine, testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
/** Today's UTC midnight: the start of today's partitions. */
const TODAY = new Date(`${utcDay(new Date())}T00:00:00Z`);
const at = (ms: number) => new Date(TODAY.getTime() + ms);
/** Later than any partition's end. */
const FOREVER = new Date("9999-01-01T00:00:00Z");
const compact = (day: Date) => utcDay(day).replaceAll("-", "");

/** Small batches, so a run's bound shows with a handful of rows. */
const SETTINGS: RetentionConfig = { ...DEFAULT_RETENTION, batch_size: 2, max_batches_per_run: 2 };

const NOTHING: RetentionCounts["deleted"] = {
  audit_events: 0,
  issued_tokens: 0,
  oidc_payloads: 0,
  issuance_rate_limits: 0,
  exchange_counters: 0,
  webhook_deliveries: 0,
  approvals: 0,
};

/**
 * Runs `body` on a fresh, migrated database of `engine` without daily partitions (only the default
 * ones: whatever day the migrations ran, a test creates the partitions it needs), then drops it.
 */
async function withDatabase(
  engine: TestEngine,
  body: (db: Kysely<Database>) => Promise<void>,
): Promise<void> {
  const database = await createTestDatabase(engine);
  const handle = await database.open();
  try {
    await migrateToLatest(handle.db);
    for (const table of ["audit_events", "issued_tokens"] as const)
      await dropPartitions(handle.db, table, FOREVER);
    assert.deepEqual(await days(handle.db, "audit_events"), []);
    await body(handle.db);
  } finally {
    await handle.close();
    await database.dispose();
  }
}

function retentionAt(
  db: Kysely<Database>,
  now: Date,
  settings: RetentionConfig = SETTINGS,
  expireBatch?: number,
) {
  return runRetention(
    {
      db,
      settings,
      logger: createLogger("silent"),
      sweepOidcPayloads: sweepExpiredPayloads,
      ...(expireBatch === undefined ? {} : { expireBatch }),
    },
    now,
  );
}

async function count(db: Kysely<Database>, table: string, where = sql`true`): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from ${sql.table(table)} where ${where}`.execute(db);
  return rows[0]?.n ?? -1;
}

async function insertToken(db: Kysely<Database>, approvalId: string, jti: string, exp: Date): Promise<void> {
  await db
    .insertInto("issued_tokens")
    .values({
      jti,
      approval_id: approvalId,
      client_id: "billing-agent",
      sub: "alice",
      aud: "https://crm.example.test",
      scope: "crm:read",
      jkt: null,
      iat: new Date(exp.getTime() - 300_000),
      exp,
    })
    .execute();
}

async function insertEvents(
  db: Kysely<Database>,
  when: Date,
  n: number,
  event = "token_exchange",
): Promise<void> {
  await sql`insert into audit_events (at, event, outcome, client_id)
    select ${when.toISOString()}::timestamptz, ${event}, 'granted', 'billing-agent'
    from generate_series(1, ${n}::integer)`.execute(db);
}

/** The daily partitions of `table`, as `YYYYMMDD`. */
async function days(db: Kysely<Database>, table: "audit_events" | "issued_tokens"): Promise<string[]> {
  return (await listPartitions(db, table))
    .map((name) => name.slice(table.length + 1))
    .filter((suffix) => suffix.startsWith("p"))
    .map((suffix) => suffix.slice(1));
}

/** The `ahead + 1` UTC days from `from`, as `YYYYMMDD`. */
function daysFrom(from: Date, ahead = SETTINGS.partitions_ahead_days): string[] {
  return Array.from({ length: ahead + 1 }, (_, i) => compact(new Date(from.getTime() + i * DAY)));
}

for (const engine of testEngines()) {
  describe(`retention on ${engine}`, () => {
    test("a run keeps daily partitions of audit_events and issued_tokens from today to partitions_ahead_days ahead, beside a default partition", async () => {
      await withDatabase(engine, async (db) => {
        await retentionAt(db, at(HOUR));
        for (const table of ["audit_events", "issued_tokens"] as const) {
          const names = await listPartitions(db, table);
          assert.ok(names.includes(`${table}_default`), names.join());
          for (const day of daysFrom(TODAY)) assert.ok(names.includes(`${table}_p${day}`), `${table} ${day}`);
        }
        // Nothing left to create.
        const again = await retentionAt(db, at(2 * HOUR));
        assert.equal(again.partitions_created, 0);
        assert.deepEqual(again.failed, []);
      });
    });

    test("issued-token records go when their day's exp is a grace period past; audit events when their day is audit_events_days past; whole days at once", async () => {
      await withDatabase(engine, async (db) => {
        await retentionAt(db, at(HOUR));
        const approvalId = await insertApproval(db);
        for (let i = 0; i < 5; i++) await insertToken(db, approvalId, `jti-today-${i}`, at(12 * HOUR));
        for (let i = 0; i < 3; i++) await insertToken(db, approvalId, `jti-tomorrow-${i}`, at(DAY + HOUR));
        await insertEvents(db, at(12 * HOUR), 7);
        await insertEvents(db, at(DAY + HOUR), 2);
        const inPartition = async (table: string, day: Date) =>
          count(db, table, sql`tableoid = ${`${table}_p${compact(day)}`}::regclass`);
        assert.equal(await inPartition("issued_tokens", TODAY), 5);
        assert.equal(await inPartition("audit_events", TODAY), 7);

        // Today's tokens all expire before tomorrow's midnight: their records stay until a day after it.
        const before = await retentionAt(db, at(2 * DAY - 1));
        assert.equal(before.partitions_dropped, 0);
        assert.equal(await count(db, "issued_tokens"), 8);
        const after = await retentionAt(db, at(2 * DAY));
        assert.equal(after.partitions_dropped, 1);
        assert.deepEqual(after.deleted, NOTHING);
        assert.equal(await count(db, "issued_tokens"), 3);
        assert.equal(await count(db, "issued_tokens", sql`jti like 'jti-tomorrow-%'`), 3);
        assert.ok(!(await days(db, "issued_tokens")).includes(compact(TODAY)));
        assert.equal(await count(db, "audit_events"), 9);

        // Audit events: 90 days after their day ends.
        await retentionAt(db, at(91 * DAY - 1));
        assert.equal(await count(db, "audit_events"), 9);
        const audited = await retentionAt(db, at(91 * DAY));
        assert.equal(await count(db, "audit_events"), 2);
        assert.ok(!(await days(db, "audit_events")).includes(compact(TODAY)));
        assert.ok(audited.partitions_dropped >= 1);
        assert.deepEqual(audited.failed, []);
      });
    });

    test("rows in the default partition are deleted past retention in batches of batch_size, at most max_batches_per_run per run", async () => {
      await withDatabase(engine, async (db) => {
        const approvalId = await insertApproval(db);
        // Days without a partition: these land in the default partitions.
        await insertEvents(db, at(-100 * DAY), 5);
        await insertEvents(db, at(-89 * DAY), 3);
        for (let i = 0; i < 4; i++) await insertToken(db, approvalId, `jti-old-${i}`, at(-3 * DAY));
        await insertToken(db, approvalId, "jti-recent", at(-20 * HOUR));
        assert.equal(await count(db, "audit_events_default"), 8);
        assert.equal(await count(db, "issued_tokens_default"), 5);

        const first = await retentionAt(db, at(HOUR));
        assert.deepEqual(first.deleted, { ...NOTHING, audit_events: 4, issued_tokens: 4 });
        const second = await retentionAt(db, at(HOUR));
        assert.deepEqual(second.deleted, { ...NOTHING, audit_events: 1, issued_tokens: 0 });
        assert.equal(await count(db, "audit_events"), 3);
        assert.equal(
          await count(db, "audit_events", sql`at = ${at(-89 * DAY).toISOString()}::timestamptz`),
          3,
        );
        assert.deepEqual(
          (await db.selectFrom("issued_tokens").select("jti").execute()).map((row) => row.jti),
          ["jti-recent"],
        );
      });
    });

    test("a day's rows that landed in the default partition move into the day's partition when it is created", async () => {
      await withDatabase(engine, async (db) => {
        await insertEvents(db, at(30 * DAY + HOUR), 3);
        assert.equal(await count(db, "audit_events_default"), 3);
        const run = await retentionAt(db, at(30 * DAY));
        assert.equal(run.partitions_created, 2 * (SETTINGS.partitions_ahead_days + 1));
        assert.equal(await count(db, "audit_events_default"), 0);
        assert.equal(
          await count(
            db,
            "audit_events",
            sql`tableoid = ${`audit_events_p${compact(at(30 * DAY))}`}::regclass`,
          ),
          3,
        );
        // Still a partition like the others: inserts route to it, its indexes exist.
        await insertEvents(db, at(30 * DAY + 2 * HOUR), 1);
        assert.equal(await count(db, `audit_events_p${compact(at(30 * DAY))}`), 4);
      });
    });

    test("expired oidc-provider rows, issuance counters of every kind whose window ended and old finished webhook deliveries are swept; the rest stays", async () => {
      await withDatabase(engine, async (db) => {
        const now = new Date();
        const iso = (ms: number) => new Date(now.getTime() + ms).toISOString();
        await sql`insert into oidc_payloads (id, type, payload, expires_at) values
          ('dpop-1', 'ReplayDetection', '{}', ${iso(-1000)}), ('dpop-2', 'ReplayDetection', '{}', ${iso(-HOUR)}),
          ('assertion-1', 'ReplayDetection', '{}', ${iso(-1)}),
          ('dpop-3', 'ReplayDetection', '{}', ${iso(HOUR)}), ('dpop-4', 'ReplayDetection', '{}', ${iso(1000)}),
          ('no-expiry', 'Session', '{}', null)`.execute(db);
        const ms = now.getTime();
        await sql`insert into issuance_rate_limits (key, points, expire) values
          ('client:billing-agent', 3, ${ms - 61_000}), ('approval:apr_AAAAAAAAAAAAAAAAAAAAAA', 1, ${ms - 3_600_000}),
          ('client_credentials:billing-agent', 20, ${ms - 61_000}),
          ('client:post-agent', 1, ${ms - 30_000}), ('approval:apr_BBBBBBBBBBBBBBBBBBBBBB', 1, ${ms + 10_000}),
          ('client_credentials:post-agent', 2, ${ms + 5_000})`.execute(db);
        const delivery = (
          id: string,
          status: string,
          delivered: number | null,
          next: number,
          created: number,
        ) =>
          sql`insert into webhook_deliveries
              (event_id, webhook_url, event_type, body, status, delivered_at, next_attempt_at, created_at)
            values (${id}, 'https://hooks.example.test/a', 'approval.requested', '{}', ${status},
              ${delivered === null ? null : iso(delivered)}::timestamptz, ${iso(next)}::timestamptz,
              ${iso(created)}::timestamptz)`.execute(db);
        await delivery("delivered-8d", "delivered", -8 * DAY, -8 * DAY, -8 * DAY);
        await delivery("delivered-6d", "delivered", -6 * DAY, -6 * DAY, -6 * DAY);
        await delivery("failed-8d", "failed", null, -8 * DAY, -9 * DAY);
        await delivery("failed-1d", "failed", null, -DAY, -2 * DAY);
        await delivery("pending-30d", "pending", null, -30 * DAY, -30 * DAY);

        const logs = new LogCapture();
        const run = await runRetention(
          {
            db,
            settings: { ...SETTINGS, batch_size: 10 },
            logger: createLogger("debug", logs),
            sweepOidcPayloads: sweepExpiredPayloads,
          },
          now,
        );
        assert.deepEqual(run.deleted, {
          ...NOTHING,
          oidc_payloads: 3,
          issuance_rate_limits: 3,
          webhook_deliveries: 2,
        });
        assert.deepEqual(run.failed, []);
        const ids = await sql<{ id: string }>`select id from oidc_payloads order by id collate "C"`.execute(
          db,
        );
        assert.deepEqual(
          ids.rows.map((row) => row.id),
          ["dpop-3", "dpop-4", "no-expiry"],
        );
        const keys = await sql<{
          key: string;
        }>`select key from issuance_rate_limits order by key collate "C"`.execute(db);
        assert.deepEqual(
          keys.rows.map((row) => row.key),
          ["approval:apr_BBBBBBBBBBBBBBBBBBBBBB", "client:post-agent", "client_credentials:post-agent"],
        );
        const deliveries = await sql<{ event_id: string }>`
          select event_id from webhook_deliveries order by event_id`.execute(db);
        assert.deepEqual(
          deliveries.rows.map((row) => row.event_id),
          ["delivered-6d", "failed-1d", "pending-30d"],
        );
        // The run's counts, logged at debug.
        const line = logs.lines
          .map((text) => JSON.parse(text))
          .find((entry) => entry.event === "retention.run");
        assert.equal(line?.level, 20);
        assert.deepEqual(line?.deleted, run.deleted);
        assert.equal(line?.msg, "retention run");
      });
    });

    test("exchange counters go a minute after they leave the 60 s window of recent_exchanges_per_minute; the rest stays", async () => {
      await withDatabase(engine, async (db) => {
        const now = new Date(Date.UTC(2026, 10, 28, 12, 0, 0, 500));
        const s0 = Math.floor(now.getTime() / 1000);
        // s0 - 120 left the window (iat > now - 60 s) at s0 - 60, more than a minute before now: swept.
        // s0 - 119 left it at s0 - 59, 59.5 s before now: kept.
        const rows = [
          ["agent-a", s0 - 3600],
          ["agent-a", s0 - 120],
          ["agent-b", s0 - 121],
          ["agent-a", s0 - 119],
          ["agent-b", s0 - 30],
          ["agent-a", s0],
        ] as const;
        for (const [client, second] of rows)
          await sql`insert into exchange_counters (client_id, iat_second, exchanges)
            values (${client}, ${second}, 5)`.execute(db);
        const run = await retentionAt(db, now, { ...SETTINGS, batch_size: 10 });
        assert.deepEqual(run.deleted, { ...NOTHING, exchange_counters: 3 });
        assert.deepEqual(run.failed, []);
        const left = await sql<{ client_id: string; iat_second: string }>`
          select client_id, iat_second from exchange_counters order by client_id, iat_second`.execute(db);
        assert.deepEqual(
          left.rows.map((row) => [row.client_id, Number(row.iat_second)]),
          [
            ["agent-a", s0 - 119],
            ["agent-a", s0],
            ["agent-b", s0 - 30],
          ],
        );
      });
    });

    test("approvals expired more than approvals_days ago are deleted, expireBatch per statement, unless token records or a feed entry of theirs are still kept", async () => {
      await withDatabase(engine, async (db) => {
        const old = -91 * 86_400;
        const deletable: string[] = [];
        for (const status of [
          "pending",
          "approved",
          "denied",
          "revoked",
          "expired",
          "expired",
          "approved",
        ] as const) {
          deletable.push(await insertApproval(db, { status, client_id: "agent-a", ttl_seconds: old }));
        }
        const recent = await insertApproval(db, {
          status: "expired",
          client_id: "agent-a",
          ttl_seconds: -89 * 86_400,
        });
        const live = await insertApproval(db, {
          status: "approved",
          client_id: "agent-a",
          ttl_seconds: 3600,
        });
        // One still has a token record (an hour from exp), another a feed entry.
        const withToken = await insertApproval(db, {
          status: "approved",
          client_id: "agent-a",
          ttl_seconds: old,
        });
        await insertToken(db, withToken, "jti-kept", new Date(Date.now() + HOUR));
        const inFeed = await insertApproval(db, {
          status: "revoked",
          client_id: "agent-a",
          ttl_seconds: old,
        });
        await sql`insert into revocations (approval_id, reason, revoked_at)
          values (${inFeed}, 'revoked', now() - interval '92 days')`.execute(db);
        const run = () => retentionAt(db, new Date(), SETTINGS, 3);
        const ids = async () =>
          (await sql<{ id: string }>`select id from approvals order by id collate "C"`.execute(db)).rows.map(
            (row) => row.id,
          );
        // 2 statements of 3 a run (max_batches_per_run 2): 6, then the last one.
        assert.equal((await run()).deleted.approvals, 6);
        assert.equal((await run()).deleted.approvals, 1);
        assert.equal((await run()).deleted.approvals, 0);
        assert.deepEqual(await ids(), [recent, live, withToken, inFeed].sort());
      });
    });

    test("with token records kept longer than approvals_days, approvals wait for them: the cutoff is their grace plus a day", async () => {
      await withDatabase(engine, async (db) => {
        const at91 = await insertApproval(db, {
          status: "expired",
          client_id: "agent-a",
          ttl_seconds: -91 * 86_400,
        });
        await insertApproval(db, { status: "expired", client_id: "agent-a", ttl_seconds: -102 * 86_400 });
        const counts = await retentionAt(db, new Date(), {
          ...SETTINGS,
          issued_tokens_grace_seconds: 100 * 86_400,
        });
        assert.equal(counts.deleted.approvals, 1);
        assert.deepEqual(
          (await sql<{ id: string }>`select id from approvals`.execute(db)).rows.map((row) => row.id),
          [at91],
        );
      });
    });

    test("an agent requesting approvals for 200 days at 48 a day: the table keeps approvals_days of them", async () => {
      await withDatabase(engine, async (db) => {
        // One instant for the rows, the count and the run: with the database's now() at the insert and a
        // later one at the count, the row expiring 90 days and 1 s before the insert was counted kept or
        // not depending on whether a second passed between the statements, while the run, later still,
        // deleted it.
        const now = new Date();
        const at = now.toISOString();
        await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
            max_tokens, requested_by, created_at, expires_at)
          select 'apr_flood' || lpad(i::text, 17, '0'), 'expired', 'agent-a', 'https://crm.example.test',
            'crm:read', 'crm:read', 'a task', 10, 'agent-a', ${at}::timestamptz - (i * interval '30 minutes'),
            ${at}::timestamptz - (i * interval '30 minutes') + interval '1 second'
          from generate_series(0, 9999) i`.execute(db);
        const cutoff = new Date(now.getTime() - DEFAULT_RETENTION.approvals_days * DAY).toISOString();
        const kept = await count(db, "approvals", sql`expires_at >= ${cutoff}::timestamptz`);
        // 90 days at 48 a day, and the one that expired a second after the cutoff.
        assert.equal(kept, 90 * 48 + 1);
        const counts = await retentionAt(db, now, { ...DEFAULT_RETENTION, max_batches_per_run: 100 });
        assert.equal(counts.deleted.approvals, 10_000 - kept);
        assert.equal(await count(db, "approvals"), kept);
      });
    });

    test("pending approvals past their expiry are set to expired (lapsed_at now), expireBatch per statement, at most max_batches_per_run statements a run; live and decided ones stay", async () => {
      await withDatabase(engine, async (db) => {
        await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
            max_tokens, requested_by, created_at, expires_at)
          select 'apr_lapsed' || lpad(i::text, 16, '0'), 'pending', 'agent-a', 'https://crm.example.test',
            'crm:read', 'crm:read', 'a task', 10, 'agent-a', now() - interval '1 hour',
            now() - interval '1 minute' + i * interval '1 millisecond'
          from generate_series(1, 7) i`.execute(db);
        await insertApproval(db, { status: "pending", client_id: "agent-a", ttl_seconds: 3600 });
        await insertApproval(db, { status: "approved", client_id: "agent-a", ttl_seconds: 3600 });
        const statuses = async () =>
          (
            await sql<{ status: string; n: number; lapsed: number }>`
              select status, count(*)::int as n, count(lapsed_at)::int as lapsed from approvals
              group by status order by status`.execute(db)
          ).rows;
        const run = () => retentionAt(db, new Date(), SETTINGS, 3);
        // 2 statements of 3 a run (max_batches_per_run 2): 6, then the last one.
        assert.equal((await run()).expired_pending_approvals, 6);
        assert.deepEqual(await statuses(), [
          { status: "approved", n: 1, lapsed: 0 },
          { status: "expired", n: 6, lapsed: 6 },
          { status: "pending", n: 2, lapsed: 0 },
        ]);
        assert.equal((await run()).expired_pending_approvals, 1);
        assert.equal((await run()).expired_pending_approvals, 0);
        assert.deepEqual(await statuses(), [
          { status: "approved", n: 1, lapsed: 0 },
          { status: "expired", n: 7, lapsed: 7 },
          { status: "pending", n: 1, lapsed: 0 },
        ]);
      });
    });

    test("a database migrated before partitioning keeps its rows: they become one partition, dropped when its day is past retention", async () => {
      const database = await createTestDatabase(engine);
      // PGlite's test databases start migrated: build an unmigrated one instead.
      const handle: DatabaseHandle =
        engine === "pglite"
          ? await openDatabase({ url: undefined, dataDir: "memory://" })
          : await database.open();
      try {
        const migrator = new Migrator({
          db: handle.db,
          provider: new FileMigrationProvider({ fs, path, migrationFolder: migrationsFolder }),
        });
        const upTo = await migrator.migrateTo("2026_11_28_0008_issue_reasons");
        assert.equal(upTo.error, undefined);
        const approvalId = await insertApproval(handle.db);
        await insertToken(handle.db, approvalId, "jti-before", at(-HOUR));
        await sql`insert into audit_events (at, event, outcome, client_id) values
          (${at(-10 * DAY).toISOString()}, 'approval.requested', 'granted', 'billing-agent'),
          (${at(-HOUR).toISOString()}, 'token_exchange', 'granted', 'billing-agent')`.execute(handle.db);
        const oldIds = await sql<{ id: string }>`select id::text as id from audit_events order by id`.execute(
          handle.db,
        );

        await migrateToLatest(handle.db);
        const until = `until_${compact(at(DAY))}`;
        assert.ok((await listPartitions(handle.db, "audit_events")).includes(`audit_events_${until}`));
        assert.ok((await listPartitions(handle.db, "issued_tokens")).includes(`issued_tokens_${until}`));
        const ids = await sql<{ id: string; occurrences: number }>`
          select id::text as id, occurrences from audit_events order by id`.execute(handle.db);
        assert.deepEqual(
          ids.rows.map((row) => [row.id, row.occurrences]),
          oldIds.rows.map((row) => [row.id, 1]),
        );
        assert.equal(await count(handle.db, "issued_tokens", sql`jti = 'jti-before'`), 1);
        // New rows go on from the old ids, into their day's partition or the old one.
        await insertEvents(handle.db, at(2 * DAY), 1);
        const next = await sql<{ id: string }>`select max(id)::text as id from audit_events`.execute(
          handle.db,
        );
        assert.equal(BigInt(next.rows[0]?.id ?? 0), BigInt(oldIds.rows.at(-1)?.id ?? 0) + 1n);

        // The old partition holds every time before tomorrow: it goes when tomorrow is past retention.
        await retentionAt(handle.db, at(DAY + 90 * DAY - 1));
        assert.equal(await count(handle.db, "audit_events"), 3);
        await retentionAt(handle.db, at(DAY + 90 * DAY));
        assert.equal(await count(handle.db, "audit_events"), 1);
        assert.ok(!(await listPartitions(handle.db, "audit_events")).includes(`audit_events_${until}`));
        assert.equal(await count(handle.db, "issued_tokens"), 0);
      } finally {
        await handle.close();
        await database.dispose();
      }
    });

    test("the app starts the loop (a run at once, the next interval_seconds after it ends) and stops it on close", async () => {
      const scheduled: { run: () => void; ms: number; cleared: boolean }[] = [];
      const timers: RetentionTimers = {
        setTimeout: (run, ms) => {
          const timer = { run, ms, cleared: false };
          scheduled.push(timer);
          return timer;
        },
        clearTimeout: (handle) => {
          (handle as { cleared: boolean }).cleared = true;
        },
      };
      const sts = await startTestApp({
        engine,
        config: { retention: { interval_seconds: 42 } },
        appOptions: { retentionTimers: timers },
      });
      let stopped = false;
      try {
        assert.deepEqual(
          scheduled.map((timer) => timer.ms),
          [0],
        );
        scheduled[0]?.run();
        // The next run is scheduled once this one has ended.
        await sts.app.retention.runNow();
        await new Promise((resolve) => setImmediate(resolve));
        assert.deepEqual(
          scheduled.map((timer) => timer.ms),
          [0, 42_000],
        );
        await sts.stop();
        stopped = true;
        assert.deepEqual(
          scheduled.map((timer) => timer.cleared),
          [false, true],
        );
        // A timer that fires anyway (already queued) schedules nothing more.
        scheduled[1]?.run();
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(scheduled.length, 2);
      } finally {
        if (!stopped) await sts.stop();
      }
    });
  });
}

test("startRetention: stop() waits for the run in progress, and nothing is scheduled after it", async () => {
  const database = await createTestDatabase("pglite");
  const handle = await database.open();
  try {
    await migrateToLatest(handle.db);
    const scheduled: (() => void)[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let queries = 0;
    // Every query's result waits for the gate: the run is in progress until it opens.
    const gated = handle.db.withPlugin({
      transformQuery: (args) => args.node,
      transformResult: async (args) => {
        queries += 1;
        await gate;
        return args.result;
      },
    });
    const loop = startRetention({
      db: gated,
      settings: SETTINGS,
      logger: createLogger("silent"),
      sweepOidcPayloads: sweepExpiredPayloads,
      timers: {
        setTimeout: (run) => {
          scheduled.push(run);
          return scheduled.length;
        },
        clearTimeout: () => {},
      },
    });
    scheduled[0]?.();
    let stopped = false;
    const stopping = loop.stop().then(() => {
      stopped = true;
    });
    while (queries === 0) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stopped, false);
    release();
    await stopping;
    assert.equal(stopped, true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(scheduled.length, 1);
  } finally {
    await handle.close();
  }
});

test("config: retention defaults (90 days of audit, a day's grace on token records, 7 days of deliveries, 90 days of expired approvals); bad retention keys are each named", () => {
  assert.deepEqual(loadConfig({}).retention, {
    interval_seconds: 10,
    audit_events_days: 90,
    issued_tokens_grace_seconds: 86_400,
    webhook_deliveries_days: 7,
    approvals_days: 90,
    partitions_ahead_days: 7,
    batch_size: 10_000,
    max_batches_per_run: 10,
  });
  assert.throws(
    () => loadConfig({}, { retention: { audit_events_days: 0, batch_size: 1.5, keep_forever: true } }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.deepEqual(error.issues, [
        "retention.audit_events_days: Too small: expected number to be >=1",
        "retention.batch_size: Invalid input: expected int, received number",
        'retention: Unrecognized key: "keep_forever"',
      ]);
      return true;
    },
  );
});
