/**
 * Seeded growth benchmark: does the cost of a token exchange stay flat as the tables grow?
 * `DATABASE_URL=postgres://… npx tsx bench/growth/seeded.ts` (a real Postgres; run it on a durable
 * cluster, fsync and full_page_writes on, for meaningful WAL numbers; the user must be allowed to run
 * `CHECKPOINT`). Two databases are created for the run and dropped at the end:
 *
 * - empty: migrated, and only the seeded database's pending approvals (the same 4,000 rows: both list
 *   the same first page, so the pending listing compares history, not an empty answer with a full one);
 * - seeded: migrated, then filled in SQL (`INSERT … SELECT … FROM generate_series`) with
 *   `BENCH_SEED_TOKENS` `issued_tokens` rows (default 5,000,000) and `BENCH_SEED_AUDIT` `audit_events`
 *   rows (default 5,400,000), dated from the start of today (UTC, at most 20 hours back) to now, so
 *   they sit in the daily partitions new rows go to, under `BENCH_SEED_APPROVALS` approvals (default
 *   200,000) of 2,000 agents with a mix of statuses: 2 % pending (two per agent, within the default
 *   per-agent cap of 50), 40 % approved, 8 % denied, 10 % revoked, 40 % expired. Then `VACUUM ANALYZE`, as autovacuum would have done.
 *
 * An STS (`bench/exchange`'s `spawnBenchSts`) runs on each. After a warm-up, measurements alternate
 * (empty, seeded, empty, seeded, … `BENCH_ROUNDS` rounds, default 2) and the median of each is
 * reported. A measurement: `CHECKPOINT`, then `BENCH_EXCHANGES` token exchanges (default 20,000) from
 * `BENCH_CONNECTIONS` connections (default 32), each connection under an approval of its own, over
 * HTTP with autocannon: exchanges/s, p99, and the WAL (`pg_current_wal_lsn()` before and after, so the
 * first writes after a checkpoint, with their full-page images, are counted) and the database's growth
 * (`pg_database_size`) per exchange; then `BENCH_LIST_REQUESTS` (default 400) `GET /approvals?status=pending`
 * from 4 connections: p50 and p99. The WAL is the cluster's: other databases' writes in the meantime
 * count too.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import pg from "pg";
import { openDatabase } from "../../sts/src/db/connect.js";
import { migrateToLatest } from "../../sts/src/db/migrate.js";
import { ensurePartitions } from "../../sts/src/ops/partitions.js";
import {
  adminQuery,
  exchangeBodyFor,
  insertBenchApprovals,
  machineLine,
  type SpawnedSts,
  spawnBenchSts,
  withDatabase,
} from "../exchange/index.js";

const RESOURCE = "https://crm.example.test";
const AGENTS = 2_000;
const CHUNK = 500_000;

/** Options of {@link runSeededGrowthBenchmark}. */
export interface SeededGrowthOptions {
  readonly url: string;
  readonly tokens: number;
  readonly audit: number;
  readonly approvals: number;
  readonly exchanges: number;
  readonly connections: number;
  readonly rounds: number;
  readonly listRequests: number;
  /** Break the WAL down by relation with pg_walinspect (superuser). */
  readonly walDetail: boolean;
  readonly log: (line: string) => void;
}

/** One measurement on one database. */
interface Measurement {
  readonly exchangesPerSecond: number;
  readonly p99Ms: number;
  readonly walBytesPerExchange: number;
  readonly tableBytesPerExchange: number;
  readonly listP50Ms: number;
  readonly listP99Ms: number;
  readonly failures: number;
  /** With `BENCH_WAL_DETAIL=1`: the WAL of the exchanges by relation (pg_walinspect). */
  readonly walByRelation?: readonly string[];
}

/**
 * The approvals of the seeded database (see the file comment), or with `onlyPending` only its pending
 * ones (the same rows: the empty database lists the same first page).
 */
async function seedApprovals(client: pg.PoolClient, approvals: number, onlyPending: boolean): Promise<void> {
  await client.query(
    `insert into approvals (id, status, client_id, resource, scope, requested_scope, task, max_tokens,
       tokens_issued, requested_by, approved_by, decided_by, created_at, decided_at, expires_at, revoked_at)
     select 'apr_' || substr(md5('a' || i), 1, 22), s.status, s.agent, $1,
       'crm:read', 'crm:read', 'seeded task ' || i, 1000,
       case when s.status in ('pending', 'denied') then 0 else 25 end,
       s.agent,
       case when s.status in ('approved', 'revoked', 'expired') then 'seed-approver' end,
       case when s.status <> 'pending' then 'seed-approver' end,
       s.created, case when s.status <> 'pending' then s.created + interval '5 minutes' end,
       case s.status when 'pending' then now() + interval '1 hour' + (i % 24) * interval '1 hour'
         when 'expired' then now() - interval '1 hour' - (i % 24) * interval '1 hour'
         else now() + interval '1 day' end,
       case when s.status = 'revoked' then s.created + interval '1 hour' end
     from generate_series(0, $2::int - 1) as i,
       lateral (select case when i % 100 < 2 then 'pending' when i % 100 < 42 then 'approved'
         when i % 100 < 50 then 'denied' when i % 100 < 60 then 'revoked' else 'expired' end as status,
         now() - (i % 30) * interval '1 day' - (i % 86400) * interval '1 second' as created,
         -- Pending ones spread over every agent (two each, within the default cap of 50).
         'agent-' || case when i % 100 < 2 then (i / 100) % ${AGENTS} else i % ${AGENTS} end as agent) as s
     where not $3::boolean or s.status = 'pending'`,
    [RESOURCE, approvals, onlyPending],
  );
}

/** Fills the seeded database (see the file comment). */
async function seed(pool: pg.Pool, options: SeededGrowthOptions): Promise<void> {
  const { log } = options;
  const client = await pool.connect();
  try {
    await client.query("set synchronous_commit = off");
    const started = Date.now();
    await seedApprovals(client, options.approvals, false);
    log(`seed: ${options.approvals.toLocaleString("en-US")} approvals in ${Date.now() - started} ms`);

    // Both tables' rows are dated from the start of today (at most 20 hours back) to now: the daily
    // partitions an exchange writes into hold them.
    const { rows } = await client.query<{ start: Date; span: number }>(
      `select greatest(date_trunc('day', now() at time zone 'UTC') at time zone 'UTC' + interval '1 minute',
         now() - interval '20 hours') as start,
         extract(epoch from now() - greatest(date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'
           + interval '1 minute', now() - interval '20 hours'))::float8 as span`,
    );
    const { start, span } = rows[0] as { start: Date; span: number };
    const salt = randomBytes(8).toString("hex");
    for (let from = 0; from < options.tokens; from += CHUNK) {
      const to = Math.min(options.tokens, from + CHUNK) - 1;
      const t0 = Date.now();
      // exp runs from start to now (+ 300 s, a token's lifetime), iat 300 s before it.
      await client.query(
        `insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, jkt, iat, exp)
         select translate(substr(encode(sha256(('t' || i || $5)::bytea), 'base64'), 1, 24), '+/', '-_'),
           'apr_' || substr(md5('a' || (i::bigint * 7919 % $4::int)), 1, 22), 'agent-' || ((i::bigint * 7919 % $4::int) % ${AGENTS}),
           'alice', $6, 'crm:read', null,
           $1::timestamptz + (i::float8 * $2::float8 / $3::float8) * interval '1 second',
           $1::timestamptz + (i::float8 * $2::float8 / $3::float8) * interval '1 second' + interval '300 seconds'
         from generate_series($7::int, $8::int) as i`,
        [start, span, options.tokens, options.approvals, salt, RESOURCE, from, to],
      );
      log(`seed: issued_tokens ${(to + 1).toLocaleString("en-US")} (${Date.now() - t0} ms)`);
    }
    for (let from = 0; from < options.audit; from += CHUNK) {
      const to = Math.min(options.audit, from + CHUNK) - 1;
      const t0 = Date.now();
      await client.query(
        `insert into audit_events (at, event, outcome, approval_id, client_id, actor, detail)
         select $1::timestamptz + (i::float8 * $2::float8 / $3::float8) * interval '1 second',
           'token_exchange', 'granted', 'apr_' || substr(md5('a' || (i::bigint * 7919 % $4::int)), 1, 22),
           'agent-' || ((i::bigint * 7919 % $4::int) % ${AGENTS}), 'agent-' || ((i::bigint * 7919 % $4::int) % ${AGENTS}),
           jsonb_build_object('jti', translate(substr(encode(sha256(('e' || i)::bytea), 'base64'), 1, 24), '+/', '-_'),
             'sub', 'alice', 'aud', $5::text, 'scope', 'crm:read')
         from generate_series($6::int, $7::int) as i`,
        [start, span, options.audit, options.approvals, RESOURCE, from, to],
      );
      log(`seed: audit_events ${(to + 1).toLocaleString("en-US")} (${Date.now() - t0} ms)`);
    }
    const t0 = Date.now();
    await client.query("vacuum analyze");
    log(
      `seed: vacuum analyze (${Date.now() - t0} ms), ${Math.round((Date.now() - started) / 1000)} s in all`,
    );
  } finally {
    client.release();
  }
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

/** A database of the run: its pool, its STS and the approvals its load runs under. */
interface Target {
  readonly name: string;
  readonly pool: pg.Pool;
  readonly sts: SpawnedSts;
  readonly bodies: readonly string[];
}

/** Exchanges from `connections` connections, each under an approval of its own, `amount` in all. */
function exchanges(target: Target, amount: number, connections: number) {
  let nextSlot = 0;
  return autocannon({
    url: `${target.sts.base}/token`,
    method: "POST",
    headers: { ...target.sts.headers },
    connections,
    amount,
    timeout: 10,
    requests: [
      {
        setupRequest: (request: Record<string, unknown>, context: Record<string, unknown>) => {
          if (typeof context.slot !== "number") context.slot = nextSlot++;
          return { ...request, body: target.bodies[(context.slot as number) % target.bodies.length] };
        },
      },
    ],
  });
}

async function listings(target: Target, amount: number) {
  const token = await target.sts.approverToken();
  return autocannon({
    url: `${target.sts.base}/approvals?status=pending`,
    method: "GET",
    headers: { authorization: `Bearer ${token}` },
    connections: 4,
    amount,
    timeout: 10,
  });
}

/** The WAL between two LSNs by the relation of each record's first block: records, bytes, full-page images. */
async function walDetail(pool: pg.Pool, from: string, to: string): Promise<string[]> {
  await pool.query("create extension if not exists pg_walinspect");
  const { rows } = await pool.query<{
    rel: string;
    records: string;
    bytes: string;
    fpi: string;
    fpis: string;
  }>(
    `select coalesce(pg_filenode_relation(0, (m[1])::oid)::text, r.resource_manager) as rel,
       count(*)::text as records, sum(r.record_length)::text as bytes, sum(r.fpi_length)::text as fpi,
       count(*) filter (where r.fpi_length > 0)::text as fpis
     from pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) as r
       left join lateral regexp_match(r.block_ref, 'rel \\d+/\\d+/(\\d+)') as m on true
     group by 1 order by sum(r.record_length) desc limit 12`,
    [from, to],
  );
  return rows.map(
    (r) => `${r.rel}: ${r.records} records, ${r.bytes} B (${r.fpis} full-page images, ${r.fpi} B)`,
  );
}

async function measure(target: Target, options: SeededGrowthOptions): Promise<Measurement> {
  const state = async () => {
    const { rows } = await target.pool.query<{ lsn: string; size: string }>(
      "select pg_current_wal_lsn()::text as lsn, pg_database_size(current_database())::text as size",
    );
    return rows[0] as { lsn: string; size: string };
  };
  await target.pool.query("checkpoint");
  const before = await state();
  const run = await exchanges(target, options.exchanges, options.connections);
  const after = await state();
  const { rows } = await target.pool.query<{ wal: string }>(
    "select pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::text as wal",
    [after.lsn, before.lsn],
  );
  // The WAL may already be recycled (a checkpoint since): the breakdown is then left out.
  const walByRelation = options.walDetail
    ? await walDetail(target.pool, before.lsn, after.lsn).catch((error: Error) => [
        `(no breakdown: ${error.message})`,
      ])
    : undefined;
  const list = await listings(target, options.listRequests);
  if (list.non2xx > 0 || run.non2xx > 0)
    options.log(
      `${target.name}: answers other than 2xx: exchanges ${JSON.stringify(run.statusCodeStats)}, listings ${JSON.stringify(list.statusCodeStats)}`,
    );
  const total = run.requests.total;
  return {
    exchangesPerSecond: total / run.duration,
    p99Ms: run.latency.p99,
    walBytesPerExchange: Number(rows[0]?.wal ?? Number.NaN) / total,
    tableBytesPerExchange: (Number(after.size) - Number(before.size)) / total,
    listP50Ms: list.latency.p50,
    listP99Ms: list.latency.p99,
    failures: run.errors + run.timeouts + run.non2xx + list.errors + list.timeouts + list.non2xx,
    ...(walByRelation ? { walByRelation } : {}),
  };
}

const fmt = (value: number, digits = 0) =>
  value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Runs the benchmark (see the file comment); returns a Markdown table. */
export async function runSeededGrowthBenchmark(options: SeededGrowthOptions): Promise<string> {
  const { log } = options;
  const suffix = randomBytes(4).toString("hex");
  const names = { empty: `cs_bench_empty_${suffix}`, seeded: `cs_bench_seeded_${suffix}` };
  const work = mkdtempSync(path.join(tmpdir(), "countersign-bench-growth-"));
  const targets: Target[] = [];
  const pools: pg.Pool[] = [];
  try {
    const settings = new pg.Client({ connectionString: options.url });
    await settings.connect();
    const show = async (name: string) => (await settings.query(`show ${name}`)).rows[0]?.[name] as string;
    const cluster = `fsync=${await show("fsync")}, full_page_writes=${await show("full_page_writes")}, synchronous_commit=${await show("synchronous_commit")}, checkpoint_timeout=${await show("checkpoint_timeout")}, ${(await settings.query("select version()")).rows[0]?.version.split(" on ")[0]}`;
    await settings.end();

    for (const [name, database] of Object.entries(names)) {
      await adminQuery(options.url, `create database ${database}`);
      const url = withDatabase(options.url, database);
      const handle = await openDatabase({ url, dataDir: "memory://" });
      try {
        await migrateToLatest(handle.db);
        // Partitions from the start of yesterday (seeded rows of today and yesterday's tokens), as the
        // retention job keeps them.
        const from = new Date(Date.now() - 86_400_000);
        await ensurePartitions(handle.db, "audit_events", from, 9);
        await ensurePartitions(handle.db, "issued_tokens", from, 9);
      } finally {
        await handle.close();
      }
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      pools.push(pool);
      if (name === "seeded") await seed(pool, options);
      else {
        const client = await pool.connect();
        try {
          await seedApprovals(client, options.approvals, true);
        } finally {
          client.release();
        }
        await pool.query("vacuum analyze");
      }
      const dir = path.join(work, name);
      const sts = await spawnBenchSts({ databaseUrl: url, work: mkdtempSync(`${dir}-sts-`) });
      const ids = Array.from({ length: options.connections }, (_, i) => `bench-${suffix}-${i}`);
      await insertBenchApprovals(pool, ids);
      targets.push({ name, pool, sts, bodies: ids.map((id) => exchangeBodyFor(sts.subjectToken, id)) });
      log(`${name}: STS ready at ${sts.base}`);
    }

    for (const target of targets) {
      log(`${target.name}: warm-up`);
      await exchanges(target, Math.min(4_000, options.exchanges), options.connections);
      await listings(target, 40);
    }
    const results: Record<string, Measurement[]> = { empty: [], seeded: [] };
    for (let round = 1; round <= options.rounds; round++) {
      for (const target of targets) {
        const m = await measure(target, options);
        log(
          `round ${round} ${target.name}: ${fmt(m.exchangesPerSecond)}/s p99 ${m.p99Ms} ms, WAL ${fmt(m.walBytesPerExchange)} B, table ${fmt(m.tableBytesPerExchange)} B per exchange; pending list p50 ${m.listP50Ms} ms p99 ${m.listP99Ms} ms; failures ${m.failures}; load ${loadavg()
            .map((l) => l.toFixed(2))
            .join(" ")}`,
        );
        for (const line of m.walByRelation ?? []) log(`  ${line}`);
        results[target.name]?.push(m);
      }
    }
    const counts = await (targets[1] as Target).pool.query<{ t: string; a: string; p: string; ap: string }>(
      `select (select count(*) from issued_tokens)::text as t, (select count(*) from audit_events)::text as a,
         (select count(*) from approvals where status = 'pending')::text as p, (select count(*) from approvals)::text as ap`,
    );
    const c = counts.rows[0];
    const row = (label: string, pick: (m: Measurement) => number, digits: number, lowerIsBetter: boolean) => {
      const empty = median((results.empty ?? []).map(pick));
      const seeded = median((results.seeded ?? []).map(pick));
      const ratio = seeded / empty;
      const within = lowerIsBetter ? ratio <= 1.1 : ratio >= 1 / 1.1;
      return `| ${label} | ${fmt(empty, digits)} | ${fmt(seeded, digits)} | ${fmt(ratio, 2)} | ${within ? "yes" : "**no**"} |`;
    };
    const failures = [...(results.empty ?? []), ...(results.seeded ?? [])].reduce(
      (sum, m) => sum + m.failures,
      0,
    );
    return [
      `${machineLine()}; Postgres: ${cluster}; load average at the end ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}.`,
      `Seeded database after the run: ${fmt(Number(c?.t))} issued_tokens, ${fmt(Number(c?.a))} audit_events, ${fmt(Number(c?.ap))} approvals (${fmt(Number(c?.p))} pending). ` +
        `Median of ${options.rounds} alternating rounds of ${fmt(options.exchanges)} exchanges (${options.connections} connections, one approval each) and ${options.listRequests} pending listings (4 connections) each, every round after a CHECKPOINT; ${failures} failed requests.`,
      "",
      "| per measurement | empty | seeded | seeded / empty | within 10 % |",
      "| --- | ---: | ---: | ---: | --- |",
      row("exchanges/s", (m) => m.exchangesPerSecond, 0, false),
      row("exchange p99 ms", (m) => m.p99Ms, 1, true),
      row("WAL bytes per exchange", (m) => m.walBytesPerExchange, 0, true),
      row("database growth bytes per exchange", (m) => m.tableBytesPerExchange, 0, true),
      row("`GET /approvals?status=pending` p50 ms", (m) => m.listP50Ms, 1, true),
      row("`GET /approvals?status=pending` p99 ms", (m) => m.listP99Ms, 1, true),
    ].join("\n");
  } finally {
    for (const target of targets) await target.sts.stop().catch(() => {});
    for (const pool of pools) await pool.end().catch(() => {});
    for (const database of Object.values(names))
      await adminQuery(options.url, `drop database if exists ${database} with (force)`).catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const url = env.DATABASE_URL;
  if (!url) {
    process.stderr.write("DATABASE_URL must name a real Postgres (fsync on for WAL numbers)\n");
    process.exit(2);
  }
  const markdown = await runSeededGrowthBenchmark({
    url,
    tokens: Number(env.BENCH_SEED_TOKENS ?? 5_000_000),
    audit: Number(env.BENCH_SEED_AUDIT ?? 5_400_000),
    approvals: Number(env.BENCH_SEED_APPROVALS ?? 200_000),
    exchanges: Number(env.BENCH_EXCHANGES ?? 20_000),
    connections: Number(env.BENCH_CONNECTIONS ?? 32),
    rounds: Number(env.BENCH_ROUNDS ?? 2),
    listRequests: Number(env.BENCH_LIST_REQUESTS ?? 400),
    walDetail: env.BENCH_WAL_DETAIL === "1",
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${markdown}\n`);
}
