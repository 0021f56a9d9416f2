import { randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

/** A 1×1 transparent PNG, base64. */
export const PNG_1X1 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/** Size of the `large` tool's text, in characters (more than one TCP window, less than the body bound). */
export const LARGE_RESULT_CHARS = 3 * 1024 * 1024;

/**
 * Builds the MCP server every test talks to: several tools, a resource and a prompt. `hold` sends one
 * progress notification, then waits until `released` resolves: a client that receives that
 * notification before the result proves the stream was not buffered.
 */
function buildServer(released: () => Promise<void>): McpServer {
  const server = new McpServer({ name: "upstream", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "echoes its text", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text: `echo: ${text}` }] }),
  );
  server.registerTool("image", { description: "returns an image" }, async () => ({
    content: [
      { type: "text", text: "a pixel" },
      { type: "image", data: PNG_1X1, mimeType: "image/png" },
    ],
  }));
  server.registerTool(
    "progress",
    { description: "reports progress", inputSchema: { steps: z.number().int().min(1).max(10) } },
    async ({ steps }, extra) => {
      const token = extra._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: steps, message: `step ${i}` },
          });
        }
      }
      return { content: [{ type: "text", text: `done in ${steps} steps` }] };
    },
  );
  server.registerTool("hold", { description: "progress, then waits for the test" }, async (extra) => {
    const token = extra._meta?.progressToken;
    if (token !== undefined) {
      await extra.sendNotification({
        method: "notifications/progress",
        params: { progressToken: token, progress: 1, total: 2, message: "started" },
      });
    }
    await released();
    return { content: [{ type: "text", text: "released" }] };
  });
  server.registerTool("fail", { description: "always fails" }, async () => ({
    isError: true,
    content: [{ type: "text", text: "the mailbox is full" }],
  }));
  server.registerTool("large", { description: "a large result" }, async () => ({
    content: [{ type: "text", text: "x".repeat(LARGE_RESULT_CHARS) }],
  }));
  server.registerTool(
    "send_email",
    { description: "sends an email", inputSchema: { to: z.string(), body: z.string() } },
    async ({ to }) => ({ content: [{ type: "text", text: `sent to ${to}` }] }),
  );
  server.registerResource("q1", "file:///reports/q1.txt", { mimeType: "text/plain" }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: "text/plain", text: "Q1 revenue: 42" }],
  }));
  server.registerResource("q2", "file:///reports/q2.txt", { mimeType: "text/plain" }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: "text/plain", text: "Q2 revenue: 43" }],
  }));
  server.registerPrompt(
    "summarize",
    { description: "summarize a text", argsSchema: { text: z.string() } },
    ({ text }) => ({ messages: [{ role: "user", content: { type: "text", text: `Summarize: ${text}` } }] }),
  );
  return server;
}

/** The upstream MCP server (official SDK, Streamable HTTP, stateful sessions) on 127.0.0.1. */
export interface Upstream {
  /** The MCP endpoint, e.g. `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  /** The headers of every HTTP request received, in order. */
  readonly requests: IncomingHttpHeaders[];
  /** Lets the pending (and next) `hold` call finish. */
  release(): void;
  close(): Promise<void>;
}

/**
 * Starts the upstream. `json`: answer requests with `application/json` instead of SSE
 * (`enableJsonResponse`), the other response mode of the transport.
 */
export async function startUpstream(options: { json?: boolean } = {}): Promise<Upstream> {
  const requests: IncomingHttpHeaders[] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  let release: () => void = () => undefined;
  const holds = new Promise<void>((resolve) => {
    release = resolve;
  });
  const server: Server = createServer((req, res) => {
    requests.push({ ...req.headers });
    if (new URL(req.url ?? "/", "http://x").pathname !== "/mcp") {
      res.writeHead(404).end();
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    let transport = typeof sessionId === "string" ? transports.get(sessionId) : undefined;
    if (typeof sessionId === "string" && transport === undefined) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }),
      );
      return;
    }
    if (transport === undefined) {
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: options.json ?? false,
        onsessioninitialized: (id) => {
          transports.set(id, created);
        },
      });
      created.onclose = () => {
        if (created.sessionId !== undefined) transports.delete(created.sessionId);
      };
      transport = created;
      buildServer(() => holds)
        .connect(created)
        .then(() => created.handleRequest(req, res));
      return;
    }
    transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    requests,
    release: () => release(),
    async close() {
      for (const transport of transports.values()) await transport.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
