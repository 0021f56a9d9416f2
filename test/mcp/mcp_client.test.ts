import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startMcpGateway } from "../../gateway-verifier/src/index.js";
import {
  type CountersignAgentOptions,
  CountersignApprovalError,
  createCountersignAgent,
} from "../../mcp-client/src/index.js";
import { bearerJson, freePort, type JsonReply as Reply, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { type McpStack, startMcpStack } from "./stack.js";
import type { Upstream } from "./upstream.js";

const SCOPES = ["tools:read", "mail:send"];
const EMAIL = { to: "bob@example.test", body: "Q1 revenue: 42" };
const POLICY = { default_scopes: ["tools:read"], tools: { send_email: ["mail:send"] } };

/** One request seen by the helper's underlying fetch: where, what, with which token, and the answer. */
interface Seen {
  url: string;
  body: string;
  authorization: string | null;
  status: number;
}

/**
 * The MCP client helper (`@countersign/mcp-client`) with the official SDK client, against the MCP
 * gateway and a real STS. The tests play the human approver through the approval API. PGlite only:
 * the STS's storage is not what is under test here.
 */
describe("@countersign/mcp-client: SDK client + approvals + token exchange through the MCP gateway", () => {
  let stack: McpStack;
  let sts: TestApp;
  let upstream: Upstream;
  let resource: string;

  const api = (path: string, method = "GET", body?: unknown): Promise<Reply> =>
    bearerJson(`${sts.url}${path}`, stack.approverToken, method, body);

  async function pending(): Promise<Record<string, unknown>[]> {
    const list = await api("/approvals?status=pending");
    assert.equal(list.status, 200);
    return list.body.approvals as Record<string, unknown>[];
  }

  /** The human: waits for the next pending approval of `task`, checks it, then decides. */
  async function decideNext(
    task: string,
    decision: "approve" | "deny",
    check: (approval: Record<string, unknown>) => void = () => undefined,
  ): Promise<string> {
    for (let i = 0; i < 400; i++) {
      const found = (await pending()).find((approval) => approval.task === task);
      if (found !== undefined) {
        check(found);
        const decided = await api(`/approvals/${found.id as string}/${decision}`, "POST", {});
        assert.equal(decided.status, 200, JSON.stringify(decided.body));
        return found.id as string;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`no pending approval for ${task}`);
  }

  function agent(task: string, extra: Partial<CountersignAgentOptions> = {}, seen: Seen[] = []) {
    return createCountersignAgent({
      issuer: sts.url,
      server: resource,
      clientId: "billing-agent",
      clientSecret: TEST_SECRET,
      subjectToken: () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
      task,
      subject: "alice",
      scope: ["tools:read"],
      approvalWait: { initialDelayMs: 20, maxDelayMs: 100, maxWaitMs: 20_000 },
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        seen.push({
          url: String(url),
          body: typeof init?.body === "string" ? init.body : "",
          authorization: new Headers(init?.headers).get("authorization"),
          status: response.status,
        });
        return response;
      },
      ...extra,
    });
  }

  const connect = (helper: ReturnType<typeof agent>, url = resource) =>
    stack.connect({ fetch: helper.fetch, authProvider: helper.provider }, url);

  before(async () => {
    stack = await startMcpStack({
      engine: "pglite",
      scopes: SCOPES,
      gateway: (issuer) => ({
        policy: POLICY,
        verifier: { revocation: { url: `${issuer}/revocations`, stream: true } },
      }),
    });
    ({ sts, upstream, resource } = stack);
    await stack.gateway.gateway.ready();
  });

  after(() => stack.close());

  test("an unapproved tool is refused (403), the helper steps up for the union, the human approves, the call succeeds", async () => {
    const task = "step-up: echo, then email Bob";
    const seen: Seen[] = [];
    const helper = agent(task, { tools: ["echo"] }, seen);
    const [client] = await Promise.all([
      connect(helper),
      decideNext(task, "approve", (approval) => {
        assert.equal(approval.scope, "tools:read");
        assert.deepEqual(approval.tools, ["echo"]);
      }),
    ]);
    assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "hi" } }), {
      content: [{ type: "text", text: "echo: hi" }],
    });
    const first = helper.approvalId;

    // send_email: not in the approval's tools (403 tool_not_approved), then not in its scopes
    // (403 insufficient_scope, mail:send): two step-ups, each approved by the human.
    const [result] = await Promise.all([
      client.callTool({ name: "send_email", arguments: EMAIL }),
      (async () => {
        await decideNext(task, "approve", (approval) => {
          assert.equal(approval.scope, "tools:read");
          assert.deepEqual(approval.tools, ["echo", "send_email"]);
        });
        await decideNext(task, "approve", (approval) => {
          assert.equal(approval.scope, "tools:read mail:send");
          assert.deepEqual(approval.tools, ["echo", "send_email"]);
        });
      })(),
    ]);
    assert.deepEqual(result, { content: [{ type: "text", text: "sent to bob@example.test" }] });
    assert.notEqual(helper.approvalId, first);
    const refusals = seen
      .filter((request) => request.url === resource && request.status === 403)
      .map((request) => request.status);
    assert.deepEqual(refusals, [403, 403]);
    assert.deepEqual(await pending(), []);
  });

  test("per-call approvals: the human sees the exact arguments; other arguments are refused; the exact ones pass once; a replay is refused", async () => {
    const task = "per-call: email Bob once";
    const seen: Seen[] = [];
    const helper = agent(task, { scope: ["tools:read", "mail:send"], perCallTools: ["send_email"] }, seen);
    const [client] = await Promise.all([connect(helper), decideNext(task, "approve")]);

    const [result] = await Promise.all([
      client.callTool({ name: "send_email", arguments: EMAIL }),
      decideNext(task, "approve", (approval) => {
        assert.deepEqual((approval.call as { arguments: unknown }).arguments, EMAIL);
        assert.equal(approval.max_tokens, 1);
      }),
    ]);
    assert.deepEqual(result, { content: [{ type: "text", text: "sent to bob@example.test" }] });

    // The hostile agent keeps the call token and tries to use it again.
    const made = seen.find((request) => request.url === resource && request.body.includes('"tools/call"'));
    assert.ok(made?.authorization, "the call was sent with a token");
    const raw = (args: Record<string, unknown>) =>
      fetch(resource, {
        method: "POST",
        headers: {
          authorization: made.authorization as string,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 99,
          method: "tools/call",
          params: { name: "send_email", arguments: args },
        }),
      }).then(async (response) => ({ status: response.status, body: await response.json() }));
    assert.deepEqual(await raw({ ...EMAIL, to: "mallory@example.test" }), {
      status: 403,
      body: {
        error: "access_denied",
        error_description:
          "The approval binds another tool call: this tool or these arguments were not approved",
        reason: "call_arguments_mismatch",
      },
    });
    const replay = (await raw(EMAIL)) as { status: number; body: Record<string, unknown> };
    assert.equal(replay.status, 403);
    assert.equal(replay.body.reason, "call_token_used");

    // Other arguments through the helper need their own approval; the human denies it.
    const [denied] = await Promise.all([
      client.callTool({ name: "send_email", arguments: { ...EMAIL, to: "mallory@example.test" } }).then(
        () => undefined,
        (error: unknown) => error,
      ),
      decideNext(task, "deny", (approval) => {
        assert.deepEqual((approval.call as { arguments: unknown }).arguments, {
          ...EMAIL,
          to: "mallory@example.test",
        });
      }),
    ]);
    assert.ok(denied instanceof CountersignApprovalError, String(denied));
    assert.equal(denied.code, "approval_denied");
    // The task's own approval stands: tools that need no per-call approval still work.
    assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "still here" } }), {
      content: [{ type: "text", text: "echo: still here" }],
    });
  });

  test("revoke: the next call is refused (the gateway's revocation stream) and no new approval is asked for", async () => {
    const task = "revoke: echo until stopped";
    const helper = agent(task);
    const [client, id] = await Promise.all([connect(helper), decideNext(task, "approve")]);
    assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "1" } }), {
      content: [{ type: "text", text: "echo: 1" }],
    });
    const revoked = await api(`/approvals/${id}/revoke`, "POST", { reason: "enough" });
    assert.equal(revoked.status, 200);
    // The gateway learns of the revocation from the STS's stream: a bounded wait (at least 10 s, for the
    // run; not a latency bound).
    let refusal: unknown;
    for (let i = 0; i < 1000 && refusal === undefined; i++) {
      refusal = await client.callTool({ name: "echo", arguments: { text: "again" } }).then(
        () => undefined,
        (error: unknown) => error,
      );
      if (refusal === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(refusal instanceof CountersignApprovalError, String(refusal));
    assert.equal(refusal.code, "approval_revoked");
    // Sticky: later calls fail the same way without asking the human again.
    const later = await client.callTool({ name: "echo", arguments: { text: "later" } }).then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.ok(later instanceof CountersignApprovalError);
    assert.equal(later.code, "approval_revoked");
    assert.deepEqual(await pending(), []);
  });

  test("429: the helper waits for Retry-After and retries", async () => {
    const port = await freePort();
    const limited = await startMcpGateway({
      port,
      upstream: upstream.url,
      resource,
      issuer: sts.url,
      publicOrigin: resource,
      policy: POLICY,
      verifier: { rateLimit: { perSecond: 1, burst: 1 } },
    });
    try {
      const task = "rate: echo slowly";
      const seen: Seen[] = [];
      // Another gateway (another port) for the same resource: the helper talks to it, tokens name the resource.
      const server = `http://127.0.0.1:${port}/mcp`;
      const helper = agent(task, { server, resource }, seen);
      const [client] = await Promise.all([connect(helper, server), decideNext(task, "approve")]);
      assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "slow" } }), {
        content: [{ type: "text", text: "echo: slow" }],
      });
      assert.ok(
        seen.some((request) => request.status === 429),
        "the gateway answered 429 at least once",
      );
    } finally {
      await limited.close();
    }
  });
});
