/**
 * `npm run demo:mcp`: an MCP agent behind Countersign, in one terminal.
 *
 * Starts the STS in-process on the embedded database (PGlite, in a temporary data directory), a small
 * MCP server (the official SDK) and the MCP gateway in front of it, then narrates: the agent (the SDK
 * client with `@countersign/mcp-client`) asks for a task, a human approves it, the agent calls a tool
 * the approval does not name and steps up, a per-call approval lets one email with exact arguments
 * through once, and a revocation stops the agent without it asking again. Exits 0 when every step ends
 * as expected, 1 otherwise. Everything listens on 127.0.0.1 on free ports and is removed at the end.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type net from "node:net";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { type RunningMcpGateway, startMcpGateway } from "../../gateway-verifier/src/index.js";
import { CountersignApprovalError, createCountersignAgent } from "../../mcp-client/src/index.js";
import {
  createNarrator,
  type DemoOptions,
  type DemoSts,
  freePort,
  LogBuffer,
  runWhenMain,
  sleep,
  startDemoSts,
} from "../demo_harness.js";

const AGENT = "mail-agent";
const EMAIL = { to: "bob@example.test", body: "Q1 revenue: 42" };

/** The MCP server behind the gateway: stateless Streamable HTTP, two tools. */
async function startMailServer(): Promise<{ url: string; sent: string[]; close(): Promise<void> }> {
  const sent: string[] = [];
  const server: Server = createServer((req, res) => {
    const mcp = new McpServer({ name: "mail", version: "1.0.0" });
    mcp.registerTool(
      "search",
      { description: "searches the reports", inputSchema: { q: z.string() } },
      async ({ q }) => ({
        content: [{ type: "text", text: `1 report matches "${q}"` }],
      }),
    );
    mcp.registerTool(
      "send_email",
      { description: "sends an email", inputSchema: { to: z.string(), body: z.string() } },
      async ({ to }) => {
        sent.push(to);
        return { content: [{ type: "text", text: `sent to ${to}` }] };
      },
    );
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => {
      void transport.close();
      void mcp.close();
    });
    mcp.connect(transport).then(() => transport.handleRequest(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    sent,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Where the narration goes, and whether to colour it. */
export type McpDemoOptions = DemoOptions;

/** Runs the demo; resolves with true when every step ended as expected. */
export async function runMcpDemo(options: McpDemoOptions = {}): Promise<boolean> {
  const narrator = createNarrator(options);
  const { paint, line, say, step, expect } = narrator;

  const logs = new LogBuffer();
  const secret = randomBytes(24).toString("base64url");
  let sts: DemoSts | undefined;
  let gateway: RunningMcpGateway | undefined;
  let mail: Awaited<ReturnType<typeof startMailServer>> | undefined;
  const clients: Client[] = [];

  try {
    line(paint("1", "Countersign MCP demo: human approvals for an MCP agent, enforced at the MCP gateway"));
    const gatewayPort = await freePort();
    const resource = `http://127.0.0.1:${gatewayPort}/mcp`;
    sts = await startDemoSts({
      dataDirPrefix: "countersign-demo-mcp-",
      logs,
      config: {
        resources: [{ id: resource, scopes: ["tools:read", "mail:send"], max_ttl_seconds: 300 }],
        clients: [
          { client_id: AGENT, client_secret: secret, token_endpoint_auth_method: "client_secret_basic" },
        ],
        trusted_issuers: [],
        dev_mode: true,
        revocations: { poll_interval_seconds: 0.25 },
      },
    });
    const { url: stsUrl, devIssuer } = sts;
    mail = await startMailServer();
    gateway = await startMcpGateway({
      port: gatewayPort,
      upstream: mail.url,
      resource,
      issuer: stsUrl,
      policy: { default_scopes: ["tools:read"], tools: { send_email: ["mail:send"] } },
      verifier: { revocation: { url: `${stsUrl}/revocations`, stream: true } },
    });
    await gateway.gateway.ready();
    say(`STS ${stsUrl}, MCP server ${mail.url}, MCP gateway ${resource}`);

    // ---- the human (carol) at the approval API -----------------------------------------------
    const approverToken = await devIssuer.mint({ sub: "carol", usage: "approver" });
    const api = async (route: string, method = "GET", body?: unknown) => {
      const response = await fetch(`${stsUrl}${route}`, {
        method,
        headers: {
          authorization: `Bearer ${approverToken}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const pending = async () =>
      (await api("/approvals?status=pending")).body.approvals as Record<string, unknown>[];
    /** carol decides on the next pending request, after reading it. */
    const carol = async (decision: "approve" | "deny"): Promise<Record<string, unknown>> => {
      for (let i = 0; i < 400; i++) {
        const next = (await pending())[0];
        if (next !== undefined) {
          const named = [
            `scope "${String(next.scope)}"`,
            next.tools ? `tools ${JSON.stringify(next.tools)}` : "any tool",
            next.call ? `the one call ${JSON.stringify(next.call)}` : "",
          ].filter(Boolean);
          say(`carol reads the request ${String(next.id)}: ${named.join(", ")}`);
          await api(`/approvals/${String(next.id)}/${decision}`, "POST", {});
          say(`carol → ${decision}`);
          return next;
        }
        await sleep(25);
      }
      throw new Error("no request reached carol");
    };

    const agentOptions = {
      issuer: stsUrl,
      server: resource,
      clientId: AGENT,
      clientSecret: secret,
      subjectToken: () => devIssuer.mint({ sub: "alice", usage: "subject" }),
      task: "Send the Q1 report to Bob",
      subject: "alice",
      scope: ["tools:read"],
      approvalWait: { initialDelayMs: 25, maxDelayMs: 200, maxWaitMs: 30_000 },
    };
    const connect = async (agent: ReturnType<typeof createCountersignAgent>) => {
      const client = new Client({ name: AGENT, version: "1.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(resource), {
          fetch: agent.fetch,
          authProvider: agent.provider,
        }),
      );
      clients.push(client);
      return client;
    };
    const textOf = (result: unknown) =>
      ((result as { content?: { text?: string }[] }).content?.[0]?.text ?? JSON.stringify(result)) as string;

    // ---- 1. connect under a first approval ----------------------------------------------------
    step("The agent connects: it asks for a task, carol approves it");
    const agent = createCountersignAgent({ ...agentOptions, tools: ["search"] });
    const [client] = await Promise.all([connect(agent), carol("approve")]);
    const found = textOf(await client.callTool({ name: "search", arguments: { q: "Q1" } }));
    say(`search → ${found}`);
    expect("the approved tool answers", found === '1 report matches "Q1"', found);

    // ---- 2. step-up ----------------------------------------------------------------------------
    step("A tool the approval does not name: refused, the agent steps up, carol approves the union");
    const [sentResult] = await Promise.all([
      client.callTool({ name: "send_email", arguments: EMAIL }),
      (async () => {
        await carol("approve"); // tool_not_approved → the tools' union
        await carol("approve"); // insufficient_scope (mail:send) → the scopes' union
      })(),
    ]);
    say(`send_email → ${textOf(sentResult)}`);
    expect(
      "the email is sent after two step-ups",
      textOf(sentResult) === "sent to bob@example.test",
      textOf(sentResult),
    );

    // ---- 3. per-call approval --------------------------------------------------------------------
    step("A per-call approval: carol sees the exact arguments; the token is good for that one call");
    let callToken: string | undefined;
    const perCall = createCountersignAgent({
      ...agentOptions,
      scope: ["tools:read", "mail:send"],
      perCallTools: ["send_email"],
      fetch: async (url, init) => {
        if (typeof init?.body === "string" && init.body.includes('"tools/call"')) {
          callToken = new Headers(init.headers).get("authorization") ?? undefined;
        }
        return fetch(url, init);
      },
    });
    const [perCallClient] = await Promise.all([connect(perCall), carol("approve")]);
    const [once] = await Promise.all([
      perCallClient.callTool({ name: "send_email", arguments: EMAIL }),
      carol("approve"),
    ]);
    say(`send_email → ${textOf(once)}`);
    expect("the exact call passes", textOf(once) === "sent to bob@example.test", textOf(once));
    const replay = async (args: Record<string, unknown>) => {
      const response = await fetch(resource, {
        method: "POST",
        headers: {
          authorization: callToken ?? "",
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: { name: "send_email", arguments: args },
        }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const other = await replay({ ...EMAIL, to: "mallory@example.test" });
    say(`the same token, other arguments → HTTP ${other.status} reason=${String(other.body.reason)}`);
    expect(
      "HTTP 403 call_arguments_mismatch",
      other.status === 403 && other.body.reason === "call_arguments_mismatch",
      JSON.stringify(other),
    );
    const again = await replay(EMAIL);
    say(`the same token, the same call again → HTTP ${again.status} reason=${String(again.body.reason)}`);
    expect(
      "HTTP 403 call_token_used",
      again.status === 403 && again.body.reason === "call_token_used",
      JSON.stringify(again),
    );

    // ---- 4. revoke -------------------------------------------------------------------------------
    step("carol revokes the task: the next call is refused and the agent does not ask again");
    const approvalId = agent.approvalId ?? "";
    const revoked = await api(`/approvals/${approvalId}/revoke`, "POST", { reason: "done for today" });
    say(`carol → POST /approvals/${approvalId}/revoke → HTTP ${revoked.status}`);
    let refusal: unknown;
    for (let i = 0; i < 100 && refusal === undefined; i++) {
      refusal = await client.callTool({ name: "search", arguments: { q: "Q2" } }).then(
        () => undefined,
        (error: unknown) => error,
      );
      if (refusal === undefined) await sleep(20);
    }
    const code = refusal instanceof CountersignApprovalError ? refusal.code : String(refusal);
    say(`search → ${code}`);
    expect("approval_revoked", code === "approval_revoked", code);
    const left = await pending();
    expect("no new request for carol", left.length === 0, `${left.length} pending`);
  } catch (error) {
    narrator.fail(`the demo stopped: ${(error as Error).stack ?? String(error)}`);
  } finally {
    for (const client of clients) await client.close().catch(() => undefined);
    await gateway?.close();
    await mail?.close();
    await sts?.stop();
  }
  return narrator.finish(logs);
}

runWhenMain(import.meta.url, () => runMcpDemo());
