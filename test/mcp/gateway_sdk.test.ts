import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  discoverOAuthServerInfo,
  extractWWWAuthenticateParams,
} from "@modelcontextprotocol/sdk/client/auth.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { decodeJwt } from "jose";
import { type RunningMcpGateway, startMcpGateway } from "../../gateway-verifier/src/index.js";
import { baseConfig, freePort, startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";
import { LARGE_RESULT_CHARS, PNG_1X1, startUpstream, type Upstream } from "./upstream.js";

const SCOPES = ["tools:read", "mail:send", "files:read", "prompts:read"];
const DPOP_ALGS = "ES256 ES384 EdDSA Ed25519 PS256 RS256";

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text === "" ? {} : JSON.parse(text) };
}

const call = (id: number, name: string, args: Record<string, unknown> = {}) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name, arguments: args },
});

for (const engine of testEngines()) {
  describe(`MCP gateway in front of an SDK McpServer, with a real STS (${engine})`, () => {
    let sts: TestApp;
    let upstream: Upstream;
    let gateway: RunningMcpGateway;
    let resource: string;
    /** A second upstream answering JSON (`enableJsonResponse`) behind its own gateway and resource. */
    let jsonUpstream: Upstream;
    let jsonGateway: RunningMcpGateway;
    let jsonResource: string;
    let metadataUrl: string;
    const clients: Client[] = [];

    /** A token for `resource` minted by token exchange under a fresh approval of `scope`. */
    async function mint(
      scope: string,
      options: { clientId?: string; tools?: string[]; resources?: string[]; resource?: string } = {},
    ): Promise<string> {
      const clientId = options.clientId ?? "billing-agent";
      const audience = options.resource ?? resource;
      // The approval names the tools and resources; the STS writes them into the token's agent_task.
      const approvalId = await insertApproval(sts.handle.db, {
        resource: audience,
        scope,
        client_id: clientId,
        tools: options.tools ?? null,
        resources: options.resources ?? null,
      });
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const minted = await exchange(
        sts.url,
        { subject_token: subjectToken, authorization_details: agentTask(approvalId), resource: audience },
        { id: clientId, secret: TEST_SECRET },
      );
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      const token = minted.body.access_token as string;
      const [task] = decodeJwt(token).authorization_details as Record<string, unknown>[];
      assert.deepEqual(task?.tools, options.tools);
      assert.deepEqual(task?.resources, options.resources);
      return token;
    }

    async function connect(url: string, token?: string): Promise<Client> {
      const client = new Client({ name: "test-agent", version: "1.0.0" });
      const transport = new StreamableHTTPClientTransport(new URL(url), {
        requestInit: token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } },
      });
      await client.connect(transport);
      clients.push(client);
      return client;
    }

    before(async () => {
      upstream = await startUpstream();
      jsonUpstream = await startUpstream({ json: true });
      const jsonPort = await freePort();
      jsonResource = `http://127.0.0.1:${jsonPort}/mcp`;
      const port = await freePort();
      resource = `http://127.0.0.1:${port}/mcp`;
      metadataUrl = `http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`;
      const config = baseConfig();
      sts = await startTestApp({
        engine,
        config: {
          ...config,
          resources: [
            ...(config.resources as unknown[]),
            { id: resource, scopes: SCOPES },
            { id: jsonResource, scopes: SCOPES },
          ],
          clients: [
            ...(config.clients as unknown[]),
            {
              client_id: "other-agent",
              client_secret: TEST_SECRET,
              token_endpoint_auth_method: "client_secret_basic",
            },
          ],
        },
      });
      gateway = await startMcpGateway({
        port,
        upstream: upstream.url,
        resource,
        issuer: sts.url,
        policy: {
          default_scopes: ["tools:read"],
          tools: { send_email: ["mail:send"] },
          resources: { "file:///reports/q1.txt": ["files:read"] },
          prompts: { summarize: ["prompts:read"] },
        },
      });
      jsonGateway = await startMcpGateway({
        port: jsonPort,
        upstream: jsonUpstream.url,
        resource: jsonResource,
        issuer: sts.url,
        policy: { default_scopes: ["tools:read"] },
      });
    });

    after(async () => {
      for (const client of clients) await client.close();
      await gateway.close();
      await upstream.close();
      await jsonGateway.close();
      await jsonUpstream.close();
      await sts.stop();
    });

    test("without a token: 401 with the exact challenge; the SDK discovers the metadata and the STS", async () => {
      const initialize = {
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } },
      };
      const before = upstream.requests.length;
      const reply = await fetch(resource, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify(initialize),
      });
      assert.equal(reply.status, 401);
      assert.equal(
        reply.headers.get("www-authenticate"),
        `Bearer resource_metadata="${metadataUrl}", scope="tools:read", DPoP algs="${DPOP_ALGS}"`,
      );
      assert.deepEqual(await reply.json(), {
        error: "invalid_token",
        error_description: "An access token is required",
        reason: "missing_token",
      });
      const params = extractWWWAuthenticateParams(reply);
      assert.equal(params.resourceMetadataUrl?.href, metadataUrl);
      assert.equal(params.scope, "tools:read");

      const expected = {
        resource,
        authorization_servers: [sts.url],
        scopes_supported: ["tools:read"],
        bearer_methods_supported: ["header"],
        dpop_signing_alg_values_supported: DPOP_ALGS.split(" "),
        dpop_bound_access_tokens_required: false,
      };
      const info = await discoverOAuthServerInfo(new URL(resource), {
        resourceMetadataUrl: params.resourceMetadataUrl,
      });
      assert.deepEqual(info.resourceMetadata, expected);
      assert.equal(info.authorizationServerUrl, sts.url);
      assert.equal(info.authorizationServerMetadata?.issuer, sts.url);
      // Without resource_metadata the SDK finds the path-suffixed document on its own; the root serves it too.
      assert.deepEqual((await discoverOAuthServerInfo(new URL(resource))).resourceMetadata, expected);
      const root = await fetch(new URL("/.well-known/oauth-protected-resource", resource));
      assert.equal(root.status, 200);
      assert.deepEqual(await root.json(), expected);

      await assert.rejects(connect(resource), (error: Error & { code?: number }) => error.code === 401);
      assert.equal(upstream.requests.length, before, "nothing reached the upstream");
    });

    test("tools/list and an allowed tool call succeed; the upstream never sees the agent's token", async () => {
      const token = await mint("tools:read");
      const from = upstream.requests.length;
      const client = await connect(resource, token);
      const { tools } = await client.listTools();
      assert.deepEqual(
        tools.map((tool) => tool.name),
        ["echo", "image", "progress", "hold", "fail", "large", "send_email"],
      );
      assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "hi" } }), {
        content: [{ type: "text", text: "echo: hi" }],
      });
      const seen = upstream.requests.slice(from);
      assert.ok(seen.length >= 3, `upstream saw ${seen.length} requests`);
      for (const headers of seen) {
        assert.equal(headers.authorization, undefined);
        assert.equal(headers.dpop, undefined);
        assert.ok(!JSON.stringify(headers).includes(token.split(".")[2] as string));
      }
    });

    test("a tool needing a scope the token lacks: 403 insufficient_scope listing every scope the call needs", async () => {
      const narrow = await mint("tools:read");
      const client = await connect(resource, narrow);
      await assert.rejects(
        client.callTool({ name: "send_email", arguments: { to: "bob@example.test", body: "hi" } }),
        (error: Error & { code?: number }) =>
          error.code === 403 && error.message.includes('"reason":"insufficient_scope"'),
      );
      const reply = await post(resource, call(5, "send_email", { to: "bob@example.test", body: "hi" }), {
        authorization: `Bearer ${narrow}`,
      });
      assert.equal(reply.status, 403);
      assert.equal(
        reply.headers.get("www-authenticate"),
        `Bearer error="insufficient_scope", error_description="The token lacks a scope this request requires", ` +
          `scope="tools:read mail:send", resource_metadata="${metadataUrl}"`,
      );
      assert.deepEqual(reply.body, {
        error: "insufficient_scope",
        error_description: "The token lacks a scope this request requires",
        reason: "insufficient_scope",
      });
      // Stepped up under a new approval with the challenged scopes, the same call goes through.
      const wide = await connect(resource, await mint("tools:read mail:send"));
      assert.deepEqual(
        await wide.callTool({ name: "send_email", arguments: { to: "bob@example.test", body: "hi" } }),
        { content: [{ type: "text", text: "sent to bob@example.test" }] },
      );
    });

    test("a tool, or resource, outside the approval's lists: 403 tool_not_approved / resource_not_approved", async () => {
      const token = await mint("tools:read mail:send files:read", {
        tools: ["echo"],
        resources: ["file:///reports/q1.txt"],
      });
      const client = await connect(resource, token);
      assert.deepEqual(await client.callTool({ name: "echo", arguments: { text: "ok" } }), {
        content: [{ type: "text", text: "echo: ok" }],
      });
      const read = await client.readResource({ uri: "file:///reports/q1.txt" });
      assert.deepEqual(read.contents, [
        { uri: "file:///reports/q1.txt", mimeType: "text/plain", text: "Q1 revenue: 42" },
      ]);
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
      const reply = await post(resource, call(9, "send_email", { to: "x", body: "y" }), {
        authorization: `Bearer ${token}`,
      });
      assert.equal(reply.status, 403);
      assert.equal(
        reply.headers.get("www-authenticate"),
        null,
        "a new token with more scopes would not help",
      );
      assert.deepEqual(reply.body, {
        error: "access_denied",
        error_description: "The approval does not include this tool",
        reason: "tool_not_approved",
      });
      // A 2025-03-26 batch is refused whole when any element is refused.
      const batch = await post(
        resource,
        [call(1, "echo", { text: "a" }), call(2, "send_email", { to: "x", body: "y" })],
        {
          authorization: `Bearer ${token}`,
        },
      );
      assert.equal(batch.status, 403);
      assert.equal(batch.body.reason, "tool_not_approved");
    });

    test("Mcp-Method / Mcp-Name that disagree with the body: 400 with JSON-RPC error -32020", async () => {
      const token = await mint("tools:read mail:send");
      const before = upstream.requests.length;
      const name = await post(resource, call(7, "send_email", { to: "x", body: "y" }), {
        authorization: `Bearer ${token}`,
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "echo",
      });
      assert.equal(name.status, 400);
      assert.deepEqual(name.body, {
        jsonrpc: "2.0",
        id: 7,
        error: {
          code: -32020,
          message: "Header mismatch: Mcp-Name does not match the request body",
          data: { reason: "mcp_name_mismatch" },
        },
      });
      const method = await post(resource, call(8, "echo", { text: "x" }), {
        authorization: `Bearer ${token}`,
        "mcp-method": "tools/list",
      });
      assert.equal(method.status, 400);
      assert.deepEqual(method.body.error, {
        code: -32020,
        message: "Header mismatch: Mcp-Method does not match the request body",
        data: { reason: "mcp_method_mismatch" },
      });
      const missing = await post(resource, call(9, "echo", { text: "x" }), {
        authorization: `Bearer ${token}`,
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
      });
      assert.equal(missing.status, 400);
      assert.equal((missing.body.error as { data: { reason: string } }).data.reason, "mcp_header_missing");
      assert.equal(upstream.requests.length, before, "nothing reached the upstream");
    });

    for (const mode of ["SSE", "JSON"] as const) {
      test(`${mode} responses: text, image, progress, tool errors and large results come through exactly as from the upstream`, async () => {
        const [origin, front] = mode === "SSE" ? [upstream, resource] : [jsonUpstream, jsonResource];
        const token = await mint("tools:read", { resource: front });
        const direct = await connect(origin.url);
        const gated = await connect(front, token);
        const run = async (client: Client) => {
          const progress: unknown[] = [];
          const results = [
            await client.callTool({ name: "echo", arguments: { text: "héllo ✓" } }),
            await client.callTool({ name: "image", arguments: {} }),
            await client.callTool({ name: "progress", arguments: { steps: 4 } }, undefined, {
              onprogress: (p) => progress.push(p),
            }),
            await client.callTool({ name: "fail", arguments: {} }),
            await client.callTool({ name: "large", arguments: {} }),
            await client.readResource({ uri: "file:///reports/q2.txt" }),
          ];
          return { results, progress };
        };
        const viaUpstream = await run(direct);
        const viaGateway = await run(gated);
        assert.deepEqual(viaGateway, viaUpstream);
        // And they are what the upstream produced (not two equal failures).
        assert.deepEqual(viaGateway.results[1], {
          content: [
            { type: "text", text: "a pixel" },
            { type: "image", data: PNG_1X1, mimeType: "image/png" },
          ],
        });
        // A JSON response has no stream to carry notifications: the SDK server drops them.
        assert.equal(viaGateway.progress.length, mode === "SSE" ? 4 : 0);
        assert.deepEqual(viaGateway.results[3], {
          isError: true,
          content: [{ type: "text", text: "the mailbox is full" }],
        });
        const large = viaGateway.results[4] as { content: { text: string }[] };
        assert.equal(large.content[0]?.text.length, LARGE_RESULT_CHARS);
      });
    }

    // The timeout only turns a buffering gateway's deadlock into a failure; nothing here is timed.
    test("SSE is streamed, not buffered: a progress notification arrives while the tool still runs", {
      timeout: 30_000,
    }, async () => {
      const client = await connect(resource, await mint("tools:read"));
      const result = client.callTool({ name: "hold", arguments: {} }, undefined, {
        onprogress: (p) => {
          assert.equal(p.message, "started");
          // The tool finishes only once the client has seen its first notification through the gateway.
          upstream.release();
        },
      });
      assert.deepEqual(await result, { content: [{ type: "text", text: "released" }] });
    });

    test("a session is bound to the client that opened it: another client gets 403, an unknown id 404", async () => {
      const owner = await connect(resource, await mint("tools:read"));
      const sessionId = (owner.transport as StreamableHTTPClientTransport).sessionId;
      assert.ok(sessionId);
      const intruder = await mint("tools:read", { clientId: "other-agent" });
      const before = upstream.requests.length;
      const stolen = await post(resource, call(3, "echo", { text: "x" }), {
        authorization: `Bearer ${intruder}`,
        "mcp-session-id": sessionId,
        "mcp-protocol-version": "2025-06-18",
      });
      assert.equal(stolen.status, 403);
      assert.deepEqual(stolen.body, {
        error: "access_denied",
        error_description: "The session belongs to another client",
        reason: "session_client_mismatch",
      });
      const unknown = await post(resource, call(4, "echo", { text: "x" }), {
        authorization: `Bearer ${intruder}`,
        "mcp-session-id": "not-a-session-this-gateway-opened",
      });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.reason, "session_not_found");
      assert.equal(upstream.requests.length, before, "nothing reached the upstream");
      // The owner still uses it, and DELETE ends it at the gateway too.
      assert.deepEqual(await owner.callTool({ name: "echo", arguments: { text: "mine" } }), {
        content: [{ type: "text", text: "echo: mine" }],
      });
      await (owner.transport as StreamableHTTPClientTransport).terminateSession();
      const after = await post(resource, call(5, "echo", { text: "x" }), {
        authorization: `Bearer ${await mint("tools:read")}`,
        "mcp-session-id": sessionId,
      });
      assert.equal(after.status, 404);
      assert.equal(after.body.reason, "session_not_found");
    });

    test("a 2025-03-26 batch whose every element is allowed goes through as one request", async () => {
      const auth = { authorization: `Bearer ${await mint("tools:read")}` };
      const init = await fetch(resource, {
        method: "POST",
        headers: {
          ...auth,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 0,
          method: "initialize",
          params: {
            protocolVersion: "2025-03-26",
            capabilities: {},
            clientInfo: { name: "old", version: "1" },
          },
        }),
      });
      await init.text();
      const session = init.headers.get("mcp-session-id");
      assert.equal(init.status, 200);
      assert.ok(session);
      const headers = { ...auth, "mcp-session-id": session, "mcp-protocol-version": "2025-03-26" };
      assert.equal(
        (await post(resource, { jsonrpc: "2.0", method: "notifications/initialized" }, headers)).status,
        202,
      );
      const response = await fetch(resource, {
        method: "POST",
        headers: {
          ...headers,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify([call(1, "echo", { text: "a" }), call(2, "echo", { text: "b" })]),
      });
      assert.equal(response.status, 200);
      const events = (await response.text())
        .split("\n")
        .filter((line) => line.startsWith("data: "))
        .map((line) => JSON.parse(line.slice(6)) as { id: number; result: unknown });
      assert.deepEqual(
        events.sort((x, y) => x.id - y.id),
        [
          { jsonrpc: "2.0", id: 1, result: { content: [{ type: "text", text: "echo: a" }] } },
          { jsonrpc: "2.0", id: 2, result: { content: [{ type: "text", text: "echo: b" }] } },
        ],
      );
    });

    test("bodies are bounded: more than 1 MiB is refused 413 before the upstream", async () => {
      const token = await mint("tools:read");
      const before = upstream.requests.length;
      const reply = await post(resource, call(1, "echo", { text: "x".repeat(1_048_576) }), {
        authorization: `Bearer ${token}`,
      });
      assert.equal(reply.status, 413);
      assert.deepEqual(reply.body, {
        error: "invalid_request",
        error_description: "The request body is too large",
        reason: "body_too_large",
      });
      assert.equal(upstream.requests.length, before);
    });
  });
}
