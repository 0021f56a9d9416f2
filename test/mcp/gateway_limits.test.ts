import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
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

  test("open exchanges are capped per client and in all (429 + Retry-After); a closed stream frees its slot", async () => {
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
      assert.equal(full.statusCode, 429);
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

  test("a refused token is answered before its body arrives: 401 with Connection: close, the body is never awaited", async () => {
    const upstream = await holdingUpstream();
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
      for (const [authorization, reason] of [
        [undefined, "missing_token"],
        ["Bearer not-a-jwt", "malformed_token"],
      ] as const) {
        const expected = await complete(authorization);
        assert.equal(expected.status, 401);
        assert.equal(expected.body.reason, reason);

        // 500,000 bytes announced (under max_body_bytes), 16 sent, the body left open.
        const req = request(url, {
          method: "POST",
          agent: false,
          headers: {
            "content-type": "application/json",
            "content-length": "500000",
            ...(authorization ? { authorization } : {}),
          },
        });
        req.on("error", () => undefined);
        req.write('{"jsonrpc":"2.0"');
        const [response] = (await once(req, "response")) as [IncomingMessage];
        assert.equal(req.writableEnded, false, "the request body is still open");
        assert.equal(response.statusCode, 401);
        assert.equal(response.headers.connection, "close");
        assert.equal(response.headers["www-authenticate"], expected.challenge);
        assert.deepEqual(await jsonOf(response), expected.body);
        // The gateway ends the connection although the body was never finished.
        if (!req.socket?.destroyed) await once(req.socket as NonNullable<typeof req.socket>, "close");
        assert.equal(upstream.state.gets, 0);
      }
    } finally {
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
