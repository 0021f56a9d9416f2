/**
 * Growth benchmark: `npx tsx bench/growth/index.ts` (needs `DATABASE_URL`, a real Postgres; a fresh
 * database is created for the run and dropped at the end).
 *
 * At ~2,700 token exchanges/s, `issued_tokens` and `audit_events` each gain ~230 M rows a day, so pruning
 * must remove ~5,400 rows/s in steady state. This measures both ways of pruning one day of audit events
 * (`BENCH_GROWTH_ROWS` rows, default 1 000 000, all in one UTC day):
 *
 * - partitioned (what migration 0009 does): insert the rows into `audit_events` (partitioned by day,
 *   with the partitions of a 90-day retention in place), then drop the day's partition;
 * - unpartitioned: the same rows into a plain copy of the table with an index on `at`, then batched
 *   deletes (`DELETE … WHERE ctid = ANY(ARRAY(SELECT ctid … WHERE at < $1 LIMIT 10000))`) until none are
 *   left.
 *
 * Then the refusal audit: `recordRefusal` (an upsert counting refusals in one row per window) against
 * plain inserts (`recordAudit`), both from `BENCH_GROWTH_CLIENTS` (default 16) concurrent connections
 * hammering one key for `BENCH_GROWTH_SECONDS` (default 5) seconds.
 */
import { randomBytes } from "node:crypto";
import { cpus } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import pg from "pg";
import { recordAudit } from "../../sts/src/audit/audit_log.js";
import { recordRefusal } from "../../sts/src/audit/refusals.js";
import { openDatabase } from "../../sts/src/db/connect.js";
import { migrateToLatest } from "../../sts/src/db/migrate.js";
import { ensurePartitions, listPartitions } from "../../sts/src/ops/partitions.js";

/** Exchanges per second the deletes must keep up with, and rows each writes (token record + audit). */
const ISSUE_RATE = 2_700;
const ROWS_PER_EXCHANGE = 2;
const BATCH = 10_000;

async function admin(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
const rate = (rows: number, s: number) => Math.round(rows / s).toLocaleString("en-US");

/** Runs the benchmark; returns a Markdown table. */
export async function runGrowthBenchmark(options: {
  url: string;
  rows: number;
  clients: number;
  seconds: number;
}): Promise<string> {
  const name = `cs_bench_growth_${randomBytes(4).toString("hex")}`;
  await admin(options.url, `create database ${name}`);
  const url = new URL(options.url);
  url.pathname = `/${name}`;
  const handle = await openDatabase({
    url: url.toString(),
    dataDir: "memory://",
    poolSize: options.clients + 2,
  });
  const db = handle.db;
  const lines: string[] = [];
  try {
    await migrateToLatest(db);
    // The partitions a 90-day retention keeps, plus a week ahead.
    const day = new Date(Date.now() - 90 * 86_400_000);
    await ensurePartitions(db, "audit_events", day, 98);
    const partitions = (await listPartitions(db, "audit_events")).length;
    const dayStart = `${day.toISOString().slice(0, 10)}T00:00:00Z`;
    const chunk = 50_000;
    const fill = async (table: string) => {
      const started = process.hrtime.bigint();
      for (let from = 0; from < options.rows; from += chunk) {
        const n = Math.min(chunk, options.rows - from);
        await sql`insert into ${sql.table(table)} (at, event, outcome, approval_id, client_id, actor, detail)
          select ${dayStart}::timestamptz + make_interval(secs => i * 86399.0 / ${options.rows}::int),
            'token_exchange', 'granted', 'apr_' || lpad((i % 5000)::text, 22, '0'), 'agent-' || (i % 50),
            'agent-' || (i % 50), '{"jti": "0123456789abcdef", "sub": "alice", "scope": "crm:read"}'
          from generate_series(${from}::int, ${from + n - 1}::int) i`.execute(db);
      }
      return seconds(started);
    };

    const partitionedInsert = await fill("audit_events");
    const partition = `audit_events_p${dayStart.slice(0, 10).replaceAll("-", "")}`;
    let started = process.hrtime.bigint();
    await sql`drop table ${sql.table(partition)}`.execute(db);
    const dropSeconds = seconds(started);

    await sql`create table audit_flat (like audit_events including defaults including constraints)`.execute(
      db,
    );
    await sql`alter table audit_flat add primary key (id)`.execute(db);
    await sql`create index audit_flat_approval_idx on audit_flat (approval_id, id)`.execute(db);
    await sql`create index audit_flat_at_idx on audit_flat (at)`.execute(db);
    const flatInsert = await fill("audit_flat");
    await sql`analyze audit_flat`.execute(db);
    const cutoff = new Date(new Date(dayStart).getTime() + 86_400_000).toISOString();
    started = process.hrtime.bigint();
    let deleted = 0;
    let batches = 0;
    for (;;) {
      const result = await sql`delete from audit_flat where ctid = any(array(
        select ctid from audit_flat where at < ${cutoff}::timestamptz limit ${BATCH}))`.execute(db);
      const n = Number(result.numAffectedRows ?? 0n);
      deleted += n;
      batches += 1;
      if (n < BATCH) break;
    }
    const deleteSeconds = seconds(started);
    const needed = ISSUE_RATE * ROWS_PER_EXCHANGE;

    const hammer = async (write: () => Promise<void>) => {
      let count = 0;
      const until = Date.now() + options.seconds * 1000;
      const t = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: options.clients }, async () => {
          while (Date.now() < until) {
            await write();
            count += 1;
          }
        }),
      );
      return { count, seconds: seconds(t) };
    };
    const before = await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(db);
    const upserts = await hammer(() =>
      recordRefusal(db, {
        event: "token_exchange",
        reason: "approval_not_found",
        clientId: "mallory-agent",
        claimedApprovalId: "apr_AAAAAAAAAAAAAAAAAAAAAA",
        detail: { error: "invalid_grant", description: "no such approval for this client" },
      }),
    );
    const afterUpserts = await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(db);
    const inserts = await hammer(() =>
      recordAudit(db, {
        event: "token_exchange",
        outcome: "refused",
        reason: "approval_not_found",
        client_id: "mallory-agent",
        actor: "mallory-agent",
        detail: { error: "invalid_grant", description: "no such approval for this client" },
      }),
    );
    const afterInserts = await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(db);

    lines.push(
      `One UTC day of ${options.rows.toLocaleString("en-US")} audit events; ${partitions} partitions of audit_events in place.`,
      "",
      "| pruning | insert rows/s | prune | pruned rows/s | keeps up with 2,700 exchanges/s (5,400 rows/s)? |",
      "| --- | --- | --- | --- | --- |",
      `| partitioned by day, \`DROP TABLE\` of the day | ${rate(options.rows, partitionedInsert)} | ${(dropSeconds * 1000).toFixed(0)} ms | ${rate(options.rows, dropSeconds)} | yes, ×${Math.round(options.rows / dropSeconds / needed).toLocaleString("en-US")} |`,
      `| unpartitioned, index on \`at\`, ${batches} batched deletes of ${BATCH.toLocaleString("en-US")} | ${rate(options.rows, flatInsert)} | ${deleteSeconds.toFixed(1)} s | ${rate(deleted, deleteSeconds)} | ${deleted / deleteSeconds >= needed ? "yes" : "no"}, ×${(deleted / deleteSeconds / needed).toFixed(1)} (and leaves ${deleted.toLocaleString("en-US")} dead rows to vacuum) |`,
      "",
      `Refusal audit, ${options.clients} connections on one (client, reason, approval) for ${options.seconds} s:`,
      "",
      "| write | refusals/s | rows written |",
      "| --- | --- | --- |",
      `| \`recordRefusal\` (upsert, one row per 10 s window) | ${rate(upserts.count, upserts.seconds)} | ${(afterUpserts.rows[0]?.n ?? 0) - (before.rows[0]?.n ?? 0)} |`,
      `| \`recordAudit\` (one row each, as before) | ${rate(inserts.count, inserts.seconds)} | ${(afterInserts.rows[0]?.n ?? 0) - (afterUpserts.rows[0]?.n ?? 0)} |`,
    );
  } finally {
    await handle.close();
    await admin(options.url, `drop database if exists ${name} with (force)`);
  }
  return lines.join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  if (!env.DATABASE_URL) {
    process.stderr.write(
      "bench/growth needs DATABASE_URL (e.g. DATABASE_URL=$(.ci/start-postgres.sh) npx tsx bench/growth/index.ts)\n",
    );
    process.exit(2);
  }
  const cpu = cpus();
  const markdown = await runGrowthBenchmark({
    url: env.DATABASE_URL,
    rows: Number(env.BENCH_GROWTH_ROWS ?? 1_000_000),
    clients: Number(env.BENCH_GROWTH_CLIENTS ?? 16),
    seconds: Number(env.BENCH_GROWTH_SECONDS ?? 5),
  });
  process.stdout.write(
    `Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? "unknown CPU"}\n\n${markdown}\n`,
  );
}
