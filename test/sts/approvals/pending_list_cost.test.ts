import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { listPendingApprovals, rankPendingPage } from "../../../sts/src/approvals/repository.js";
import { expireLapsedPending } from "../../../sts/src/db/approval_expiry.js";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";
import { captureStatements, type Statement } from "../../helpers/statements.js";

/**
 * What a pending list's first page reads when many approvals are pending: the page's worth, not the
 * pending approvals (docs/reference.md, "GET /approvals"). 4,000 live pending approvals of 2,000 agents
 * (two each, within the default cap of 50), one agent that requested 3,000 approvals living one
 * second, all lapsed and newer than every live one, and 100,000 decided approvals before them.
 */
const AGENTS = 2_000;
const LIVE = 4_000;
const LAPSED = 3_000;
const HISTORY = 100_000;

interface PlanNode {
  readonly "Node Type": string;
  readonly "Relation Name"?: string;
  readonly "Index Name"?: string;
  readonly "Scan Direction"?: string;
  readonly "Actual Rows": number;
  readonly "Actual Loops": number;
  readonly "Rows Removed by Filter"?: number;
  readonly Plans?: readonly PlanNode[];
}

function nodesOf(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];
}

/** Rows a scan node read: those it returned and those its filter removed. */
function rowsRead(scan: PlanNode): number {
  return scan["Actual Rows"] * scan["Actual Loops"] + (scan["Rows Removed by Filter"] ?? 0);
}

for (const engine of testEngines()) {
  describe(`a pending list's first page at ${LIVE} pending approvals, on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;

    /** EXPLAIN ANALYZE of a statement the process sent, its parameters inlined. */
    async function analyze(statement: Statement): Promise<PlanNode[]> {
      const literal = (value: unknown) =>
        typeof value === "number" ? String(value) : `'${String(value).replaceAll("'", "''")}'`;
      const text = statement.text.replace(/\$(\d+)/g, (_, n: string) =>
        literal(statement.values[Number(n) - 1]),
      );
      const { rows } = await sql<{
        "QUERY PLAN": unknown;
      }>`explain (analyze, format json) ${sql.raw(text)}`.execute(handle.db);
      const raw = rows[0]?.["QUERY PLAN"];
      const plan = ((typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: PlanNode }[])[0]?.Plan;
      assert.ok(plan);
      return nodesOf(plan);
    }

    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      await migrateToLatest(handle.db);
      await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
          max_tokens, requested_by, created_at, expires_at)
        select 'apr_live' || lpad(i::text, 18, '0'), 'pending', 'agent-' || (i % ${AGENTS}::int),
          'https://crm.example.test', 'crm:read', 'crm:read', 'a task', 10, 'agent-' || (i % ${AGENTS}::int),
          now() - interval '2 hours' + i * interval '1 second', now() + interval '1 hour'
        from generate_series(1, ${LIVE}::int) i`.execute(handle.db);
      await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
          max_tokens, requested_by, created_at, expires_at)
        select 'apr_gone' || lpad(i::text, 18, '0'), 'pending', 'flooder', 'https://crm.example.test',
          'crm:read', 'crm:read', 'a task', 10, 'flooder',
          now() - interval '10 minutes' + i * interval '100 milliseconds',
          now() - interval '10 minutes' + i * interval '100 milliseconds' + interval '1 second'
        from generate_series(1, ${LAPSED}::int) i`.execute(handle.db);
      // And the history around them: 100,000 decided approvals, 40 % approved and live for a day.
      await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
          max_tokens, requested_by, decided_by, created_at, decided_at, expires_at)
        select 'apr_done' || lpad(i::text, 18, '0'),
          case when i % 10 < 4 then 'approved' when i % 10 < 6 then 'denied' else 'expired' end,
          'agent-' || (i % ${AGENTS}::int), 'https://crm.example.test', 'crm:read', 'crm:read', 'a task', 10,
          'agent-' || (i % ${AGENTS}::int), 'bob', now() - interval '3 days' + i * interval '1 second',
          now() - interval '3 days' + i * interval '1 second' + interval '1 minute',
          case when i % 10 < 4 then now() + interval '1 day' else now() - interval '1 day' end
        from generate_series(1, ${HISTORY}::int) i`.execute(handle.db);
      await sql`analyze approvals`.execute(handle.db);
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    test("the retention step sets the 3,000 lapsed ones to expired, 1,000 per statement", async () => {
      const statements = await captureStatements(handle, async () => {
        assert.equal(await expireLapsedPending(handle.db, { maxBatches: 10 }), LAPSED);
      });
      assert.equal(statements.length, 4);
      const { rows } = await sql<{ status: string; n: number }>`
        select status, count(*)::int as n from approvals group by status order by status`.execute(handle.db);
      assert.deepEqual(rows, [
        { status: "approved", n: 40_000 },
        { status: "denied", n: 20_000 },
        { status: "expired", n: 40_000 + LAPSED },
        { status: "pending", n: LIVE },
      ]);
      assert.equal(await expireLapsedPending(handle.db, { maxBatches: 10 }), 0);
    });

    test("the first page reads 102 of the 4,000 pending (one read, newest first, from its index), then its 51 rows by id", async () => {
      const ranked = await rankPendingPage(handle.db, { limit: 51 });
      assert.equal(ranked.entries.length, 51);
      assert.equal(ranked.read, 102);
      // Round 0, the newest of 51 different agents.
      assert.deepEqual(
        ranked.entries.map((entry) => entry.round),
        Array.from({ length: 51 }, () => 0),
      );
      assert.equal(new Set(ranked.entries.map((entry) => entry.clientId)).size, 51);
      assert.equal(ranked.entries[0]?.id, `apr_live${String(LIVE).padStart(18, "0")}`);

      const statements = await captureStatements(handle, async () => {
        const page = await listPendingApprovals(handle.db, { limit: 51 });
        assert.deepEqual(
          page.map((approval) => approval.id),
          ranked.entries.map((entry) => entry.id),
        );
      });
      assert.equal(statements.length, 2);
      const [snapshotRead, pageRead] = statements;
      assert.ok(snapshotRead && pageRead);
      const snapshotNodes = await analyze(snapshotRead);
      const snapshotScans = snapshotNodes.filter((node) => node["Relation Name"] === "approvals");
      assert.deepEqual(
        snapshotScans.map((scan) => [scan["Node Type"], scan["Index Name"], scan["Scan Direction"]]),
        [["Index Only Scan", "approvals_pending_newest_idx", "Backward"]],
      );
      assert.deepEqual(snapshotScans.map(rowsRead), [102]);
      assert.ok(!snapshotNodes.some((node) => node["Node Type"] === "Sort"));
      // The page's rows by primary key only: 51 rows, whatever else is pending.
      const pageNodes = await analyze(pageRead);
      const indexes = pageNodes.flatMap((node) => node["Index Name"] ?? []);
      assert.deepEqual([...new Set(indexes)], ["approvals_pkey"]);
      assert.ok(!pageNodes.some((node) => node["Node Type"] === "Seq Scan"));
      assert.deepEqual(pageNodes.filter((node) => node["Relation Name"] === "approvals").map(rowsRead), [51]);
    });
  });
}

for (const engine of testEngines()) {
  describe(`a pending list's later page after an approval of its snapshot lapsed, on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;

    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      await migrateToLatest(handle.db);
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    test("an approval set to expired by the retention job after the first page still counts in its agent's rounds: the next page misses nothing", async () => {
      // Requested (minutes ago): b1 5, a1 4, a2 3, b2 2, a3 1. Rounds: a3 0, a2 1, a1 2; b2 0, b1 1.
      // The list: a3, b2 (round 0), a2, b1 (round 1), a1 (round 2).
      for (const [id, agent, minutesAgo] of [
        ["b1", "agent-b", 5],
        ["a1", "agent-a", 4],
        ["a2", "agent-a", 3],
        ["b2", "agent-b", 2],
        ["a3", "agent-a", 1],
      ] as const) {
        await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task,
            max_tokens, requested_by, created_at, expires_at)
          values (${`apr_${id.padEnd(22, "0")}`}, 'pending', ${agent}, 'https://crm.example.test', 'crm:read',
            'crm:read', 'a task', 10, ${agent}, now() - make_interval(mins => ${minutesAgo}), now() + interval '1 hour')`.execute(
          handle.db,
        );
      }
      const name = (id: string) => id.slice(4, 6);
      const first = await listPendingApprovals(handle.db, { limit: 4 });
      assert.deepEqual(
        first.map((approval) => [name(approval.id), approval.round]),
        [
          ["a3", 0],
          ["b2", 0],
          ["a2", 1],
          ["b1", 1],
        ],
      );
      const last = first.at(-1);
      assert.ok(last);

      // a3 (pending at the snapshot) lapses a second later and the retention job stores its expiry.
      await sql`update approvals set expires_at = now() + interval '1 second' where id = ${`apr_${"a3".padEnd(22, "0")}`}`.execute(
        handle.db,
      );
      for (let i = 0; i < 100; i++) {
        const { rows } = await sql<{
          lapsed: boolean;
        }>`select bool_and(expires_at <= now()) as lapsed from approvals
          where id = ${`apr_${"a3".padEnd(22, "0")}`}`.execute(handle.db);
        if (rows[0]?.lapsed) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(await expireLapsedPending(handle.db, { maxBatches: 1 }), 1);

      // Without a3, a1 would be round 1 and before the cursor (round 1, b1): skipped.
      const second = await listPendingApprovals(handle.db, {
        limit: 4,
        after: { snapshot: last.snapshot, round: last.round, createdAt: last.created_at, id: last.id },
      });
      assert.deepEqual(
        second.map((approval) => [name(approval.id), approval.round]),
        [["a1", 2]],
      );
    });
  });
}
