import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, mock, test } from "node:test";
import pg from "pg";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import {
  createIssuanceLimiter,
  retryAfterSeconds,
  windowOf,
} from "../../../sts/src/limits/issuance_limiter.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { createTestDatabase, type TestEngine, testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";
import { allowAllPolicy } from "../revocations/support.js";

const onPostgres = { skip: !process.env.DATABASE_URL && "DATABASE_URL not set" };

/** Slow refill (one point per 100 s) so a test's burst cannot refill while it runs. */
function limits(perClient: number, perApproval: number): Record<string, unknown> {
  return {
    issuance_limits: {
      per_client: { per_second: perClient / 100, burst: perClient },
      per_approval: { per_second: perApproval / 100, burst: perApproval },
    },
  };
}

/** The base config plus a second client_secret_basic agent. */
function withTriageAgent(): Record<string, unknown> {
  const config = baseConfig();
  const clients = config.clients as Array<Record<string, unknown>>;
  return {
    ...config,
    clients: [
      ...clients,
      {
        client_id: "triage-agent",
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
  };
}

function start(engine: TestEngine, extra: Record<string, unknown>): Promise<TestApp> {
  return startTestApp({
    engine,
    config: { ...withTriageAgent(), ...extra },
    appOptions: { exchangeGuards: { policy: allowAllPolicy } },
  });
}

function assertSlowDown(result: Awaited<ReturnType<typeof exchange>>): void {
  assert.equal(result.status, 429, JSON.stringify(result.body));
  assert.equal(result.body.error, "slow_down");
  assert.equal(result.body.error_description, "too many token requests; retry after the indicated delay");
  assert.equal(result.body.access_token, undefined);
  const retryAfter = result.headers.get("retry-after") ?? "";
  assert.match(retryAfter, /^[1-9][0-9]*$/);
  assert.ok(Number(retryAfter) <= 100, retryAfter);
}

describe("window mapping", () => {
  test("a bucket of burst B at R per second is B points per B/R seconds", () => {
    assert.deepEqual(windowOf({ per_second: 50, burst: 100 }), { points: 100, duration: 2 });
    assert.deepEqual(windowOf({ per_second: 0.5, burst: 1 }), { points: 1, duration: 2 });
  });
  test("Retry-After is whole seconds, at least 1", () => {
    assert.equal(retryAfterSeconds(0), 1);
    assert.equal(retryAfterSeconds(1), 1);
    assert.equal(retryAfterSeconds(1000), 1);
    assert.equal(retryAfterSeconds(1001), 2);
    assert.equal(retryAfterSeconds(99_500), 100);
  });
});

for (const engine of testEngines()) {
  describe(`issuance limits (${engine})`, () => {
    test("per approval: burst 3 admits exactly 3, the 4th is 429 slow_down with Retry-After", async () => {
      const sts = await start(engine, limits(1000, 3));
      try {
        const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 100 });
        const results = [];
        for (let i = 0; i < 4; i++) {
          results.push(
            await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) }),
          );
        }
        assert.deepEqual(
          results.map((r) => r.status),
          [200, 200, 200, 429],
        );
        assertSlowDown(results[3]!);
        // Another approval of the same agent has its own bucket (and the refusal cost the agent nothing).
        const other = await insertApproval(sts.handle.db, { max_tokens: 100 });
        const next = await exchange(sts.url, { subject_token, authorization_details: agentTask(other) });
        assert.equal(next.status, 200, JSON.stringify(next.body));
        const { tokens_issued } = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.equal(tokens_issued, 3);
        assert.equal(sts.app.services.config.issuance_limits.per_approval.burst, 3);
      } finally {
        await sts.stop();
      }
    });

    test("per agent: burst 3 across three approvals admits exactly 3; another agent is unaffected", async () => {
      const sts = await start(engine, limits(3, 1000));
      try {
        const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const results = [];
        for (let i = 0; i < 4; i++) {
          const approvalId = await insertApproval(sts.handle.db);
          results.push(
            await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) }),
          );
        }
        assert.deepEqual(
          results.map((r) => r.status),
          [200, 200, 200, 429],
        );
        assertSlowDown(results[3]!);

        const triageApproval = await insertApproval(sts.handle.db, { client_id: "triage-agent" });
        const other = await exchange(
          sts.url,
          { subject_token, authorization_details: agentTask(triageApproval) },
          { id: "triage-agent", secret: TEST_SECRET },
        );
        assert.equal(other.status, 200, JSON.stringify(other.body));
      } finally {
        await sts.stop();
      }
    });

    test("the defaults are generous and documented in the config", async () => {
      const sts = await start(engine, {});
      try {
        assert.deepEqual(sts.config.issuance_limits, {
          per_client: { per_second: 100, burst: 200 },
          per_approval: { per_second: 50, burst: 100 },
          client_credentials: { per_second: 10, burst: 20 },
        });
      } finally {
        await sts.stop();
      }
    });

    test("client_credentials: burst 3 admits exactly 3 per agent, the 4th is 429 slow_down with Retry-After", async () => {
      const sts = await start(engine, {
        issuance_limits: { client_credentials: { per_second: 0.03, burst: 3 } },
      });
      const clientCredentials = (clientId: string, secret = TEST_SECRET) =>
        postForm(
          `${sts.url}/token`,
          { grant_type: "client_credentials", scope: "approvals:request" },
          { authorization: basicAuth(clientId, secret) },
        );
      try {
        // Failed client authentication spends nothing: nobody but the agent can empty its bucket.
        for (let i = 0; i < 5; i++) {
          const forged = await clientCredentials("billing-agent", `${TEST_SECRET}-wrong`);
          assert.equal(forged.status, 401, JSON.stringify(forged.body));
          assert.equal(forged.body.error, "invalid_client");
        }
        const results = [];
        for (let i = 0; i < 4; i++) results.push(await clientCredentials("billing-agent"));
        assert.deepEqual(
          results.map((r) => r.status),
          [200, 200, 200, 429],
        );
        for (const granted of results.slice(0, 3)) assert.equal(typeof granted.body.access_token, "string");
        assertSlowDown(results[3]!);
        const refusals = sts.logs.lines
          .map((line) => JSON.parse(line) as Record<string, unknown>)
          .filter((line) => line.msg === "client_credentials refused");
        assert.deepEqual(
          refusals.map((line) => [line.client_id, line.reason, line.error]),
          [["billing-agent", "rate_limited", "slow_down"]],
        );
        // Another agent has its own bucket.
        const other = await clientCredentials("triage-agent");
        assert.equal(other.status, 200, JSON.stringify(other.body));
      } finally {
        await sts.stop();
      }
    });
  });
}

describe("on real Postgres", () => {
  for (const bucket of ["per_approval", "per_client"] as const) {
    test(
      `two instances, ${bucket} burst 5, 20 concurrent exchanges: exactly 5 pass, 15 get 429 with Retry-After`,
      onPostgres,
      async () => {
        const database = await createTestDatabase("postgres");
        const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-limits-"));
        try {
          const config = {
            ...baseConfig(),
            issuer: "http://127.0.0.1:8080",
            ...(bucket === "per_approval" ? limits(1000, 5) : limits(5, 1000)),
          };
          const appOptions = { exchangeGuards: { policy: allowAllPolicy } };
          const [a, b] = await Promise.all([
            startTestApp({ engine: "postgres", database, dataDir, config, appOptions }),
            startTestApp({ engine: "postgres", database, dataDir, config, appOptions }),
          ]);
          try {
            const subject_token = await a.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
            const shared = await insertApproval(a.handle.db, { max_tokens: 1000 });
            const approvals =
              bucket === "per_approval"
                ? Array.from({ length: 20 }, () => shared)
                : await Promise.all(Array.from({ length: 20 }, () => insertApproval(a.handle.db)));
            const results = await Promise.all(
              approvals.map((approvalId, i) =>
                exchange(i % 2 === 0 ? a.url : b.url, {
                  subject_token,
                  authorization_details: agentTask(approvalId),
                }),
              ),
            );
            const ok = results.filter((r) => r.status === 200);
            const limited = results.filter((r) => r.status === 429);
            assert.equal(ok.length, 5, JSON.stringify(results.map((r) => r.body.error ?? r.status)));
            assert.equal(limited.length, 15);
            for (const r of limited) assertSlowDown(r);
            // The 21st, on either instance, is refused too: the state is shared.
            for (const url of [a.url, b.url]) {
              const again = await exchange(url, {
                subject_token,
                authorization_details: agentTask(
                  bucket === "per_approval" ? shared : await insertApproval(a.handle.db),
                ),
              });
              assertSlowDown(again);
            }
          } finally {
            await Promise.all([a.stop(), b.stop()]);
          }
        } finally {
          await database.dispose();
          rmSync(dataDir, { recursive: true, force: true });
        }
      },
    );
  }

  test("an unreachable limiter store fails closed with 503 temporarily_unavailable", async () => {
    const pool = new pg.Pool({ host: "127.0.0.1", port: 1, connectionTimeoutMillis: 500 });
    pool.on("error", () => {});
    const limiter = createIssuanceLimiter({
      perClient: { per_second: 1, burst: 1 },
      perApproval: { per_second: 1, burst: 1 },
      pool,
    });
    try {
      await assert.rejects(limiter.consume("billing-agent", "apr_x"), (error: Record<string, unknown>) => {
        assert.equal(error.status, 503);
        assert.equal(error.error, "temporarily_unavailable");
        assert.equal(error.reason, "database_unavailable");
        return true;
      });
    } finally {
      await pool.end();
    }
  });

  test("the limiter starts no timer of its own: ended counters are the retention job's to delete", async () => {
    mock.timers.enable({ apis: ["setInterval", "setTimeout"] });
    const pool = new pg.Pool({ host: "127.0.0.1", port: 1, connectionTimeoutMillis: 500 });
    pool.on("error", () => {});
    const query = mock.method(pool, "query");
    try {
      createIssuanceLimiter({
        perClient: { per_second: 1, burst: 1 },
        perApproval: { per_second: 1, burst: 1 },
        pool,
      });
      mock.timers.tick(3_600_000);
      assert.equal(query.mock.callCount(), 0);
    } finally {
      mock.timers.reset();
      query.mock.restore();
      await pool.end();
    }
  });

  test(
    "consume on its own (outside an exchange): admits the burst, refuses the next, gives the agent's point back",
    onPostgres,
    async () => {
      const database = await createTestDatabase("postgres");
      const handle = await database.open();
      try {
        await migrateToLatest(handle.db);
        const limiter = createIssuanceLimiter({
          perClient: { per_second: 1, burst: 10 },
          perApproval: { per_second: 1, burst: 2 },
          pool: handle.pool,
        });
        const outcomes = [];
        for (let i = 0; i < 3; i++) outcomes.push(await limiter.consume("agent-a", "apr-1"));
        assert.deepEqual(outcomes.slice(0, 2), [{ allowed: true }, { allowed: true }]);
        const refused = outcomes[2];
        assert.ok(refused && !refused.allowed);
        assert.ok(
          refused.retryAfterSeconds >= 1 && refused.retryAfterSeconds <= 2,
          String(refused.retryAfterSeconds),
        );
        const { rows } = await (handle.pool as pg.Pool).query<{ key: string; points: string }>(
          "select key, points from issuance_rate_limits order by key",
        );
        assert.deepEqual(
          rows.map((row) => [row.key, Number(row.points)]),
          [
            ["approval:apr-1", 3],
            ["client:agent-a", 2],
          ],
        );
      } finally {
        await handle.close();
        await database.dispose();
      }
    },
  );
});
