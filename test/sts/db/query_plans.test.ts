import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { listApprovals, listPendingApprovals } from "../../../sts/src/approvals/repository.js";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { recentExchangesQuery } from "../../../sts/src/db/exchange_counters.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import type { ApprovalStatus } from "../../../sts/src/db/schema.js";
import { ensurePartitions } from "../../../sts/src/ops/partitions.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";
import { captureStatements, type Statement } from "../../helpers/statements.js";

/**
 * The queries that run per token exchange and the approval listings, planned over tables with enough
 * rows that the planner's choice means something (20,000 approvals of 200 agents with a realistic mix of
 * statuses, 60,000 token records and audit events, 20,000 exchange counters), after ANALYZE: each
 * reads its table through an index, never by a sequential scan.
 */
const APPROVALS = 20_000;
const TOKENS = 60_000;
const AGENTS = 200;

/** Relations whose growth the exchange path and the listings must not scan. */
const GROWING = /^(approvals|issued_tokens|audit_events|exchange_counters)/;

interface PlanNode {
  readonly "Node Type": string;
  readonly "Relation Name"?: string;
  readonly "Index Name"?: string;
  readonly Plans?: readonly PlanNode[];
}

function nodesOf(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];
}

/** Inlines a statement's parameters as literals (EXPLAIN of a parameterized statement needs values). */
function literal(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  const text = value instanceof Date ? value.toISOString() : String(value);
  return `'${text.replaceAll("'", "''")}'`;
}

async function plan(handle: DatabaseHandle, statement: Statement): Promise<PlanNode[]> {
  const text = statement.text.replace(/\$(\d+)/g, (_, n: string) => literal(statement.values[Number(n) - 1]));
  const { rows } = await sql<{ "QUERY PLAN": unknown }>`explain (format json) ${sql.raw(text)}`.execute(
    handle.db,
  );
  const raw = rows[0]?.["QUERY PLAN"];
  const parsed = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: PlanNode }[];
  return nodesOf((parsed[0] as { Plan: PlanNode }).Plan);
}

/**
 * Asserts the plan reads every growing table through an index (a sequential scan only of a partition
 * of at most one page: an empty day), and returns the indexes it uses, sorted and distinct.
 */
async function assertIndexed(handle: DatabaseHandle, name: string, statement: Statement): Promise<string[]> {
  const nodes = await plan(handle, statement);
  const scans = nodes.filter((node) => GROWING.test(node["Relation Name"] ?? ""));
  assert.ok(scans.length > 0, `${name}: reads no growing table?`);
  for (const node of scans.filter((scan) => scan["Node Type"] === "Seq Scan")) {
    const { rows } = await sql<{ relpages: number }>`
      select relpages from pg_class where relname = ${node["Relation Name"]}`.execute(handle.db);
    assert.ok((rows[0]?.relpages ?? 0) <= 1, `${name}: sequential scan of ${node["Relation Name"]}`);
  }
  return [...new Set(nodes.flatMap((node) => node["Index Name"] ?? []))].sort();
}

async function seed(handle: DatabaseHandle): Promise<void> {
  const db = handle.db;
  await ensurePartitions(db, "audit_events", new Date(Date.now() - 86_400_000), 3);
  await ensurePartitions(db, "issued_tokens", new Date(Date.now() - 86_400_000), 3);
  // 2 % pending, 40 % approved, 8 % denied, 10 % revoked, 40 % expired.
  await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task, max_tokens,
      tokens_issued, requested_by, approved_by, decided_by, created_at, decided_at, expires_at, revoked_at)
    select 'apr_' || substr(md5('a' || i), 1, 22), s.status, 'agent-' || (i % ${AGENTS}),
      'https://crm.example.test', 'crm:read', 'crm:read', 'task ' || i, 100,
      case when s.status in ('pending', 'denied') then 0 else 3 end, 'agent-' || (i % ${AGENTS}),
      case when s.status in ('approved', 'revoked', 'expired') then 'bob' end,
      case when s.status <> 'pending' then 'bob' end,
      s.created, case when s.status <> 'pending' then s.created + interval '5 minutes' end,
      case s.status when 'pending' then now() + interval '1 hour'
        when 'expired' then now() - interval '1 hour' else now() + interval '1 day' end,
      case when s.status = 'revoked' then s.created + interval '1 hour' end
    from generate_series(0, ${APPROVALS - 1}) as i,
      lateral (select case when i % 100 < 2 then 'pending' when i % 100 < 42 then 'approved'
        when i % 100 < 50 then 'denied' when i % 100 < 60 then 'revoked' else 'expired' end as status,
        now() - (i % 30) * interval '1 day' - (i % 86400) * interval '1 second' as created) as s`.execute(db);
  await sql`insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, iat, exp)
    select md5('t' || i), 'apr_' || substr(md5('a' || (i % ${APPROVALS})), 1, 22), 'agent-' || (i % ${AGENTS}),
      'alice', 'https://crm.example.test', 'crm:read', now() - i * interval '1 second',
      now() - i * interval '1 second' + interval '300 seconds'
    from generate_series(0, ${TOKENS - 1}) as i`.execute(db);
  await sql`insert into audit_events (at, event, outcome, approval_id, client_id, actor)
    select now() - i * interval '1 second', 'token_exchange', 'granted',
      'apr_' || substr(md5('a' || (i % ${APPROVALS})), 1, 22), 'agent-' || (i % ${AGENTS}), 'agent-' || (i % ${AGENTS})
    from generate_series(0, ${TOKENS - 1}) as i`.execute(db);
  await sql`insert into exchange_counters (client_id, iat_second, exchanges)
    select 'agent-' || (i % ${AGENTS}), extract(epoch from now())::bigint - i / ${AGENTS}, 1 + i % 7
    from generate_series(0, ${APPROVALS - 1}) as i`.execute(db);
  await sql`analyze`.execute(db);
}

for (const engine of testEngines()) {
  describe(`query plans over grown tables on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;
    const someApproval = `apr_${"0".repeat(22)}`;
    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      await migrateToLatest(handle.db);
      await seed(handle);
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    test("the exchange path: the approval by id, recent_exchanges_per_minute by the counters' key, the budget update by id", async () => {
      assert.deepEqual(
        await assertIndexed(handle, "approval", {
          text: "select * from approvals where id = $1",
          values: [someApproval],
        }),
        ["approvals_pkey"],
      );
      const rate = recentExchangesQuery(handle.db, "agent-7", new Date()).compile();
      assert.doesNotMatch(rate.sql, /issued_tokens/);
      assert.deepEqual(
        await assertIndexed(handle, "recent_exchanges_per_minute", {
          text: rate.sql,
          values: rate.parameters,
        }),
        ["exchange_counters_pkey"],
      );
      // countersign_issue's statements that read (its inserts read nothing).
      assert.deepEqual(
        await assertIndexed(handle, "budget", {
          text: `update approvals as a set tokens_issued = a.tokens_issued + 1
            where a.id = $1 and a.client_id = $2 and a.status = 'approved' and a.expires_at > now()
              and a.tokens_issued < a.max_tokens`,
          values: [someApproval, "agent-7"],
        }),
        ["approvals_pkey"],
      );
    });

    test("issued_tokens is read by approval only (the revocation feed's bound), through its index", async () => {
      const used = await assertIndexed(handle, "revocation bound", {
        text: "select max(t.exp) from issued_tokens t where t.approval_id = $1",
        values: [someApproval],
      });
      assert.ok(
        used.every((index) => /^issued_tokens_.*approval_id_idx$/.test(index)),
        used.join(", "),
      );
    });

    test("the approval listings, every status and a next page, read approvals through indexes", async () => {
      const listed: Statement[] = [];
      const first = await captureStatements(handle, async () => {
        const page = await listPendingApprovals(handle.db, { limit: 51 });
        assert.equal(page.length, 51);
        const last = page.at(-1)!;
        await listPendingApprovals(handle.db, {
          limit: 51,
          after: { snapshot: last.snapshot, round: last.round, createdAt: last.created_at, id: last.id },
        });
      });
      listed.push(...first);
      for (const status of ["approved", "denied", "revoked", "expired"] as const satisfies ApprovalStatus[]) {
        listed.push(
          ...(await captureStatements(handle, async () => {
            const page = await listApprovals(handle.db, { status, limit: 51 });
            assert.equal(page.length, 51, status);
            const last = page.at(-1)!;
            await listApprovals(handle.db, {
              status,
              limit: 51,
              after: { createdAt: last.created_at, id: last.id },
            });
          })),
        );
      }
      // Two statements per other listing (first and next page); the pending list reads its snapshot in
      // one or more batches, then its page's rows.
      assert.ok(listed.length >= 12, `${listed.length} statements`);
      for (const [i, statement] of listed.entries()) await assertIndexed(handle, `listing ${i}`, statement);
    });
  });
}
