import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { countRecentExchanges } from "../../../sts/src/db/exchange_counters.js";
import type { RetentionTimers } from "../../../sts/src/ops/retention.js";
import { DEFAULT_POLICY_FILE } from "../../../sts/src/policy/schema.js";
import { baseConfig, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";
import { captureStatements, readsOf } from "../../helpers/statements.js";

const dir = mkdtempSync(path.join(tmpdir(), "countersign-exchange-rate-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const RATE_POLICY = path.join(dir, "exchange_rate.cedar");
writeFileSync(
  RATE_POLICY,
  `@id("agent-exchange-rate")
@reason("more than 5 tokens in the last minute")
forbid (principal is Agent, action == Action::"exchange", resource)
when { context.recent_exchanges_per_minute > 5 };
`,
);

/** Retention timers that never fire: the app's retention loop makes no run while the tests capture statements. */
const HELD_TIMERS: RetentionTimers = { setTimeout: () => undefined, clearTimeout: () => {} };

const AGENTS = ["rate-agent", "count-agent", "plan-agent"] as const;

function rateConfig(): Record<string, unknown> {
  const config = baseConfig();
  return {
    ...config,
    clients: [
      ...(config.clients as unknown[]),
      ...AGENTS.map((client_id) => ({
        client_id,
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_basic",
      })),
    ],
    policies: [DEFAULT_POLICY_FILE, RATE_POLICY],
  };
}

/** The `iat` of an access token (its payload, decoded without verifying: the test minted it). */
function iatOf(token: unknown): number {
  assert.equal(typeof token, "string");
  const payload = JSON.parse(
    Buffer.from((token as string).split(".")[1] ?? "", "base64url").toString("utf8"),
  );
  assert.equal(typeof payload.iat, "number");
  return payload.iat as number;
}

for (const engine of testEngines()) {
  describe(`recent_exchanges_per_minute on ${engine}`, () => {
    let sts: TestApp;
    before(async () => {
      // The app's retention job is held (its timers never fire): its deletes read `issued_tokens` and
      // the counters, and a run overlapping the captured exchanges would be counted as theirs.
      sts = await startTestApp({
        engine,
        config: rateConfig(),
        appOptions: { retentionTimers: HELD_TIMERS },
      });
    });
    after(() => sts.stop());

    const subjectToken = () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
    const exchangeAs = async (agent: string, approvalId: string) =>
      exchange(
        sts.url,
        {
          subject_token: await subjectToken(),
          scope: "crm:read",
          authorization_details: agentTask(approvalId),
        },
        { id: agent, secret: TEST_SECRET },
      );

    test("after N exchanges the value is N: per-(agent, iat second) counters, summed over iat > now - 60 s exactly", async () => {
      const agent = "count-agent";
      const approvals = await Promise.all(
        [1, 2].map(() => insertApproval(sts.handle.db, { client_id: agent, max_tokens: 20 })),
      );
      // Five at once (written together in one call) under two approvals: the policy allows up to 5.
      const answers = await Promise.all(
        [0, 1, 2, 3, 4].map((i) => exchangeAs(agent, approvals[i % 2] as string)),
      );
      for (const answer of answers) assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const iats = answers.map((answer) => iatOf(answer.body.access_token));

      const rows = await sts.handle.db
        .selectFrom("exchange_counters")
        .select(["iat_second", "exchanges"])
        .where("client_id", "=", agent)
        .orderBy("iat_second")
        .execute();
      const perSecond = new Map<number, number>();
      for (const iat of iats) perSecond.set(iat, (perSecond.get(iat) ?? 0) + 1);
      assert.deepEqual(
        rows.map((row) => [Number(row.iat_second), row.exchanges]),
        [...perSecond].sort(([a], [b]) => a - b),
      );

      const first = Math.min(...iats);
      const last = Math.max(...iats);
      const expected = (nowMs: number) => iats.filter((iat) => iat * 1000 > nowMs - 60_000).length;
      for (const nowMs of [
        last * 1000,
        last * 1000 + 999,
        first * 1000 + 59_999, // every token: iat > now - 60 s holds for iat = first
        first * 1000 + 60_000, // the tokens of the first second have just left
        last * 1000 + 59_999,
        last * 1000 + 60_000, // none
      ]) {
        assert.equal(
          await countRecentExchanges(sts.handle.db, agent, new Date(nowMs)),
          expected(nowMs),
          `at ${nowMs}`,
        );
      }
      assert.equal(await countRecentExchanges(sts.handle.db, agent, new Date(last * 1000)), 5);
      assert.equal(await countRecentExchanges(sts.handle.db, agent, new Date(last * 1000 + 60_000)), 0);
      assert.equal(await countRecentExchanges(sts.handle.db, "rate-agent", new Date(last * 1000)), 0);
    });

    test("the policy sees the agent's count: six exchanges pass (the sixth sees 5), the seventh (seeing 6) is refused; no statement on the way reads issued_tokens", async () => {
      const agent = "rate-agent";
      const approvalId = await insertApproval(sts.handle.db, { client_id: agent, max_tokens: 20 });
      const statuses: number[] = [];
      const statements = await captureStatements(sts.handle, async () => {
        for (let i = 1; i <= 7; i++) statuses.push((await exchangeAs(agent, approvalId)).status);
      });
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 400]);
      const budget = await sts.handle.db
        .selectFrom("approvals")
        .select("tokens_issued")
        .where("id", "=", approvalId)
        .executeTakeFirstOrThrow();
      assert.equal(budget.tokens_issued, 6);
      assert.deepEqual(readsOf(statements, "issued_tokens"), []);
      // One read of the counters per exchange (the policy asks before each decision), for this agent.
      const counterReads = readsOf(statements, "exchange_counters");
      assert.equal(counterReads.length, 7);
      for (const read of counterReads) assert.ok(read.values.includes(agent), read.text);
      // The write keeps no count over issued_tokens either.
      const { rows } = await sts.handle.db.executeQuery<{ body: string }>({
        sql: "select pg_get_functiondef('countersign_issue'::regproc) as body",
        parameters: [],
        query: { kind: "RawNode" } as never,
        queryId: { queryId: "functiondef" },
      });
      const body = rows[0]?.body ?? "";
      assert.match(body, /insert into exchange_counters/);
      assert.doesNotMatch(body, /\b(from|join)\s+issued_tokens\b/i);
    });
  });
}
