import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { type AuthorizationResult, policyAst } from "../../../sts/src/policy/cedar_wasm.js";
import { contextMembersRead, createDecisionMemo } from "../../../sts/src/policy/decision_memo.js";
import type { CedarRequest } from "../../../sts/src/policy/entities.js";
import { DEFAULT_POLICY_FILE } from "../../../sts/src/policy/schema.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

const dir = mkdtempSync(path.join(tmpdir(), "countersign-caches-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function asts(...policies: string[]): unknown[] {
  return policies.map((text) => {
    const ast = policyAst(text);
    assert.ok(ast !== undefined, text);
    return ast;
  });
}

describe("what policies read of the context", () => {
  test('`.name`, `["name"]` and `has name` count; comments and string literals do not', () => {
    const reads = contextMembersRead(
      asts(
        `// context.approval_tokens_left is only mentioned here
        forbid (principal, action, resource) when { context.hour_utc < 8 && context["task"] == "context.now" };`,
        `forbid (principal, action, resource) when { context has actor && context.subject.issuer == "x" };`,
      ),
    );
    assert.notEqual(reads, "all");
    assert.deepEqual([...(reads as ReadonlySet<string>)].sort(), ["actor", "hour_utc", "subject", "task"]);
  });

  test("using `context` as a whole reads every member", () => {
    assert.equal(
      contextMembersRead(asts(`forbid (principal, action, resource) when { context == {"now": 1} };`)),
      "all",
    );
    assert.equal(
      contextMembersRead(asts(`forbid (principal, action, resource) when { [context].contains(context) };`)),
      "all",
    );
  });
});

describe("the decision memo", () => {
  const allow: AuthorizationResult = { type: "decision", decision: "allow", determining: ["p"], errors: [] };
  const request = (context: CedarRequest["context"], issuer = "https://id.example.test"): CedarRequest => ({
    principal: { type: "Agent", id: "a" },
    action: { type: "Action", id: "exchange" },
    resource: { type: "Resource", id: "r" },
    context,
    entities: [{ uid: { type: "Subject", id: "alice" }, attrs: { issuer }, parents: [] }],
  });

  test("a member no policy reads does not change the key; a read member, or an entity, does", () => {
    const memo = createDecisionMemo({ reads: new Set(["hour_utc"]) });
    let calls = 0;
    const decide = () => {
      calls += 1;
      return allow;
    };
    assert.equal(memo.decide(request({ hour_utc: 9, approval_tokens_left: 5 }), decide), allow);
    assert.equal(memo.decide(request({ hour_utc: 9, approval_tokens_left: 4 }), decide), allow);
    assert.equal(calls, 1);
    memo.decide(request({ hour_utc: 10, approval_tokens_left: 4 }), decide);
    assert.equal(calls, 2);
    memo.decide(request({ hour_utc: 10, approval_tokens_left: 4 }, "https://other.example.test"), decide);
    assert.equal(calls, 3);
    assert.equal(memo.size, 3);
  });

  test("answers with evaluation errors, and failures, are never remembered", () => {
    const memo = createDecisionMemo({ reads: "all" });
    let calls = 0;
    const failing = (): AuthorizationResult => {
      calls += 1;
      return {
        type: "decision",
        decision: "deny",
        determining: [],
        errors: [{ message: "overflow", help: null, spans: [], policyId: "p" }],
      };
    };
    memo.decide(request({ now: 1 }), failing);
    memo.decide(request({ now: 1 }), failing);
    memo.decide(request({ now: 1 }), () => {
      calls += 1;
      return { type: "failure", errors: [] };
    });
    assert.equal(calls, 3);
    assert.equal(memo.size, 0);
  });
});

for (const engine of testEngines()) {
  describe(`exchange caches on ${engine}`, () => {
    describe("with the default policy (approvals may be reused)", () => {
      let sts: TestApp;
      before(async () => {
        sts = await startTestApp({ engine });
      });
      after(() => sts.stop());

      const devToken = () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      /** An exchange for alice under `approvalId`. */
      const exchangeUnder = async (approvalId: string, params: Record<string, string> = {}) =>
        exchange(sts.url, {
          subject_token: await devToken(),
          authorization_details: agentTask(approvalId),
          ...params,
        });
      const issuedRows = async (approvalId: string) =>
        (
          await sts.handle.db
            .selectFrom("issued_tokens")
            .select(sts.handle.db.fn.countAll<string>().as("n"))
            .where("approval_id", "=", approvalId)
            .executeTakeFirstOrThrow()
        ).n;

      test("/metrics counts the exchanges written per database call", async () => {
        const sample = async () => {
          const text = await (await fetch(`${sts.url}/metrics`)).text();
          const value = (name: string) =>
            Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
          return {
            count: value("countersign_issue_batch_size_count"),
            sum: value("countersign_issue_batch_size_sum"),
          };
        };
        const before = await sample();
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 20 });
        const answers = await Promise.all(Array.from({ length: 6 }, async () => exchangeUnder(approvalId)));
        assert.deepEqual(
          answers.map((a) => a.status),
          [200, 200, 200, 200, 200, 200],
        );
        const after = await sample();
        assert.equal(after.sum - before.sum, 6); // every exchange written exactly once
        assert.ok(after.count - before.count >= 1 && after.count - before.count <= 6);
      });

      test("a revocation after the approval was read is honoured at the next exchange", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        const first = await exchangeUnder(approvalId);
        assert.equal(first.status, 200);
        await sts.handle.db
          .updateTable("approvals")
          .set({ status: "revoked", revoked_at: new Date() })
          .where("id", "=", approvalId)
          .execute();
        const second = await exchangeUnder(approvalId);
        assert.equal(second.status, 400);
        assert.deepEqual(second.body, {
          error: "invalid_grant",
          error_description: "the approval was revoked",
        });
        assert.equal(Number(await issuedRows(approvalId)), 1);
      });

      test("a budget used up by others after the read: invalid_grant, used up", async () => {
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 3 });
        const first = await exchangeUnder(approvalId);
        assert.equal(first.status, 200);
        await sts.handle.db
          .updateTable("approvals")
          .set({ tokens_issued: 3 })
          .where("id", "=", approvalId)
          .execute();
        const second = await exchangeUnder(approvalId);
        assert.equal(second.status, 400);
        assert.deepEqual(second.body, {
          error: "invalid_grant",
          error_description: "the approval's token budget is used up",
        });
      });

      test("terms changed under a cached read: no token on the old terms (503), then the new terms apply", async () => {
        const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read crm:write" });
        const first = await exchangeUnder(approvalId, { scope: "crm:write" });
        assert.equal(first.status, 200);
        // Approved terms never change through the API; a direct edit stands in for any future path.
        await sts.handle.db
          .updateTable("approvals")
          .set({ scope: "crm:read" })
          .where("id", "=", approvalId)
          .execute();
        const stale = await exchangeUnder(approvalId, { scope: "crm:write" });
        assert.equal(stale.status, 503);
        assert.deepEqual(stale.body, {
          error: "temporarily_unavailable",
          error_description: "the approval changed during the exchange, retry",
        });
        const fresh = await exchangeUnder(approvalId, { scope: "crm:write" });
        assert.equal(fresh.status, 400);
        assert.deepEqual(fresh.body, {
          error: "invalid_scope",
          error_description: "scope not within the approval: crm:write",
        });
        const row = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.equal(row.tokens_issued, 1);
        assert.equal(Number(await issuedRows(approvalId)), 1);
        const reasons = await sql<{ reason: string | null }>`
          select reason from audit_events where approval_id = ${approvalId} order by id`.execute(
          sts.handle.db,
        );
        assert.deepEqual(
          reasons.rows.map((r) => r.reason),
          [null, "approval_changed", "scope_not_approved"],
        );
      });
    });

    describe("with a policy that reads the live budget", () => {
      let sts: TestApp;
      before(async () => {
        const file = path.join(dir, `budget-${engine}.cedar`);
        writeFileSync(
          file,
          `@id("keep-one-back")
@reason("the last token of a budget is kept for a human")
forbid (principal, action == Action::"exchange", resource) when { context.approval_tokens_left <= 1 };
`,
        );
        sts = await startTestApp({
          engine,
          config: { ...baseConfig(), policies: [DEFAULT_POLICY_FILE, file] },
        });
      });
      after(() => sts.stop());

      test("every exchange decides on the budget as it stands", async () => {
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 3 });
        const statuses: number[] = [];
        let last: Record<string, unknown> = {};
        for (let i = 0; i < 3; i++) {
          const answer = await exchange(sts.url, {
            subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
            authorization_details: agentTask(approvalId),
          });
          statuses.push(answer.status);
          last = answer.body;
        }
        assert.deepEqual(statuses, [200, 200, 400]);
        assert.deepEqual(last, {
          error: "invalid_grant",
          error_description:
            "forbidden by policy keep-one-back: the last token of a budget is kept for a human",
        });
      });
    });
  });
}
