import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import {
  argumentsDigest,
  createMemoryCallTokenStore,
  startMcpGateway,
} from "../../gateway-verifier/src/index.js";
import { freePort, bearerJson as json, type JsonReply as Reply, type TestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { agentTask, exchange } from "../helpers/exchange.js";
import { approvalsRequestToken, exchangeForApproval, type McpStack, startMcpStack } from "./stack.js";
import type { Upstream } from "./upstream.js";

const SCOPES = ["tools:read", "mail:send", "files:read"];
const EMAIL = { to: "bob@example.test", body: "Q1 revenue: 42, see attached." };

/** A raw MCP POST (2025-06-18 style: no mirrored headers). */
async function mcpPost(url: string, token: string, body: string): Promise<Reply> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body,
  });
  const text = await response.text();
  return { status: response.status, body: text.startsWith("{") ? JSON.parse(text) : { text } };
}

const refusedWith = (reason: string) => (error: Error & { code?: number }) =>
  error.message.includes(`"reason":"${reason}"`);

for (const engine of testEngines()) {
  describe(`approvals bound to one tools/call and its exact arguments (${engine})`, () => {
    let stack: McpStack;
    let sts: TestApp;
    let upstream: Upstream;
    let resource: string;
    let agentToken: string;
    let approverToken: string;

    const request = (body: Record<string, unknown>) =>
      json(`${sts.url}/approvals`, agentToken, "POST", {
        resource,
        scope: "tools:read mail:send",
        task: "email Bob the Q1 figures",
        subject: "alice",
        ...body,
      });

    async function approvedCallToken(call: { tool: string; arguments: unknown }): Promise<string> {
      const requested = await request({ call });
      assert.equal(requested.status, 201, JSON.stringify(requested.body));
      const id = requested.body.id as string;
      const approved = await json(`${sts.url}/approvals/${id}/approve`, approverToken, "POST", {});
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      return exchangeForApproval(stack, id);
    }

    const connect = (token: string) => stack.connectWithToken(token);

    before(async () => {
      stack = await startMcpStack({
        engine,
        scopes: SCOPES,
        gateway: { policy: { default_scopes: ["tools:read"], tools: { send_email: ["mail:send"] } } },
      });
      ({ sts, upstream, resource, approverToken } = stack);
      agentToken = await approvalsRequestToken(sts);
    });

    after(() => stack.close());

    test("the approval shows the exact arguments and their digest; the token carries the tool and the digest", async () => {
      const args = { to: "bob@example.test", body: "hi", cc: ["carol@example.test"], n: 1.5 };
      const requested = await request({ call: { tool: "send_email", arguments: args } });
      assert.equal(requested.status, 201, JSON.stringify(requested.body));
      const digest = argumentsDigest(args);
      assert.deepEqual(requested.body.call, {
        tool: "send_email",
        arguments: args,
        arguments_digest: digest,
      });
      assert.deepEqual(requested.body.tools, ["send_email"]);
      assert.equal(requested.body.max_tokens, 1);
      const id = requested.body.id as string;
      const read = await json(`${sts.url}/approvals/${id}`, approverToken, "GET");
      assert.deepEqual(read.body.call, requested.body.call);

      assert.equal((await json(`${sts.url}/approvals/${id}/approve`, approverToken, "POST", {})).status, 200);
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const exchangeOnce = () =>
        exchange(sts.url, { subject_token: subjectToken, authorization_details: agentTask(id), resource });
      const minted = await exchangeOnce();
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.deepEqual(decodeJwt(minted.body.access_token as string).authorization_details, [
        {
          type: "agent_task",
          approval_id: id,
          task: "email Bob the Q1 figures",
          tools: ["send_email"],
          call: { tool: "send_email", arguments_digest: digest },
        },
      ]);
      // One call, one token: the approval's budget is spent.
      const second = await exchangeOnce();
      assert.equal(second.status, 400);
      assert.equal(second.body.error, "invalid_grant");
    });

    test("call requests are bounded and checked (400 invalid_request naming the field)", async () => {
      const deep: Record<string, unknown> = {};
      let cursor = deep;
      for (let i = 0; i < 40; i++) {
        const next: Record<string, unknown> = {};
        cursor.a = next;
        cursor = next;
      }
      const cases: [unknown, RegExp][] = [
        [{ call: { tool: "send_email", arguments: [1] } }, /^call\.arguments: /],
        [{ call: { tool: "send_email", arguments: "x" } }, /^call\.arguments: /],
        [{ call: { tool: "send_email" } }, /^call\.arguments: /],
        [{ call: { tool: "", arguments: {} } }, /^call\.tool: /],
        [{ call: { tool: "send_email", arguments: {}, extra: 1 } }, /^call: unknown field "extra"$/],
        [
          { call: { tool: "send_email", arguments: { big: "x".repeat(40_000) } } },
          /^call\.arguments: exceed 32768 bytes of canonical JSON$/,
        ],
        [{ call: { tool: "send_email", arguments: deep } }, /^call\.arguments: nested deeper than 32$/],
        [
          { call: { tool: "send_email", arguments: {} }, tools: ["echo"] },
          /^tools: must be absent or name only call\.tool$/,
        ],
      ];
      for (const [body, description] of cases) {
        const refused = await request(body as Record<string, unknown>);
        assert.equal(refused.status, 400, JSON.stringify(body).slice(0, 80));
        assert.equal(refused.body.error, "invalid_request");
        assert.match(refused.body.error_description as string, description);
      }
      // A lone surrogate is not I-JSON: no canonical form, refused.
      const lone = await json(
        `${sts.url}/approvals`,
        agentToken,
        "POST",
        `{"resource":${JSON.stringify(resource)},"scope":"mail:send","task":"t","call":{"tool":"send_email","arguments":{"to":"\\ud800"}}}`,
      );
      assert.equal(lone.status, 400);
      assert.equal(lone.body.error_description, "call.arguments: a string contains a lone surrogate");
    });

    test("a call approval takes max_tokens 1 or none; another value is 400 (call_max_tokens_conflict), never silently changed", async () => {
      const call = { tool: "send_email", arguments: EMAIL };
      for (const maxTokens of [2, 10, 1_000_000]) {
        const refused = await request({ call, max_tokens: maxTokens });
        assert.equal(refused.status, 400);
        assert.deepEqual(refused.body, {
          error: "invalid_request",
          error_description:
            "max_tokens: must be 1 or absent with call (an approval bound to one call mints one token)",
        });
      }
      // Each refusal is audited, counted in the agent's row of its 10-second window (one or two rows).
      const refusals = await sts.handle.db
        .selectFrom("audit_events")
        .select("occurrences")
        .where("reason", "=", "call_max_tokens_conflict")
        .execute();
      assert.equal(
        refusals.reduce((sum, row) => sum + Number(row.occurrences), 0),
        3,
      );
      assert.ok(refusals.length <= 2, `${refusals.length} rows`);
      const one = await request({ call, max_tokens: 1 });
      assert.equal(one.status, 201, JSON.stringify(one.body));
      assert.equal(one.body.max_tokens, 1);
      const unnamed = await request({ call });
      assert.equal(unnamed.status, 201, JSON.stringify(unnamed.body));
      assert.equal(unnamed.body.max_tokens, 1);
      // Without a call the default stays 10.
      const plain = await request({});
      assert.equal(plain.status, 201, JSON.stringify(plain.body));
      assert.equal(plain.body.max_tokens, 10);
    });

    test("the exact arguments pass once; other arguments and other tools are refused; a replay is refused; list methods, ping and initialize do not consume", async () => {
      const token = await approvedCallToken({ tool: "send_email", arguments: EMAIL });
      const client = await connect(token);
      // initialize (connect), ping and list methods pass and do not consume the token.
      await client.ping();
      const tools = await client.listTools();
      assert.ok(tools.tools.some((tool) => tool.name === "send_email"));
      await client.listResources();
      await assert.rejects(
        client.callTool({ name: "send_email", arguments: { ...EMAIL, to: "mallory@example.test" } }),
        (error: Error & { code?: number }) =>
          error.code === 403 && refusedWith("call_arguments_mismatch")(error),
      );
      await assert.rejects(
        client.callTool({ name: "echo", arguments: { text: "hi" } }),
        (error: Error & { code?: number }) => error.code === 403 && refusedWith("tool_not_approved")(error),
      );
      await assert.rejects(
        client.readResource({ uri: "file:///reports/q1.txt" }),
        (error: Error & { code?: number }) =>
          error.code === 403 && refusedWith("call_method_not_approved")(error),
      );
      // Member order does not matter: the digest is of the RFC 8785 canonical form.
      assert.deepEqual(
        await client.callTool({ name: "send_email", arguments: { body: EMAIL.body, to: EMAIL.to } }),
        {
          content: [{ type: "text", text: "sent to bob@example.test" }],
        },
      );
      await assert.rejects(
        client.callTool({ name: "send_email", arguments: EMAIL }),
        (error: Error & { code?: number }) => error.code === 403 && refusedWith("call_token_used")(error),
      );
      // Still usable for what does not consume it.
      await client.listTools();
      await client.ping();
    });

    test("raw bodies: non-canonical numbers, the call twice in a batch, and a call after a refused one", async () => {
      const args = { to: "bob@example.test", body: "x", copies: 2 };
      const token = await approvedCallToken({ tool: "send_email", arguments: args });
      const call = (id: number, copies: string) =>
        `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"send_email","arguments":{"to":"bob@example.test","body":"x","copies":${copies}}}}`;
      // 2.0 parses to the approved 2 (same digest) but another parser could read it otherwise.
      const noncanonical = await mcpPost(resource, token, call(1, "2.0"));
      assert.equal(noncanonical.status, 400);
      assert.equal(noncanonical.body.reason, "call_numbers_not_canonical");
      const batch = await mcpPost(resource, token, `[${call(1, "2")},${call(2, "2")}]`);
      assert.equal(batch.status, 403);
      assert.equal(batch.body.reason, "call_token_used");
      // Neither refusal consumed the token: the call itself (without a session: the upstream answers
      // 400, but the gateway forwarded it) consumes it, and then it is used.
      const made = await mcpPost(resource, token, call(3, "2"));
      // The upstream's own answer (no session was opened): the gateway forwarded the call.
      assert.equal(made.status, 400);
      assert.deepEqual(made.body.error, { code: -32000, message: "Bad Request: Server not initialized" });
      const replay = await mcpPost(resource, token, call(4, "2"));
      assert.equal(replay.status, 403);
      assert.deepEqual(replay.body, {
        error: "access_denied",
        error_description: "The approval's one tool call was already made with this token",
        reason: "call_token_used",
      });
    });

    test("a store that cannot record the call refuses it (503 call_store_unavailable); nothing is forwarded", async () => {
      const port = await freePort();
      const failing = await startMcpGateway({
        port,
        upstream: upstream.url,
        resource,
        issuer: sts.url,
        publicOrigin: resource,
        callTokens: {
          store: {
            consume: async () => {
              throw new Error("redis down");
            },
          },
        },
      });
      try {
        const token = await approvedCallToken({ tool: "send_email", arguments: EMAIL });
        const before = upstream.requests.length;
        const body = JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: { name: "send_email", arguments: EMAIL },
        });
        const refused = await mcpPost(`http://127.0.0.1:${port}/mcp`, token, body);
        assert.equal(refused.status, 503);
        assert.equal(refused.body.reason, "call_store_unavailable");
        assert.equal(upstream.requests.length, before);
      } finally {
        await failing.close();
      }
    });
  });
}

describe("the call token stores", () => {
  test("memory: a jti is consumed once until it expires; a store full of live tokens refuses (fail closed)", async () => {
    let now = 1_000_000;
    const store = createMemoryCallTokenStore({ maxEntries: 2, now: () => now });
    assert.equal(await store.consume("a", now + 10_000), true);
    assert.equal(await store.consume("a", now + 10_000), false);
    assert.equal(await store.consume("b", now + 20_000), true);
    await assert.rejects(store.consume("c", now + 20_000), /call token store is full/);
    now += 10_001; // "a" has expired: its place is free again, and "b" is still remembered.
    assert.equal(await store.consume("c", now + 20_000), true);
    assert.equal(await store.consume("b", now + 20_000), false);
  });
});
