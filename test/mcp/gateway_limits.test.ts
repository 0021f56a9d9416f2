import assert from "node:assert/strict";
import { once } from "node:events";
import { Agent, createServer, type IncomingMessage, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type McpGatewayServerOptions,
  type RunningMcpGateway,
  startMcpGateway,
} from "../../gateway-verifier/src/index.js";
import {
  accessTokenClaims,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  type SigningKey,
} from "../gateway-verifier/helpers.js";
import { startUpstream, type Upstream } from "./upstream.js";

const RESOURCE = "https://tools.example.test/mcp";

/**
 * A stand-in MCP server whose `GET` SSE stream never ends (it sends one comment, then holds). Counts
 * the GETs received and those still open, and lets a test wait until `open` reaches a value.
 */
async function holdingUpstream() {
  const state = { gets: 0, open: 0 };
  const waiters: { open: number; resolve: () => void }[] = [];
  const settle = () => {
    for (const waiter of waiters.splice(0)) {
      if (state.open === waiter.open) waiter.resolve();
      else waiters.push(waiter);
    }
  };
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET") {
      res.writeHead(405).end();
      return;
    }
    state.gets++;
    state.open++;
    settle();
    req.socket.once("close", () => {
      state.open--;
      settle();
    });
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    res.write(": open\n\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    state,
    /** Resolves when exactly `open` upstream streams are open. */
    openIs: (open: number) =>
      new Promise<void>((resolve) => {
        waiters.push({ open, resolve });
        settle();
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Opens `GET /mcp` as an SSE stream on its own connection; resolves with the response headers. */
function openStream(url: string, token: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: "GET",
      agent: false,
      headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
    });
    req.on("response", resolve);
    req.on("error", reject);
    req.end();
  });
}

async function jsonOf(response: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString());
}

describe("MCP gateway bounds (static keys, frozen clock)", () => {
  let key: SigningKey;
  const running: RunningMcpGateway[] = [];

  const token = (clientId: string) =>
    mintToken(key, accessTokenClaims(NOW, { aud: RESOURCE, scope: "tools:read", client_id: clientId }));

  async function start(
    upstream: string,
    overrides: Partial<McpGatewayServerOptions> = {},
  ): Promise<RunningMcpGateway> {
    const gateway = await startMcpGateway({
      upstream,
      resource: RESOURCE,
      issuer: ISSUER,
      verifier: { jwks: { keys: [key.publicJwk] }, rateLimit: false },
      now: () => NOW_MS,
      ...overrides,
    });
    running.push(gateway);
    return gateway;
  }

  before(async () => {
    key = await generateSigningKey("k1");
  });
  after(async () => {
    for (const gateway of running) await gateway.close();
  });

  test("open exchanges are capped per client (429) and in all (503), with Retry-After; a closed stream frees its slot", async () => {
    const upstream = await holdingUpstream();
    const streams: IncomingMessage[] = [];
    try {
      const gateway = await start(upstream.url, { maxOpenExchangesPerClient: 3, maxOpenExchanges: 5 });
      const url = `${gateway.url}/mcp`;
      const [a, b, c] = [await token("agent-a"), await token("agent-b"), await token("agent-c")];

      // Agent A opens 3 + 2 streams that never end: 3 reach the upstream, 2 are refused.
      const opened: IncomingMessage[] = [];
      for (let i = 0; i < 5; i++) opened.push(await openStream(url, a));
      const served = opened.filter((response) => response.statusCode === 200);
      const refused = opened.filter((response) => response.statusCode !== 200);
      streams.push(...served);
      assert.equal(served.length, 3);
      assert.equal(refused.length, 2);
      for (const response of refused) {
        assert.equal(response.statusCode, 429);
        assert.equal(response.headers["retry-after"], "1");
        assert.deepEqual(await jsonOf(response), {
          error: "rate_limited",
          error_description: "Too many open requests for this client",
          reason: "client_exchange_limit",
        });
      }
      await upstream.openIs(3);
      assert.equal(upstream.state.gets, 3, "only the capped streams reached the upstream");

      // Agent B is still served, up to the gateway's total of 5; then agent C is refused.
      for (let i = 0; i < 2; i++) {
        const response = await openStream(url, b);
        assert.equal(response.statusCode, 200);
        streams.push(response);
      }
      const full = await openStream(url, c);
      assert.equal(full.statusCode, 503);
      assert.equal(full.headers["retry-after"], "1");
      assert.deepEqual(await jsonOf(full), {
        error: "temporarily_unavailable",
        error_description: "Too many open requests at this gateway",
        reason: "gateway_exchange_limit",
      });
      await upstream.openIs(5);
      assert.equal(upstream.state.gets, 5);

      // Closing one of A's streams ends its upstream stream and frees its slot.
      (streams.shift() as IncomingMessage).destroy();
      await upstream.openIs(4);
      const again = await openStream(url, a);
      assert.equal(again.statusCode, 200);
      streams.push(again);
      await upstream.openIs(5);
      assert.equal(upstream.state.gets, 6);
      const still = await openStream(url, a);
      assert.equal(still.statusCode, 429);
      assert.equal((await jsonOf(still)).reason, "client_exchange_limit");
    } finally {
      for (const stream of streams) stream.destroy();
      await upstream.close();
    }
  });

  test("the listening server bounds its connections: maxConnections, 4096 by default", async () => {
    const upstream = await holdingUpstream();
    try {
      assert.equal((await start(upstream.url)).server.maxConnections, 4096);
      assert.equal((await start(upstream.url, { maxConnections: 64 })).server.maxConnections, 64);
    } finally {
      await upstream.close();
    }
  });

  test("a refused token is answered before its body arrives (401, no Connection: close); the rest is discarded and the connection serves the next request", async () => {
    const upstream = await holdingUpstream();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const gateway = await start(upstream.url, { bodyTimeoutMs: 10_000 });
      const url = `${gateway.url}/mcp`;
      // Today's answers to the same requests with a complete body.
      const complete = async (authorization: string | undefined) => {
        const response = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
          body: "{}",
        });
        return {
          status: response.status,
          challenge: response.headers.get("www-authenticate"),
          body: (await response.json()) as Record<string, unknown>,
        };
      };
      const expected = {
        missing: await complete(undefined),
        malformed: await complete("Bearer not-a-jwt"),
      };
      assert.equal(expected.missing.status, 401);
      assert.equal(expected.missing.body.reason, "missing_token");
      assert.equal(expected.malformed.status, 401);
      assert.equal(expected.malformed.body.reason, "malformed_token");

      let connections = 0;
      gateway.server.on("connection", () => connections++);
      const post = (authorization: string | undefined, length: number) => {
        const req = request(url, {
          method: "POST",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": String(length),
            ...(authorization ? { authorization } : {}),
          },
        });
        req.on("error", () => undefined);
        return req;
      };

      // 500,000 bytes announced (under max_body_bytes), 16 sent, the body left open.
      const first = post("Bearer not-a-jwt", 500_000);
      const head = '{"jsonrpc":"2.0"';
      first.write(head);
      const [response] = (await once(first, "response")) as [IncomingMessage];
      assert.equal(first.writableEnded, false, "the request body is still open: nothing was awaited");
      assert.equal(response.statusCode, 401);
      assert.equal(response.headers.connection, "keep-alive");
      assert.equal(response.headers["www-authenticate"], expected.malformed.challenge);
      assert.deepEqual(await jsonOf(response), expected.malformed.body);
      const firstSocket = first.socket;
      const firstPort = firstSocket?.localPort;

      // The rest of the declared body is sent; the gateway discards it and keeps the connection: the
      // next request (queued by the one-socket agent until the first is done) is answered on it.
      first.end(Buffer.alloc(500_000 - head.length, 0x20));
      const second = post(undefined, 2);
      second.end("{}");
      const [answer] = (await once(second, "response")) as [IncomingMessage];
      assert.equal(second.socket, firstSocket, "the second request is sent on the first one's connection");
      assert.equal(second.socket?.localPort, firstPort);
      assert.equal(connections, 1);
      assert.equal(answer.statusCode, 401);
      assert.equal(answer.headers["www-authenticate"], expected.missing.challenge);
      assert.deepEqual(await jsonOf(answer), expected.missing.body);
      assert.equal(upstream.state.gets, 0);
    } finally {
      agent.destroy();
      await upstream.close();
    }
  });

  test("a refused token's discarded body is bounded: past max_body_bytes, or not ended within body_timeout_ms, the connection is closed after the 401", async () => {
    const upstream = await holdingUpstream();
    // A keep-alive client: the gateway, not the client's `Connection: close`, ends the connection.
    const agent = new Agent({ keepAlive: true });
    try {
      // A chunked body that goes on past max_body_bytes (1,024) after the 401.
      const bounded = await start(upstream.url, { maxBodyBytes: 1024, bodyTimeoutMs: 600_000 });
      const chunked = request(`${bounded.url}/mcp`, {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", authorization: "Bearer not-a-jwt" },
      });
      chunked.on("error", () => undefined);
      chunked.write('{"jsonrpc":"2.0"');
      const [response] = (await once(chunked, "response")) as [IncomingMessage];
      assert.equal(response.statusCode, 401);
      assert.equal(response.headers.connection, "keep-alive");
      assert.equal((await jsonOf(response)).reason, "malformed_token");
      const socket = chunked.socket as NonNullable<typeof chunked.socket>;
      assert.equal(socket.destroyed, false);
      const closed = new Promise((resolve) => socket.once("close", resolve));
      chunked.write(Buffer.alloc(2048, 0x20));
      await closed;
      assert.equal(chunked.writableEnded, false, "the gateway ended the connection, not the client");

      // A body under the bound that never ends: closed once body_timeout_ms has passed.
      const slow = await start(upstream.url, { bodyTimeoutMs: 1000 });
      slow.server.keepAliveTimeout = 0; // Only body_timeout_ms can end this connection.
      const open = request(`${slow.url}/mcp`, {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": "1000" },
      });
      open.on("error", () => undefined);
      open.write('{"jsonrpc":"2.0"');
      const [refused] = (await once(open, "response")) as [IncomingMessage];
      assert.equal(refused.statusCode, 401);
      assert.equal(refused.headers.connection, "keep-alive");
      assert.equal((await jsonOf(refused)).reason, "missing_token");
      const stalled = open.socket as NonNullable<typeof open.socket>;
      if (!stalled.destroyed) await new Promise((resolve) => stalled.once("close", resolve));
      assert.equal(open.writableEnded, false);
      assert.equal(upstream.state.gets, 0);
    } finally {
      agent.destroy();
      await upstream.close();
    }
  });

  test("session bindings are capped per client: 200 sessions of agent A keep 10, agent B's session still works", async () => {
    const upstream: Upstream = await startUpstream({ json: true });
    let client: Client | undefined;
    try {
      const gateway = await start(upstream.url, { sessions: { maxEntries: 100, maxPerClient: 10 } });
      const url = `${gateway.url}/mcp`;
      const [a, b] = [await token("agent-a"), await token("agent-b")];

      client = new Client({ name: "agent-b", version: "1.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(url), {
          requestInit: { headers: { authorization: `Bearer ${b}` } },
        }),
      );

      const post = async (body: unknown, session?: string) => {
        const response = await fetch(url, {
          method: "POST",
          headers: {
            authorization: `Bearer ${a}`,
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            ...(session ? { "mcp-session-id": session } : {}),
          },
          body: JSON.stringify(body),
        });
        return {
          status: response.status,
          session: response.headers.get("mcp-session-id"),
          body: (await response.json()) as Record<string, unknown>,
        };
      };
      const sessions: string[] = [];
      for (let i = 0; i < 200; i++) {
        const opened = await post({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-06-18",
            capabilities: {},
            clientInfo: { name: "agent-a", version: "1" },
          },
        });
        assert.equal(opened.status, 200);
        sessions.push(opened.session as string);
      }

      const echo = await client.callTool({ name: "echo", arguments: { text: "still here" } });
      assert.deepEqual(echo.content, [{ type: "text", text: "echo: still here" }]);

      const ping = { jsonrpc: "2.0", id: 2, method: "ping" };
      const kept: string[] = [];
      for (const session of sessions) {
        const answer = await post(ping, session);
        if (answer.status === 200) {
          kept.push(session);
        } else {
          assert.equal(answer.status, 404);
          assert.equal(answer.body.reason, "session_not_found");
        }
      }
      assert.deepEqual(kept, sessions.slice(-10), "agent A keeps its 10 most recent sessions");
    } finally {
      await client?.close();
      await upstream.close();
    }
  });
});
