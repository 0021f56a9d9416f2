import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CompiledQuery, Kysely, PGliteDialect, PostgresDialect, sql } from "kysely";
import { listApprovals, listPendingApprovals } from "../../../sts/src/approvals/repository.js";
import { expireLapsedPending } from "../../../sts/src/db/approval_expiry.js";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import type { ApprovalStatus, Database } from "../../../sts/src/db/schema.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";

const APPROVALS = 200_000;
/** Seconds between two approvals' creation: 200 000 of them over 30 days. */
const SPACING_SECONDS = 13;

/** A node of `EXPLAIN (ANALYZE, FORMAT JSON)`. */
interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Index Cond"?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Plans?: PlanNode[];
}

function nodesOf(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodesOf)];
}

for (const engine of testEngines()) {
  describe(`approval listings at ${APPROVALS} approvals use an index, on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;
    let logged: Kysely<Database>;
    const queries: CompiledQuery[] = [];

    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      await migrateToLatest(handle.db);
      // One approval every 13 s over 30 days, each with the default ttl of an hour: those of the last hour
      // are live. 40 % were approved, 40 % never decided (still `pending`, long expired), 10 % denied, 10 %
      // revoked: the listing of live ones must not read the expired ones.
      for (let from = 0; from < APPROVALS; from += 20_000) {
        await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
            max_tokens, requested_by, created_at, expires_at)
          select 'apr_' || lpad(i::text, 22, '0'),
            case when i % 10 < 4 then 'approved' when i % 10 < 8 then 'pending'
              when i % 10 = 8 then 'denied' else 'revoked' end,
            'agent-' || (i % 50), 'https://crm.example.test', 'crm:read', 'crm:read', 'a task', 10,
            'agent-' || (i % 50),
            now() - make_interval(secs => (${APPROVALS}::int - i) * ${SPACING_SECONDS}::int),
            now() - make_interval(secs => (${APPROVALS}::int - i) * ${SPACING_SECONDS}::int) + interval '1 hour'
          from generate_series(${from + 1}::int, ${from + 20_000}::int) i`.execute(handle.db);
      }
      // The retention job sets the lapsed pending ones to `expired` (it runs every 10 s by default).
      const { rows } = await sql<{ lapsed: number }>`select count(*)::int as lapsed from approvals
        where status = 'pending' and expires_at <= now()`.execute(handle.db);
      const lapsed = rows[0]?.lapsed ?? 0;
      assert.ok(lapsed > 79_000, `${lapsed} lapsed`);
      // (More may lapse meanwhile: one approval every 13 s.)
      assert.ok((await expireLapsedPending(handle.db, { maxBatches: 100 })) >= lapsed);
      await sql`analyze approvals`.execute(handle.db);
      // The same database through a Kysely that records the SQL listApprovals sends (never destroyed: it
      // would close the pool the handle owns).
      const dialect = handle.pool
        ? new PostgresDialect({ pool: handle.pool })
        : new PGliteDialect({ pglite: handle.pglite! });
      logged = new Kysely<Database>({
        dialect,
        log: (event) => {
          if (event.level === "query") queries.push(event.query);
        },
      });
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    /** The plan of `GET /approvals?status=…`'s query, run (EXPLAIN ANALYZE), with `settings` set for it. */
    async function planOf(
      status: Exclude<ApprovalStatus, "pending">,
      settings: string[] = [],
    ): Promise<PlanNode[]> {
      return planOfQuery(async () => {
        const listed = await listApprovals(logged, { status, limit: 51 });
        assert.equal(listed.length, 51);
      }, settings);
    }

    /** The plan (EXPLAIN ANALYZE) of the one query `run` sends, with `settings` set for it. */
    async function planOfQuery(run: () => Promise<void>, settings: string[] = []): Promise<PlanNode[]> {
      const plans = await plansOfQueries(run, settings);
      assert.equal(plans.length, 1);
      return plans[0] ?? [];
    }

    /** The plans (EXPLAIN ANALYZE) of every query `run` sends, in order, with `settings` set for each. */
    async function plansOfQueries(run: () => Promise<void>, settings: string[] = []): Promise<PlanNode[][]> {
      queries.length = 0;
      await run();
      const sent = [...queries];
      const plans: PlanNode[][] = [];
      for (const query of sent) plans.push(await planOfCompiled(query, settings));
      return plans;
    }

    async function planOfCompiled(query: CompiledQuery, settings: string[]): Promise<PlanNode[]> {
      return handle.db.connection().execute(async (connection) => {
        for (const setting of settings) await sql.raw(`set ${setting}`).execute(connection);
        try {
          const result = await connection.executeQuery<{ "QUERY PLAN": unknown }>(
            CompiledQuery.raw(`explain (analyze, format json) ${query.sql}`, [...query.parameters]),
          );
          const raw = result.rows[0]?.["QUERY PLAN"];
          const document = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: PlanNode }[];
          return nodesOf((document[0] as { Plan: PlanNode }).Plan);
        } finally {
          for (const setting of settings) await sql.raw(`reset ${setting.split(" ")[0]}`).execute(connection);
        }
      });
    }

    /** Rows the plan read from `approvals`: those it returned plus those its filters removed. */
    function rowsRead(nodes: PlanNode[]): number {
      return nodes
        .filter((node) => node["Relation Name"] === "approvals")
        .reduce(
          (sum, node) =>
            sum +
            node["Actual Rows"] * node["Actual Loops"] +
            (node["Rows Removed by Filter"] ?? 0) +
            (node["Rows Removed by Index Recheck"] ?? 0),
          0,
        );
    }

    // Live pending approvals: 40 % of the last hour's (about 110, of 20 agents), of 200 000.
    for (const page of ["first", "later"] as const) {
      test(`status=pending, ${page} page (round by round per agent): indexes only, no sequential scan of approvals, reading only the live approvals`, async () => {
        let after: Parameters<typeof listPendingApprovals>[1]["after"];
        if (page === "later") {
          const first = await listPendingApprovals(handle.db, { limit: 20 });
          assert.equal(first.length, 20);
          const last = first.at(-1);
          assert.ok(last);
          after = { snapshot: last.snapshot, round: last.round, createdAt: last.created_at, id: last.id };
        }
        const plans = await plansOfQueries(async () => {
          const listed = await listPendingApprovals(logged, { limit: 51, after });
          assert.equal(listed.length, 51);
          assert.ok(listed.every((approval) => approval.status === "pending"));
        });
        // 20 agents: round 0 cannot fill the page, so the whole snapshot is read, newest first (102 rows,
        // then up to 204: about 110 live), then the page's rows by id.
        assert.equal(plans.length, 3);
        const { rows } = await sql<{ live: number }>`select count(*)::int as live from approvals
          where status = 'pending' and expires_at > now()`.execute(handle.db);
        const live = rows[0]?.live ?? 0;
        assert.ok(live > 51 && live < 200, `live ${live}`);
        for (const [i, nodes] of plans.entries()) {
          const scans = nodes.filter((node) => node["Relation Name"] === "approvals");
          assert.ok(scans.length > 0);
          assert.ok(
            scans.every((scan) => scan["Node Type"] !== "Seq Scan"),
            JSON.stringify(scans.map((scan) => scan["Node Type"])),
          );
          // At most the live pending approvals, of 200 000 (the planner may read them all rather than
          // look 51 up by id, or walk them newest first: at this size either is a hundred rows).
          assert.ok(rowsRead(nodes) <= live, `statement ${i} read ${rowsRead(nodes)} rows, ${live} live`);
        }
      });
    }

    for (const status of ["approved"] as const) {
      test(`status=${status}: an index range on expires_at, reading only the live approvals (no sequential scan)`, async () => {
        const nodes = await planOf(status);
        const scans = nodes.filter((node) => node["Relation Name"] === "approvals");
        assert.ok(
          scans.every((scan) => scan["Node Type"] !== "Seq Scan"),
          JSON.stringify(scans.map((scan) => scan["Node Type"])),
        );
        assert.ok(
          scans.some((scan) => /expires_at > now\(\)/.test(scan["Index Cond"] ?? "")),
          JSON.stringify(scans.map((scan) => [scan["Index Name"], scan["Index Cond"]])),
        );
        // About 280 approvals are live (an hour's worth), of 200 000.
        assert.ok(rowsRead(nodes) < 1000, `read ${rowsRead(nodes)} rows`);
      });
    }

    test("status=expired (enable_seqscan off: most approvals are expired, so the planner rightly prefers a sequential scan): a bitmap of approvals_status_expires_idx and approvals_expiring_idx", async () => {
      const nodes = await planOf("expired", ["enable_seqscan = off"]);
      assert.ok(nodes.every((node) => node["Node Type"] !== "Seq Scan"));
      const indexes = nodes.map((node) => node["Index Name"]).filter((name) => name !== undefined);
      assert.deepEqual(indexes.sort(), ["approvals_expiring_idx", "approvals_status_expires_idx"]);
    });
  });
}
