import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { bearerJson as json, type TestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { approvalsRequestToken, exchangeForApproval, type McpStack, startMcpStack } from "./stack.js";

const SCOPES = ["tools:read", "mail:send", "files:read", "prompts:read"];

for (const engine of testEngines()) {
  describe(`approvals naming MCP tools, resources and prompts (${engine})`, () => {
    let stack: McpStack;
    let sts: TestApp;
    let resource: string;
    let agentToken: string;

    const request = (body: Record<string, unknown>) =>
      json(`${sts.url}/approvals`, agentToken, "POST", {
        resource,
        scope: "tools:read mail:send files:read prompts:read",
        task: "send the Q1 report",
        subject: "alice",
        ...body,
      });
    const approve = (id: string, body: Record<string, unknown>) =>
      json(`${sts.url}/approvals/${id}/approve`, stack.approverToken, "POST", body);
    const mint = (approvalId: string) => exchangeForApproval(stack, approvalId);
    const connect = (token: string) => stack.connectWithToken(token);

    before(async () => {
      stack = await startMcpStack({
        engine,
        scopes: SCOPES,
        gateway: {
          policy: {
            default_scopes: ["tools:read"],
            tools: { send_email: ["mail:send"] },
            resources: { "file:///reports/q1.txt": ["files:read"], "file:///reports/q2.txt": ["files:read"] },
            prompts: { summarize: ["prompts:read"] },
          },
        },
      });
      ({ sts, resource } = stack);
      agentToken = await approvalsRequestToken(sts);
    });

    after(() => stack.close());

    test("request with tools → approver narrows them → the token carries exactly the narrowed lists → the gateway refuses the rest", async () => {
      const requested = await request({
        tools: ["echo", "send_email"],
        resources: ["file:///reports/q1.txt", "file:///reports/q2.txt"],
        prompts: ["summarize"],
      });
      assert.equal(requested.status, 201, JSON.stringify(requested.body));
      assert.deepEqual(requested.body.tools, ["echo", "send_email"]);
      assert.deepEqual(requested.body.resources, ["file:///reports/q1.txt", "file:///reports/q2.txt"]);
      assert.deepEqual(requested.body.prompts, ["summarize"]);
      const id = requested.body.id as string;

      const approved = await approve(id, { tools: ["echo"], resources: ["file:///reports/q1.txt"] });
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      assert.deepEqual(approved.body.tools, ["echo"]);
      assert.deepEqual(approved.body.resources, ["file:///reports/q1.txt"]);
      assert.deepEqual(approved.body.prompts, ["summarize"]);
      const read = await json(`${sts.url}/approvals/${id}`, agentToken, "GET");
      assert.deepEqual(read.body.tools, ["echo"]);

      const token = await mint(id);
      assert.deepEqual(decodeJwt(token).authorization_details, [
        {
          type: "agent_task",
          approval_id: id,
          task: "send the Q1 report",
          tools: ["echo"],
          resources: ["file:///reports/q1.txt"],
          prompts: ["summarize"],
        },
      ]);

      const client = await connect(token);
      assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "ok" } }), {
        content: [{ type: "text", text: "echo: ok" }],
      });
      // send_email was requested and its scope (mail:send) is in the token, but the approver removed it.
      await assert.rejects(
        client.callTool({ name: "send_email", arguments: { to: "bob@example.test", body: "hi" } }),
        (error: Error & { code?: number }) =>
          error.code === 403 && error.message.includes('"reason":"tool_not_approved"'),
      );
      await assert.rejects(
        client.readResource({ uri: "file:///reports/q2.txt" }),
        (error: Error & { code?: number }) =>
          error.code === 403 && error.message.includes('"reason":"resource_not_approved"'),
      );
      const q1 = await client.readResource({ uri: "file:///reports/q1.txt" });
      assert.equal((q1.contents[0] as { text: string }).text, "Q1 revenue: 42");
    });

    test("an approval naming no tools: the token names none and every tool its scopes allow is callable", async () => {
      const requested = await request({});
      assert.equal(requested.status, 201, JSON.stringify(requested.body));
      assert.equal(requested.body.tools, null);
      assert.equal(requested.body.resources, null);
      assert.equal(requested.body.prompts, null);
      const id = requested.body.id as string;
      assert.equal((await approve(id, {})).status, 200);
      const token = await mint(id);
      assert.deepEqual(decodeJwt(token).authorization_details, [
        { type: "agent_task", approval_id: id, task: "send the Q1 report" },
      ]);
      const client = await connect(token);
      assert.deepEqual(
        await client.callTool({ name: "send_email", arguments: { to: "bob@example.test", body: "hi" } }),
        { content: [{ type: "text", text: "sent to bob@example.test" }] },
      );
    });

    test("the approver may restrict a request that named no tools, but never add one that was not requested", async () => {
      const open = await request({});
      const restricted = await approve(open.body.id as string, { tools: ["echo"] });
      assert.equal(restricted.status, 200, JSON.stringify(restricted.body));
      assert.deepEqual(restricted.body.tools, ["echo"]);

      const named = await request({ tools: ["echo"] });
      const widened = await approve(named.body.id as string, { tools: ["echo", "send_email"] });
      assert.equal(widened.status, 400);
      assert.deepEqual(widened.body, {
        error: "invalid_request",
        error_description: 'tools: may only narrow the requested tools; "send_email" was not requested',
      });
      const still = await json(`${sts.url}/approvals/${named.body.id as string}`, agentToken, "GET");
      assert.equal(still.body.status, "pending");
    });

    test("lists are bounded: entries, length, duplicates, emptiness and total size (400 invalid_request)", async () => {
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ tools: [] }, /^tools: /],
        [{ tools: Array.from({ length: 65 }, (_, i) => `t${i}`) }, /^tools: /],
        [{ resources: ["x".repeat(257)] }, /^resources\.0: /],
        [{ prompts: ["a", "a"] }, /^prompts: must not name anything twice$/],
        [{ tools: ["bad\u0000name"] }, /^tools\.0: must be well-formed Unicode/],
        [{ tools: ["ok", 5] }, /^tools\.1: /],
        [{ tools: "echo" }, /^tools: /],
        [
          {
            tools: Array.from({ length: 20 }, (_, i) => `${i}`.padEnd(200, "t")),
          },
          /^tools: tools, resources and prompts together exceed 3072 bytes of JSON$/,
        ],
      ];
      for (const [body, description] of cases) {
        const refused = await request(body);
        assert.equal(refused.status, 400, JSON.stringify(body).slice(0, 80));
        assert.equal(refused.body.error, "invalid_request");
        assert.match(refused.body.error_description as string, description);
      }
      // The largest lists allowed still make a token well under the verifier's 8192-byte bound.
      const largest = await request({
        tools: Array.from({ length: 12 }, (_, i) => `${i}`.padEnd(250, "t")),
      });
      assert.equal(largest.status, 201, JSON.stringify(largest.body));
      assert.equal((await approve(largest.body.id as string, {})).status, 200);
      const token = await mint(largest.body.id as string);
      assert.ok(token.length < 8192, String(token.length));
    });
  });
}
