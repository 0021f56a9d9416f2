import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { sql } from "kysely";
import * as oauth from "openid-client";
import { baseConfig, startTestApp, TEST_SECRET } from "../../helpers/app.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";
import {
  ACCESS_TOKEN_TYPE,
  agentTask,
  exchange,
  insertApproval,
  JWT_TOKEN_TYPE,
  TOKEN_EXCHANGE,
} from "../../helpers/exchange.js";
import { startTcpProxy } from "../../helpers/tcp_proxy.js";

const onPostgres = { skip: !process.env.DATABASE_URL && "DATABASE_URL not set" };

for (const engine of testEngines()) {
  test(`openid-client v6, unmodified, drives the exchange (${engine})`, async () => {
    const sts = await startTestApp({ engine });
    try {
      const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read" });
      const config = await oauth.discovery(
        new URL(sts.url),
        "billing-agent",
        undefined,
        oauth.ClientSecretBasic(TEST_SECRET),
        {
          execute: [oauth.allowInsecureRequests],
        },
      );
      assert.equal(config.serverMetadata().token_endpoint, `${sts.url}/token`);
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const response = await oauth.genericGrantRequest(config, TOKEN_EXCHANGE, {
        subject_token: subjectToken,
        subject_token_type: JWT_TOKEN_TYPE,
        resource: "https://crm.example.test",
        scope: "crm:read",
        authorization_details: agentTask(approvalId),
      });
      assert.equal(response.token_type, "bearer");
      assert.equal(response.issued_token_type, ACCESS_TOKEN_TYPE);
      assert.equal(response.scope, "crm:read");
      const { payload } = await jwtVerify(
        response.access_token,
        createRemoteJWKSet(new URL(`${sts.url}/jwks`)),
        {
          issuer: sts.url,
          audience: "https://crm.example.test",
          typ: "at+jwt",
        },
      );
      assert.equal(payload.approval_id, approvalId);
      assert.equal(payload.sub, "alice");

      // A refusal surfaces as openid-client's ResponseBodyError with the OAuth error.
      await assert.rejects(
        oauth.genericGrantRequest(config, TOKEN_EXCHANGE, {
          subject_token: subjectToken,
          subject_token_type: JWT_TOKEN_TYPE,
          resource: "https://crm.example.test",
          scope: "crm:write",
          authorization_details: agentTask(approvalId),
        }),
        (error: { error?: string; status?: number }) =>
          error.error === "invalid_scope" && error.status === 400,
      );
    } finally {
      await sts.stop();
    }
  });
}

describe("on real Postgres", () => {
  test("two instances, max_tokens 5, 50 concurrent exchanges: exactly 5 tokens", onPostgres, async () => {
    const database = await createTestDatabase("postgres");
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-race-"));
    try {
      // Two instances behind one issuer name, as behind a load balancer.
      const config = { ...baseConfig(), issuer: "http://127.0.0.1:8080" };
      const [a, b] = await Promise.all([
        startTestApp({ engine: "postgres", database, dataDir, config }),
        startTestApp({ engine: "postgres", database, dataDir, config }),
      ]);
      try {
        const approvalId = await insertApproval(a.handle.db, { max_tokens: 5 });
        const subject_token = await a.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            exchange(i % 2 === 0 ? a.url : b.url, {
              subject_token,
              authorization_details: agentTask(approvalId),
            }),
          ),
        );
        const ok = results.filter((r) => r.status === 200);
        const refused = results.filter((r) => r.status === 400 && r.body.error === "invalid_grant");
        assert.equal(ok.length, 5);
        assert.equal(refused.length, 45);
        for (const r of refused)
          assert.equal(r.body.error_description, "the approval's token budget is used up");
        const approval = await a.handle.db
          .selectFrom("approvals")
          .select(["tokens_issued", "max_tokens"])
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.deepEqual(approval, { tokens_issued: 5, max_tokens: 5 });
        const rows = await sql<{
          n: number;
        }>`select count(*)::int as n from issued_tokens where approval_id = ${approvalId}`.execute(
          a.handle.db,
        );
        assert.equal(rows.rows[0]?.n, 5);
        const jtis = new Set(
          ok.map(
            (r) =>
              JSON.parse(Buffer.from(String(r.body.access_token).split(".")[1]!, "base64url").toString()).jti,
          ),
        );
        assert.equal(jtis.size, 5);
      } finally {
        await Promise.all([a.stop(), b.stop()]);
      }
    } finally {
      await database.dispose();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test(
    "Postgres down mid-test: 503 temporarily_unavailable, then success again without a restart",
    onPostgres,
    async () => {
      const database: TestDatabase = await createTestDatabase("postgres");
      const target = new URL(database.url!);
      const proxy = await startTcpProxy(target.hostname, Number(target.port));
      const viaProxy = new URL(database.url!);
      viaProxy.port = String(proxy.port);
      const proxied: TestDatabase = {
        ...database,
        url: viaProxy.toString(),
        open: async () => {
          const { openDatabase } = await import("../../../sts/src/db/connect.js");
          return openDatabase({ url: viaProxy.toString(), dataDir: "memory://", connectTimeoutMs: 1000 });
        },
      };
      const sts = await startTestApp({ engine: "postgres", database: proxied });
      try {
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 100 });
        const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const before = await exchange(sts.url, {
          subject_token,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(before.status, 200);

        await proxy.cut();
        for (let i = 0; i < 5; i++) {
          const during = await exchange(sts.url, {
            subject_token,
            authorization_details: agentTask(approvalId),
          });
          assert.equal(during.status, 503, JSON.stringify(during.body));
          assert.equal(during.body.error, "temporarily_unavailable");
          assert.equal(during.body.access_token, undefined);
          assert.doesNotMatch(JSON.stringify(during.body), /stack|at .*\.ts/);
        }
        const ready = await fetch(`${sts.url}/readyz`);
        assert.equal(ready.status, 503);

        await proxy.restore();
        let after: Awaited<ReturnType<typeof exchange>> | undefined;
        for (let attempt = 0; attempt < 20; attempt++) {
          after = await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) });
          if (after.status === 200) break;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        assert.equal(after?.status, 200, JSON.stringify(after?.body));
        const approval = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        const rows = await sql<{
          n: number;
        }>`select count(*)::int as n from issued_tokens where approval_id = ${approvalId}`.execute(
          sts.handle.db,
        );
        assert.equal(approval.tokens_issued, rows.rows[0]?.n);
        assert.equal(approval.tokens_issued, 2);
      } finally {
        await sts.stop({ keepDatabase: true });
        await proxy.close();
        await database.dispose();
      }
    },
  );
});
