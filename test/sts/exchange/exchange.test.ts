import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createLocalJWKSet, decodeJwt, generateKeyPair, type JSONWebKeySet, jwtVerify, SignJWT } from "jose";
import type { ExchangeGuards } from "../../../sts/src/exchange/guards.js";
import { baseConfig, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import {
  ACCESS_TOKEN_TYPE,
  agentTask,
  exchange,
  insertApproval,
  JWT_TOKEN_TYPE,
} from "../../helpers/exchange.js";

const CRM = "https://crm.example.test";

for (const engine of testEngines()) {
  describe(`token exchange on ${engine}`, () => {
    let sts: TestApp;
    let forbidAll = false;
    let limited = false;
    const guards: ExchangeGuards = {
      policy: {
        authorizeExchange: async () =>
          forbidAll
            ? { allowed: false, policyId: "test-forbid", reason: "the test forbids it" }
            : { allowed: true },
      },
      limiter: {
        consume: async () => (limited ? { allowed: false, retryAfterSeconds: 3 } : { allowed: true }),
      },
    };

    before(async () => {
      sts = await startTestApp({ engine, appOptions: { exchangeGuards: guards } });
    });
    after(() => sts.stop());

    const devToken = (sub: string, usage: "subject" | "actor" | "approver" = "subject") =>
      sts.app.services.devIssuer!.mint({ sub, usage });

    async function jwks() {
      const response = await fetch(`${sts.url}/jwks`);
      return createLocalJWKSet((await response.json()) as JSONWebKeySet);
    }

    test("discovery advertises the token exchange grant", async () => {
      const metadata = (await (await fetch(`${sts.url}/.well-known/oauth-authorization-server`)).json()) as {
        grant_types_supported: string[];
      };
      assert.deepEqual(metadata.grant_types_supported.sort(), [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",
      ]);
    });

    test("success: an RFC 9068 JWT with exactly the contract's claims", async () => {
      const approvalId = await insertApproval(sts.handle.db, {
        scope: "crm:read crm:write",
        max_tokens: 3,
        rate_limit: { per_second: 2, burst: 20 },
        task: "reconcile the March invoices",
      });
      const subjectToken = await devToken("alice");
      const actorToken = await devToken("planner-bot", "actor");
      const { status, body, headers } = await exchange(sts.url, {
        subject_token: subjectToken,
        actor_token: actorToken,
        actor_token_type: JWT_TOKEN_TYPE,
        scope: "crm:read",
        authorization_details: agentTask(approvalId),
      });
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(headers.get("cache-control"), "no-store");
      assert.deepEqual(Object.keys(body).sort(), [
        "access_token",
        "expires_in",
        "issued_token_type",
        "scope",
        "token_type",
      ]);
      assert.equal(body.issued_token_type, ACCESS_TOKEN_TYPE);
      assert.equal(body.token_type, "Bearer");
      assert.equal(body.scope, "crm:read");
      assert.equal(body.expires_in, 300);

      const { payload, protectedHeader } = await jwtVerify(body.access_token as string, await jwks(), {
        issuer: sts.url,
        audience: CRM,
        typ: "at+jwt",
        algorithms: ["ES256"],
      });
      assert.equal(protectedHeader.alg, "ES256");
      assert.equal(typeof protectedHeader.kid, "string");
      assert.deepEqual(Object.keys(payload).sort(), [
        "act",
        "approval_id",
        "aud",
        "authorization_details",
        "client_id",
        "exp",
        "iat",
        "iss",
        "jti",
        "rate_limit",
        "scope",
        "sub",
      ]);
      assert.equal(payload.sub, "alice");
      assert.equal(payload.aud, CRM);
      assert.equal(payload.client_id, "billing-agent");
      assert.equal(payload.scope, "crm:read");
      assert.equal(payload.approval_id, approvalId);
      assert.equal((payload.exp as number) - (payload.iat as number), 300);
      assert.deepEqual(payload.authorization_details, [
        { type: "agent_task", approval_id: approvalId, task: "reconcile the March invoices" },
      ]);
      assert.deepEqual(payload.act, { sub: "planner-bot", iss: `${sts.url}/dev` });
      // The tighter of the approval's (2/s, 20) and the resource's (5/s, 10).
      assert.deepEqual(payload.rate_limit, { per_second: 2, burst: 10 });

      const row = await sts.handle.db
        .selectFrom("approvals")
        .select("tokens_issued")
        .where("id", "=", approvalId)
        .executeTakeFirstOrThrow();
      assert.equal(row.tokens_issued, 1);
      const issued = await sts.handle.db
        .selectFrom("issued_tokens")
        .selectAll()
        .where("approval_id", "=", approvalId)
        .execute();
      assert.equal(issued.length, 1);
      assert.equal(issued[0]?.jti, payload.jti);
      assert.equal(issued[0]?.scope, "crm:read");
      const audit = await sts.handle.db
        .selectFrom("audit_events")
        .select(["event", "outcome", "reason"])
        .where("approval_id", "=", approvalId)
        .execute();
      assert.deepEqual(audit, [{ event: "token_exchange", outcome: "granted", reason: null }]);
      assert.ok(!sts.logs.text.includes(body.access_token as string));
      assert.ok(!sts.logs.text.includes(subjectToken));
    });

    test("without scope: everything the approval allows; lifetime capped by the approval's expiry", async () => {
      const approvalId = await insertApproval(sts.handle.db, {
        scope: "crm:read crm:write",
        ttl_seconds: 120,
      });
      const { status, body } = await exchange(sts.url, {
        subject_token: await devToken("alice"),
        authorization_details: agentTask(approvalId),
      });
      assert.equal(status, 200);
      assert.equal(body.scope, "crm:read crm:write");
      // The whole seconds left of the approval when the STS minted it, from what it signed (iat) and the
      // stored expiry, not from the test's clock: a slow exchange leaves fewer of the 120 s.
      const { iat, exp } = decodeJwt(body.access_token as string) as { iat: number; exp: number };
      const { expires_at } = await sts.handle.db
        .selectFrom("approvals")
        .select("expires_at")
        .where("id", "=", approvalId)
        .executeTakeFirstOrThrow();
      const left = (nowMs: number) => Math.floor((expires_at.getTime() - nowMs) / 1000);
      // Minted at some millisecond of second iat.
      assert.ok(
        body.expires_in === left(iat * 1000) || body.expires_in === left(iat * 1000 + 999),
        `expires_in ${String(body.expires_in)}, iat ${iat}, approval expiry ${expires_at.toISOString()}`,
      );
      assert.ok((body.expires_in as number) < 120);
      assert.equal(exp, iat + (body.expires_in as number));
    });

    test("audience works as the target too", async () => {
      const approvalId = await insertApproval(sts.handle.db);
      const { status, body } = await exchange(sts.url, {
        resource: "",
        audience: CRM,
        subject_token: await devToken("alice"),
        authorization_details: agentTask(approvalId),
      });
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(decodeJwt(body.access_token as string).aud, CRM);
    });

    describe("refusals (docs/reference.md#reason-codes)", () => {
      async function expectRefusal(
        params: Record<string, string>,
        expected: { status: number; error: string; description?: string | RegExp },
        client?: { id: string; secret: string },
      ) {
        const { status, body } = await exchange(sts.url, params, client);
        assert.equal(status, expected.status, JSON.stringify(body));
        assert.equal(body.error, expected.error);
        assert.equal(body.access_token, undefined);
        if (typeof expected.description === "string")
          assert.equal(body.error_description, expected.description);
        else if (expected.description) assert.match(body.error_description as string, expected.description);
        return body;
      }

      test("no such approval → invalid_grant", async () => {
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask("apr_doesnotexist") },
          { status: 400, error: "invalid_grant", description: "no such approval for this client" },
        );
      });

      test("another client's approval → invalid_grant, worded like a missing one", async () => {
        const approvalId = await insertApproval(sts.handle.db, { client_id: "post-agent" });
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
          { status: 400, error: "invalid_grant", description: "no such approval for this client" },
        );
      });

      test("pending → authorization_pending", async () => {
        const approvalId = await insertApproval(sts.handle.db, { status: "pending" });
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
          {
            status: 400,
            error: "authorization_pending",
            description: "the approval is still pending a human decision",
          },
        );
      });

      for (const [status, description] of [
        ["denied", "the approval was denied"],
        ["revoked", "the approval was revoked"],
      ] as const) {
        test(`${status} → invalid_grant saying so`, async () => {
          const approvalId = await insertApproval(sts.handle.db, { status });
          await expectRefusal(
            { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
            { status: 400, error: "invalid_grant", description },
          );
        });
      }

      test("expired → invalid_grant saying so", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        await sts.handle.db
          .updateTable("approvals")
          .set({ expires_at: new Date(Date.now() - 1000) })
          .where("id", "=", approvalId)
          .execute();
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
          { status: 400, error: "invalid_grant", description: "the approval has expired" },
        );
      });

      test("used up → invalid_grant saying so, and the refusal is audited", async () => {
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 1 });
        const first = await exchange(sts.url, {
          subject_token: await devToken("alice"),
          authorization_details: agentTask(approvalId),
        });
        assert.equal(first.status, 200);
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
          { status: 400, error: "invalid_grant", description: "the approval's token budget is used up" },
        );
        const audit = await sts.handle.db
          .selectFrom("audit_events")
          .select(["outcome", "reason"])
          .where("approval_id", "=", approvalId)
          .orderBy("id")
          .execute();
        assert.deepEqual(audit, [
          { outcome: "granted", reason: null },
          { outcome: "refused", reason: "approval_used_up" },
        ]);
      });

      test("subject mismatch → invalid_grant", async () => {
        const approvalId = await insertApproval(sts.handle.db, { subject: "alice" });
        await expectRefusal(
          { subject_token: await devToken("mallory"), authorization_details: agentTask(approvalId) },
          {
            status: 400,
            error: "invalid_grant",
            description: "the subject token's subject is not the approval's subject",
          },
        );
      });

      test("policy forbids → invalid_grant naming the policy", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        forbidAll = true;
        try {
          await expectRefusal(
            { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
            {
              status: 400,
              error: "invalid_grant",
              description: "forbidden by policy test-forbid: the test forbids it",
            },
          );
        } finally {
          forbidAll = false;
        }
      });

      test("issuance rate limit → 429 slow_down with Retry-After", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        limited = true;
        try {
          const { status, body, headers } = await exchange(sts.url, {
            subject_token: await devToken("alice"),
            authorization_details: agentTask(approvalId),
          });
          assert.equal(status, 429);
          assert.equal(body.error, "slow_down");
          assert.equal(headers.get("retry-after"), "3");
        } finally {
          limited = false;
        }
        const row = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.equal(row.tokens_issued, 0);
      });

      test("no target, two targets, an unknown target, the approval's other resource → invalid_target", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        const subject_token = await devToken("alice");
        const authorization_details = agentTask(approvalId);
        await expectRefusal(
          { resource: "", subject_token, authorization_details },
          {
            status: 400,
            error: "invalid_target",
            description: "exactly one resource or audience is required",
          },
        );
        await expectRefusal(
          { audience: "https://mail.example.test", subject_token, authorization_details },
          { status: 400, error: "invalid_target", description: "exactly one target is allowed" },
        );
        await expectRefusal(
          { resource: "https://unknown.example.test", subject_token, authorization_details },
          { status: 400, error: "invalid_target", description: "the requested resource is not configured" },
        );
        await expectRefusal(
          { resource: "https://mail.example.test", subject_token, authorization_details },
          { status: 400, error: "invalid_target", description: "the approval is for another resource" },
        );
      });

      test("scope outside the approval, or unknown to the resource → invalid_scope", async () => {
        const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read" });
        const subject_token = await devToken("alice");
        await expectRefusal(
          { scope: "crm:read crm:write", subject_token, authorization_details: agentTask(approvalId) },
          { status: 400, error: "invalid_scope", description: "scope not within the approval: crm:write" },
        );
        await expectRefusal(
          { scope: "crm:admin", subject_token, authorization_details: agentTask(approvalId) },
          { status: 400, error: "invalid_scope", description: "scope not within the approval: crm:admin" },
        );
      });

      test("malformed requests → invalid_request", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        const subject_token = await devToken("alice");
        await expectRefusal(
          { authorization_details: agentTask(approvalId) },
          {
            status: 400,
            error: "invalid_request",
            description: "missing required parameter 'subject_token'",
          },
        );
        await expectRefusal(
          { subject_token },
          {
            status: 400,
            error: "invalid_request",
            description: "authorization_details with an agent_task approval_id is required",
          },
        );
        await expectRefusal(
          { subject_token, authorization_details: "{not json" },
          { status: 400, error: "invalid_request", description: "authorization_details is not valid JSON" },
        );
        await expectRefusal(
          {
            subject_token,
            authorization_details: JSON.stringify([{ type: "payment", approval_id: approvalId }]),
          },
          {
            status: 400,
            error: "invalid_request",
            description: "authorization_details must hold exactly one agent_task",
          },
        );
        await expectRefusal(
          {
            subject_token,
            subject_token_type: "urn:example:saml",
            authorization_details: agentTask(approvalId),
          },
          { status: 400, error: "invalid_request", description: "unsupported subject_token_type" },
        );
        await expectRefusal(
          { subject_token, actor_token: subject_token, authorization_details: agentTask(approvalId) },
          {
            status: 400,
            error: "invalid_request",
            description: "actor_token and actor_token_type must be given together",
          },
        );
        await expectRefusal(
          {
            subject_token,
            requested_token_type: "urn:ietf:params:oauth:token-type:refresh_token",
            authorization_details: agentTask(approvalId),
          },
          {
            status: 400,
            error: "invalid_request",
            description: "only access tokens can be requested (requested_token_type)",
          },
        );
      });

      test("subject tokens that are not trusted for the subject usage → invalid_grant", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        const authorization_details = agentTask(approvalId);
        const { privateKey } = await generateKeyPair("ES256");
        const forged = await new SignJWT({ usage: ["subject"] })
          .setProtectedHeader({ alg: "ES256", kid: "countersign-dev" })
          .setIssuer(`${sts.url}/dev`)
          .setAudience(sts.url)
          .setSubject("alice")
          .setIssuedAt()
          .setExpirationTime("5m")
          .sign(privateKey);
        await expectRefusal(
          { subject_token: forged, authorization_details },
          { status: 400, error: "invalid_grant", description: "the subject token's signature is invalid" },
        );
        const stranger = await new SignJWT({})
          .setProtectedHeader({ alg: "ES256" })
          .setIssuer("https://idp.evil.test")
          .setAudience(sts.url)
          .setSubject("alice")
          .setExpirationTime("5m")
          .sign(privateKey);
        await expectRefusal(
          { subject_token: stranger, authorization_details },
          { status: 400, error: "invalid_grant", description: "the subject token's issuer is not trusted" },
        );
        await expectRefusal(
          { subject_token: await devToken("alice", "approver"), authorization_details },
          { status: 400, error: "invalid_grant", description: "the token was not issued for subject use" },
        );
        await expectRefusal(
          { subject_token: "not-a-jwt", authorization_details },
          { status: 400, error: "invalid_grant", description: "the subject token is not a JWT" },
        );
        const expired = await sts.app.services.devIssuer!.mint({
          sub: "alice",
          usage: "subject",
          ttlSeconds: -120,
        });
        await expectRefusal(
          { subject_token: expired, authorization_details },
          { status: 400, error: "invalid_grant", description: "the subject token has expired" },
        );
        // The approval API credential is not a subject token.
        const cc = await fetch(`${sts.url}/token`, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "client_credentials",
            client_id: "post-agent",
            client_secret: TEST_SECRET,
          }),
        });
        const approvalsToken = ((await cc.json()) as { access_token: string }).access_token;
        await expectRefusal(
          { subject_token: approvalsToken, subject_token_type: ACCESS_TOKEN_TYPE, authorization_details },
          { status: 400, error: "invalid_grant", description: "the subject token cannot be exchanged" },
        );
      });

      test("a wrong client secret → 401 invalid_client", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        await expectRefusal(
          { subject_token: await devToken("alice"), authorization_details: agentTask(approvalId) },
          { status: 401, error: "invalid_client" },
          { id: "billing-agent", secret: `${TEST_SECRET}!` },
        );
      });
    });

    describe("chained exchange: an STS-issued token may only narrow", () => {
      test("narrower scope keeps sub, approval and act; broader scope is refused", async () => {
        const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read crm:write" });
        const first = await exchange(sts.url, {
          subject_token: await devToken("alice"),
          actor_token: await devToken("planner-bot", "actor"),
          actor_token_type: JWT_TOKEN_TYPE,
          scope: "crm:read crm:write",
          authorization_details: agentTask(approvalId),
        });
        assert.equal(first.status, 200);
        const parent = first.body.access_token as string;

        const narrower = await exchange(sts.url, {
          subject_token: parent,
          subject_token_type: ACCESS_TOKEN_TYPE,
          actor_token: await devToken("sub-agent", "actor"),
          actor_token_type: JWT_TOKEN_TYPE,
          scope: "crm:read",
          authorization_details: agentTask(approvalId),
        });
        assert.equal(narrower.status, 200, JSON.stringify(narrower.body));
        const claims = decodeJwt(narrower.body.access_token as string);
        assert.equal(claims.sub, "alice");
        assert.equal(claims.scope, "crm:read");
        assert.ok((claims.exp as number) <= (decodeJwt(parent).exp as number));
        assert.deepEqual(claims.act, {
          sub: "sub-agent",
          iss: `${sts.url}/dev`,
          act: { sub: "planner-bot", iss: `${sts.url}/dev` },
        });

        const child = narrower.body.access_token as string;
        const broader = await exchange(sts.url, {
          subject_token: child,
          subject_token_type: ACCESS_TOKEN_TYPE,
          scope: "crm:write",
          authorization_details: agentTask(approvalId),
        });
        assert.equal(broader.status, 400);
        assert.equal(broader.body.error, "invalid_scope");

        const otherApproval = await insertApproval(sts.handle.db, { scope: "crm:read crm:write" });
        const crossed = await exchange(sts.url, {
          subject_token: child,
          subject_token_type: ACCESS_TOKEN_TYPE,
          authorization_details: agentTask(otherApproval),
        });
        assert.equal(crossed.status, 400);
        assert.equal(crossed.body.error, "invalid_grant");
        assert.equal(crossed.body.error_description, "the subject token belongs to another approval");
      });
    });
  });
}

describe("config", () => {
  test("a resource's max_ttl_seconds and tokens.max_ttl_seconds cap the lifetime", async () => {
    const config = baseConfig();
    config.tokens = { default_ttl_seconds: 60, max_ttl_seconds: 90, signing_alg: "ES256" };
    (config.resources as { id: string; max_ttl_seconds?: number }[])[0]!.max_ttl_seconds = 600;
    const sts = await startTestApp({ engine: "pglite", config });
    try {
      const approvalId = await insertApproval(sts.handle.db);
      const { status, body } = await exchange(sts.url, {
        subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
        authorization_details: agentTask(approvalId),
      });
      assert.equal(status, 200);
      assert.equal(body.expires_in, 90);
    } finally {
      await sts.stop();
    }
  });
});
