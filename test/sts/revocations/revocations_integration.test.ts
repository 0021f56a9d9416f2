import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { sql } from "kysely";
import { createVerifier } from "../../../gateway-verifier/src/index.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";
import { allowAllPolicy, openStream, position, revokeViaApi } from "./support.js";

const onPostgres = { skip: !process.env.DATABASE_URL && "DATABASE_URL not set" };
const TRIALS = 20;

/** Two instances on one Postgres behind one issuer name, as behind a load balancer. */
async function twoInstances(
  run: (a: TestApp, b: TestApp) => Promise<void>,
  revocations: Record<string, unknown> = {},
): Promise<void> {
  const database: TestDatabase = await createTestDatabase("postgres");
  const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-revocations-"));
  try {
    const config = {
      ...baseConfig(),
      issuer: "http://127.0.0.1:8080",
      // The safety-net re-read is slowed right down: only LISTEN/NOTIFY can make these tests pass.
      revocations: { poll_interval_seconds: 600, sweep_interval_seconds: 600, ...revocations },
    };
    const appOptions = { exchangeGuards: { policy: allowAllPolicy } };
    const [a, b] = await Promise.all([
      startTestApp({ engine: "postgres", database, dataDir, config, appOptions }),
      startTestApp({ engine: "postgres", database, dataDir, config, appOptions }),
    ]);
    try {
      await run(a, b);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  } finally {
    await database.dispose();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

describe("on real Postgres, two instances", () => {
  test("a revocation on instance A refuses the next exchange on instance B", onPostgres, async () => {
    await twoInstances(async (a, b) => {
      const subject_token = await a.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const approvalId = await insertApproval(a.handle.db, { max_tokens: 100 });
      const before = await exchange(b.url, { subject_token, authorization_details: agentTask(approvalId) });
      assert.equal(before.status, 200, JSON.stringify(before.body));
      assert.equal(await revokeViaApi(a, approvalId), 200);
      const after = await exchange(b.url, { subject_token, authorization_details: agentTask(approvalId) });
      assert.equal(after.status, 400);
      assert.equal(after.body.error, "invalid_grant");
      assert.equal(after.body.error_description, "the approval was revoked");
      assert.equal(after.body.access_token, undefined);
    });
  });

  test(
    `SSE: each of ${TRIALS} revocations on A reaches a subscriber on B, once each, in cursor order`,
    onPostgres,
    async () => {
      await twoInstances(async (a, b) => {
        const stream = await openStream(`${b.url}/revocations/stream`);
        assert.equal(stream.status, 200);
        const revoked: string[] = [];
        try {
          for (let trial = 0; trial < TRIALS; trial++) {
            const approvalId = await insertApproval(a.handle.db);
            assert.equal(await revokeViaApi(a, approvalId), 200);
            revoked.push(approvalId);
            // B re-reads the feed only when NOTIFY wakes it (its periodic re-read is 10 minutes away):
            // the wait bounds the test's run, it is not a latency bound.
            const event = await stream.next((e) => e.data.approval_id === approvalId, 10_000);
            assert.equal(event.data.reason, "revoked");
          }
        } finally {
          stream.close();
        }
        assert.deepEqual(
          stream.events.map((e) => e.data.approval_id),
          revoked,
        );
        const cursors = stream.events.map((e) => position(e.id ?? "0"));
        for (let i = 1; i < cursors.length; i++) assert.ok(cursors[i]! > cursors[i - 1]!);
      });
    },
  );

  test(
    `a gateway verifier following B's stream refuses each of ${TRIALS} tokens once A revokes its approval`,
    onPostgres,
    async () => {
      await twoInstances(async (a, b) => {
        const verifier = createVerifier({
          issuer: "http://127.0.0.1:8080",
          audience: "https://crm.example.test",
          jwksUri: `${a.url}/jwks`,
          rateLimit: false,
          // Polling every 10 minutes: within these tests only the stream can make the verifier refuse.
          revocation: { url: `${b.url}/revocations`, stream: true, intervalMs: 600_000 },
        });
        try {
          await verifier.ready?.();
          const subject_token = await a.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
          for (let trial = 0; trial < TRIALS; trial++) {
            const approvalId = await insertApproval(a.handle.db, { scope: "crm:read" });
            const issued = await exchange(trial % 2 === 0 ? a.url : b.url, {
              subject_token,
              scope: "crm:read",
              authorization_details: agentTask(approvalId),
            });
            assert.equal(issued.status, 200, JSON.stringify(issued.body));
            const request = {
              authorization: `Bearer ${String(issued.body.access_token)}`,
              method: "GET",
              url: "https://crm.example.test/contacts",
              requiredScopes: ["crm:read"],
            };
            const ok = await verifier.verify(request);
            assert.equal(ok.ok, true, JSON.stringify(ok));
            assert.equal(await revokeViaApi(a, approvalId), 200);
            // Bounded wait for the pushed revocation (bounds the run; not a latency bound).
            let refused: Awaited<ReturnType<typeof verifier.verify>> | undefined;
            for (let i = 0; i < 1000 && refused === undefined; i++) {
              const result = await verifier.verify(request);
              if (!result.ok) refused = result;
              else await new Promise((resolve) => setTimeout(resolve, 10));
            }
            assert.ok(
              refused !== undefined && !refused.ok,
              "the verifier never refused the revoked approval",
            );
            assert.equal(refused.status, 401);
            assert.equal(refused.reason, "approval_revoked");
          }
        } finally {
          verifier.close();
        }
      });
    },
  );

  test("an expiry swept on A reaches a subscriber on B", onPostgres, async () => {
    await twoInstances(async (a, b) => {
      const stream = await openStream(`${b.url}/revocations/stream`);
      try {
        // Each instance sweeps once as it starts, without being awaited; once a sweep of each has run
        // after start, only A's explicit sweep below can write the expiry (the timers wait 600 s).
        await Promise.all([a.app.revocations.sweep(), b.app.revocations.sweep()]);
        const approvalId = await insertApproval(a.handle.db, { ttl_seconds: -1, tokens_issued: 1 });
        assert.deepEqual((await a.app.revocations.sweep()).expired, [approvalId]);
        const event = await stream.next((e) => e.data.approval_id === approvalId, 2000);
        assert.equal(event.data.reason, "expired");
      } finally {
        stream.close();
      }
    });
  });

  test(
    "the LISTEN connection comes back after being killed, and streams resume delivery",
    onPostgres,
    async () => {
      await twoInstances(async (a, b) => {
        const stream = await openStream(`${b.url}/revocations/stream`);
        try {
          const listeners = sql<{
            n: number;
          }>`select count(*)::int as n from pg_stat_activity
           where application_name = 'countersign-listen' and datname = current_database()`;
          // Each instance opens its LISTEN connection in the background after its start: a bounded wait
          // for both (bounds the run, 10 s; a loaded machine may take longer than the 2 s this was).
          let connected = 0;
          for (let i = 0; i < 500 && connected < 2; i++) {
            connected = (await listeners.execute(b.handle.db)).rows[0]?.n ?? 0;
            if (connected < 2) await new Promise((resolve) => setTimeout(resolve, 20));
          }
          assert.equal(connected, 2);
          const killed = await sql<{ n: number }>`select count(pg_terminate_backend(pid))::int as n
          from pg_stat_activity
          where application_name = 'countersign-listen' and datname = current_database()`.execute(
            b.handle.db,
          );
          assert.equal(killed.rows[0]?.n, 2);
          const approvalId = await insertApproval(a.handle.db);
          assert.equal(await revokeViaApi(a, approvalId), 200);
          // Reconnection (backoff from 250 ms) re-reads the feed, so the event still arrives.
          const event = await stream.next((e) => e.data.approval_id === approvalId, 5000);
          assert.equal(event.data.reason, "revoked");
        } finally {
          stream.close();
        }
      });
    },
  );
});
