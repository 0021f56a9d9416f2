import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import type { Approval } from "../../../sts/src/db/schema.js";
import type { LimitTake } from "../../../sts/src/exchange/guards.js";
import {
  createIssuanceStore,
  type IssueOutcome,
  type IssueRequest,
} from "../../../sts/src/exchange/issuance_store.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";

/** A request to issue a crm:read token for alice under `approval`, as the exchange grant builds it. */
let tick = 0;
function issueRequest(
  approval: Approval,
  jti: string,
  auditDetail: Record<string, unknown> = {},
  limits?: LimitTake,
): IssueRequest {
  const now = Date.now() + tick++;
  return {
    record: {
      jti,
      approvalId: approval.id,
      clientId: approval.client_id,
      sub: "alice",
      aud: approval.resource,
      scope: "crm:read",
      jkt: null,
      iat: new Date(now),
      exp: new Date(now + 60_000),
      terms: approval,
    },
    auditDetail,
    limits,
  };
}

for (const engine of testEngines()) {
  describe(`issuing in batches on ${engine}`, () => {
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

    async function approvalRow(id: string): Promise<Approval> {
      return handle.db.selectFrom("approvals").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    }

    test("concurrent requests under one approval are judged one by one, in arrival order", async () => {
      const approvalId = await insertApproval(handle.db, { max_tokens: 3 });
      const approval = await approvalRow(approvalId);
      const store = createIssuanceStore(handle.db, handle.pool);
      const limits = {
        keys: [`client:batch-${approvalId}`, `approval:${approvalId}`] as const,
        durationsMs: [60_000, 60_000] as const,
        points: [100, 5] as const,
      };
      const outcomes: IssueOutcome[] = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          store.issue(issueRequest(approval, `${approvalId}-${i}`, { n: i }, limits)),
        ),
      );
      // 1-3 take the budget; 4-5 pass the limits (5 points) but find the budget used up; 6-8 are over
      // the approval's 5 points, and give back the agent's point they took.
      assert.deepEqual(
        outcomes.map((o) =>
          o.ok ? `issued ${o.tokensIssued}` : "limitedUntil" in o ? "limited" : "refused",
        ),
        ["issued 1", "issued 2", "issued 3", "refused", "refused", "limited", "limited", "limited"],
      );
      for (const outcome of outcomes.slice(3, 5)) {
        // The database function says why, read in the same call: the budget is used up.
        assert.deepEqual(outcome, { ok: false, refused: "used_up" });
      }
      for (const outcome of outcomes.slice(5)) {
        assert.ok(!outcome.ok && "limitedUntil" in outcome);
        assert.ok(outcome.limitedUntil > Date.now() && outcome.limitedUntil <= Date.now() + 60_000);
      }
      const counters = await sql<{ key: string; points: number }>`
        select key, points from issuance_rate_limits
        where key in (${limits.keys[0]}, ${limits.keys[1]}) order by key`.execute(handle.db);
      assert.deepEqual(
        counters.rows.map((c) => [c.key, Number(c.points)]),
        [
          [limits.keys[1], 8],
          [limits.keys[0], 5],
        ],
      );
      assert.equal((await approvalRow(approvalId)).tokens_issued, 3);
      const issued = await handle.db
        .selectFrom("issued_tokens")
        .select("jti")
        .where("approval_id", "=", approvalId)
        .orderBy("jti")
        .execute();
      assert.deepEqual(
        issued.map((row) => row.jti),
        [0, 1, 2].map((i) => `${approvalId}-${i}`),
      );
      const audited = await handle.db
        .selectFrom("audit_events")
        .select(["event", "outcome", "actor", "detail"])
        .where("approval_id", "=", approvalId)
        .orderBy("id")
        .execute();
      assert.deepEqual(
        audited.map((row) => [row.event, row.outcome, row.actor, row.detail]),
        [0, 1, 2].map((i) => ["token_exchange", "granted", approval.client_id, { n: i }]),
      );
    });

    test("a failing call fails every request in it, and the next call starts clean", async () => {
      const approvalId = await insertApproval(handle.db, { max_tokens: 10 });
      const approval = await approvalRow(approvalId);
      const store = createIssuanceStore(handle.db, handle.pool);
      const request = (jti: string) => issueRequest(approval, jti);
      // The same token twice in one call violates issued_tokens' primary key (exp, jti): the whole call
      // rolls back. One request object, so both carry the same exp (two builds a millisecond apart don't).
      const duplicate = request(`${approvalId}-b`);
      const settled = await Promise.allSettled([
        store.issue(request(`${approvalId}-a`)),
        store.issue(duplicate),
        store.issue(duplicate),
      ]);
      assert.equal(settled[0]?.status, "fulfilled");
      assert.deepEqual(
        settled.slice(1).map((s) => s.status),
        ["rejected", "rejected"],
      );
      assert.equal((await approvalRow(approvalId)).tokens_issued, 1);
      const next = await store.issue(request(`${approvalId}-c`));
      assert.deepEqual(next, { ok: true, tokensIssued: 2 });
    });

    test("one agent's requests for several approvals share calls; two stores at once never deadlock", async () => {
      const approvalIds = await Promise.all(
        [1, 2, 3, 4].map(() => insertApproval(handle.db, { max_tokens: 30 })),
      );
      const approvals = await Promise.all(approvalIds.map(approvalRow));
      // Two stores stand in for two instances: their calls run at the same time on the same rows.
      const stores = [
        createIssuanceStore(handle.db, handle.pool),
        createIssuanceStore(handle.db, handle.pool),
      ];
      const limitsOf = (approval: Approval) => ({
        keys: [`client:multi-${approvalIds[0]}`, `approval:${approval.id}`] as const,
        durationsMs: [60_000, 60_000] as const,
        points: [1000, 1000] as const,
      });
      let seq = 0;
      const outcomes = await Promise.all(
        Array.from({ length: 160 }, (_, i) => {
          // Opposite orders in the two stores: A B C D … and D C B A …
          const store = stores[i % 2] as (typeof stores)[number];
          const approval = approvals[i % 2 === 0 ? (i >> 1) % 4 : 3 - ((i >> 1) % 4)] as Approval;
          seq += 1;
          // Without counters the approval rows are the first locks a call takes: the case a call's
          // lock order matters for.
          const limits = i % 3 === 0 ? limitsOf(approval) : undefined;
          return store.issue(issueRequest(approval, `${approvalIds[0]}-multi-${seq}`, {}, limits));
        }),
      );
      // 40 requests per approval, 30 tokens each: 120 issued, 40 refused, nothing failed.
      assert.equal(outcomes.filter((o) => o.ok).length, 120);
      assert.equal(outcomes.filter((o) => !o.ok && "refused" in o && o.refused === "used_up").length, 40);
      for (const id of approvalIds) {
        const row = await approvalRow(id);
        assert.equal(row.tokens_issued, 30);
        const { count } = await handle.db
          .selectFrom("issued_tokens")
          .select((eb) => eb.fn.countAll<string>().as("count"))
          .where("approval_id", "=", id)
          .executeTakeFirstOrThrow();
        assert.equal(Number(count), 30);
      }
    });

    test("more of an agent's requests waiting than allowed: the excess answer busy and write nothing", async () => {
      const approvalId = await insertApproval(handle.db, { max_tokens: 10 });
      const approval = await approvalRow(approvalId);
      const store = createIssuanceStore(handle.db, handle.pool, { maxWaitingPerAgent: 2 });
      // The first goes at once; two wait for the next call; the last two find the queue full.
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, (_, i) => store.issue(issueRequest(approval, `${approvalId}-busy-${i}`))),
      );
      assert.deepEqual(outcomes, [
        { ok: true, tokensIssued: 1 },
        { ok: true, tokensIssued: 2 },
        { ok: true, tokensIssued: 3 },
        { ok: false, busy: true },
        { ok: false, busy: true },
      ]);
      assert.equal((await approvalRow(approvalId)).tokens_issued, 3);
    });
  });
}
