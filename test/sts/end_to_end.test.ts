import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { basicAuth, postForm, startTestApp, TEST_SECRET } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { ACCESS_TOKEN_TYPE, agentTask, exchange, JWT_TOKEN_TYPE } from "../helpers/exchange.js";

async function json(url: string, init: RequestInit & { token: string; body?: string }) {
  const response = await fetch(url, {
    ...init,
    headers: {
      authorization: `Bearer ${init.token}`,
      ...(init.body ? { "content-type": "application/json" } : {}),
    },
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

for (const engine of testEngines()) {
  describe(`end to end over HTTP on ${engine}`, () => {
    test("approvals token → request → an approver narrows and approves → exchange → verified JWT", async () => {
      const sts = await startTestApp({ engine });
      try {
        // 1. The agent's approval API credential (client_credentials, scope approvals:request).
        const credential = await postForm(
          `${sts.url}/token`,
          { grant_type: "client_credentials", scope: "approvals:request" },
          { authorization: basicAuth("billing-agent", TEST_SECRET) },
        );
        assert.equal(credential.status, 200);
        const agentToken = credential.body.access_token as string;

        // 2. The agent asks for a task.
        const requested = await json(`${sts.url}/approvals`, {
          method: "POST",
          token: agentToken,
          body: JSON.stringify({
            resource: "https://crm.example.test",
            scope: "crm:read crm:write",
            task: "reconcile the March invoices",
            max_tokens: 20,
            ttl_seconds: 1800,
            subject: "alice",
            rate_limit: { per_second: 4, burst: 8 },
          }),
        });
        assert.equal(requested.status, 201, JSON.stringify(requested.body));
        const approvalId = requested.body.id as string;
        assert.equal(requested.body.status, "pending");
        assert.equal(requested.body.client_id, "billing-agent");
        assert.equal(requested.body.requested_by, "billing-agent");
        assert.equal(requested.body.tokens_issued, 0);

        // Before a decision the exchange is pending.
        const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const early = await exchange(sts.url, {
          subject_token: subjectToken,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(early.status, 400);
        assert.equal(early.body.error, "authorization_pending");

        // 3. A human approver sees it pending, narrows it and approves.
        const approverToken = await sts.app.services.devIssuer!.mint({ sub: "bob", usage: "approver" });
        const pending = await json(`${sts.url}/approvals?status=pending`, {
          method: "GET",
          token: approverToken,
        });
        assert.equal(pending.status, 200);
        assert.ok((pending.body.approvals as { id: string }[]).some((a) => a.id === approvalId));
        const approved = await json(`${sts.url}/approvals/${approvalId}/approve`, {
          method: "POST",
          token: approverToken,
          body: JSON.stringify({
            scope: "crm:read",
            max_tokens: 3,
            ttl_seconds: 900,
            rate_limit: { per_second: 2, burst: 4 },
          }),
        });
        assert.equal(approved.status, 200, JSON.stringify(approved.body));
        assert.equal(approved.body.status, "approved");
        assert.equal(approved.body.scope, "crm:read");
        assert.equal(approved.body.max_tokens, 3);
        assert.equal(approved.body.approved_by, "bob");
        const expiresAt = Date.parse(approved.body.expires_at as string);
        assert.equal(expiresAt, Date.parse(requested.body.created_at as string) + 900_000);

        // 4. The agent exchanges; the narrowed approval bounds the token.
        const actorToken = await sts.app.services.devIssuer!.mint({ sub: "planner", usage: "actor" });
        const minted = await exchange(sts.url, {
          subject_token: subjectToken,
          actor_token: actorToken,
          actor_token_type: JWT_TOKEN_TYPE,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(minted.status, 200, JSON.stringify(minted.body));
        assert.equal(minted.body.issued_token_type, ACCESS_TOKEN_TYPE);
        assert.equal(minted.body.token_type, "Bearer");
        assert.equal(minted.body.scope, "crm:read");
        assert.equal(minted.body.expires_in, 300);

        // 5. Verified with jose against /jwks, every claim checked.
        const { payload, protectedHeader } = await jwtVerify(
          minted.body.access_token as string,
          createRemoteJWKSet(new URL(`${sts.url}/jwks`)),
          { issuer: sts.url, audience: "https://crm.example.test", typ: "at+jwt", algorithms: ["ES256"] },
        );
        assert.deepEqual(Object.keys(protectedHeader).sort(), ["alg", "kid", "typ"]);
        assert.equal(payload.iss, sts.url);
        assert.equal(payload.sub, "alice");
        assert.equal(payload.aud, "https://crm.example.test");
        assert.equal(payload.client_id, "billing-agent");
        assert.equal(payload.scope, "crm:read");
        assert.equal((payload.exp as number) - (payload.iat as number), 300);
        assert.ok((payload.exp as number) * 1000 <= expiresAt);
        assert.match(payload.jti as string, /^[\w-]{24}$/);
        assert.equal(payload.approval_id, approvalId);
        assert.deepEqual(payload.authorization_details, [
          { type: "agent_task", approval_id: approvalId, task: "reconcile the March invoices" },
        ]);
        assert.deepEqual(payload.act, { sub: "planner", iss: `${sts.url}/dev` });
        assert.deepEqual(payload.rate_limit, { per_second: 2, burst: 4 });

        // The approval reflects the budget.
        const read = await json(`${sts.url}/approvals/${approvalId}`, { method: "GET", token: agentToken });
        assert.equal(read.status, 200);
        assert.equal(read.body.tokens_issued, 1);

        // 6. Revoked: the next exchange is refused.
        const revoked = await json(`${sts.url}/approvals/${approvalId}/revoke`, {
          method: "POST",
          token: approverToken,
          body: JSON.stringify({ reason: "task finished" }),
        });
        assert.equal(revoked.status, 200);
        assert.equal(revoked.body.status, "revoked");
        const after = await exchange(sts.url, {
          subject_token: subjectToken,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(after.status, 400);
        assert.equal(after.body.error, "invalid_grant");
        assert.equal(after.body.error_description, "the approval was revoked");
      } finally {
        await sts.stop();
      }
    });
  });
}
