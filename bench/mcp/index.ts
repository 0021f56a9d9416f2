/**
 * `npx tsx bench/mcp/index.ts`: the MCP gateway against a direct connection to the same upstream, in
 * the same run. The upstream is the official SDK's `McpServer` (Streamable HTTP, sessions), answering
 * `tools/call echo` as SSE (the SDK's default) and as JSON (`enableJsonResponse`). autocannon keeps
 * `BENCH_MCP_CONNECTIONS` (default 8) connections busy for `BENCH_MCP_SECONDS` (default 5) per case,
 * after a 1 s warm-up. Everything (upstream, gateway, load generator) shares this process and its
 * cores: the figures compare the two paths, they are not capacity numbers.
 *
 * The gateway verifies an ES256 access token (cached after the first request, as in production),
 * checks the session binding, parses the JSON-RPC body (duplicate names, depth), decides the tool's
 * scopes and forwards without the token.
 */
import { cpus } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import autocannon, { type AutocannonResult } from "autocannon";
import { startMcpGateway } from "../../gateway-verifier/src/index.js";
import {
  accessTokenClaims,
  generateSigningKey,
  ISSUER,
  mintToken,
} from "../../test/gateway-verifier/helpers.js";
import { startUpstream } from "../../test/mcp/upstream.js";

const RESOURCE = "https://tools.example.test/mcp";

interface Row {
  name: string;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  non2xx: number;
}

async function initialize(url: string, headers: Record<string, string>): Promise<string> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "bench", version: "1" },
      },
    }),
  });
  await response.text();
  const session = response.headers.get("mcp-session-id");
  if (response.status !== 200 || session === null) throw new Error(`initialize failed: ${response.status}`);
  await fetch(url, {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-session-id": session,
      "mcp-protocol-version": "2025-06-18",
    },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  }).then((r) => r.text());
  return session;
}

async function load(url: string, headers: Record<string, string>, seconds: number, connections: number) {
  return autocannon({
    url,
    method: "POST",
    connections,
    duration: seconds,
    timeout: 10,
    headers: {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-06-18",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "echo", arguments: { text: "benchmark" } },
    }),
  });
}

function row(name: string, result: AutocannonResult): Row {
  return {
    name,
    requestsPerSecond: Math.round(result.requests.average),
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx + result.errors,
  };
}

/** Runs the comparison and returns a Markdown table. */
export async function runMcpBenchmark(options: { seconds: number; connections: number }): Promise<string> {
  const key = await generateSigningKey("bench");
  const token = await mintToken(
    key,
    accessTokenClaims(Math.floor(Date.now() / 1000), {
      aud: RESOURCE,
      scope: "tools:read",
      exp: Math.floor(Date.now() / 1000) + 3600,
    }),
  );
  const rows: Row[] = [];
  for (const json of [false, true]) {
    const upstream = await startUpstream({ json });
    const gateway = await startMcpGateway({
      upstream: upstream.url,
      resource: RESOURCE,
      issuer: ISSUER,
      policy: { default_scopes: ["tools:read"] },
      // One agent drives every connection: its open-exchange cap must not refuse the load.
      maxOpenExchangesPerClient: Math.max(16, options.connections),
      verifier: {
        jwks: { keys: [key.publicJwk] },
        rateLimit: false,
        revocation: false,
        maxTokenAgeSeconds: 3600,
      },
    });
    try {
      const auth = { authorization: `Bearer ${token}` };
      const gatewayUrl = `${gateway.url}/mcp`;
      const direct = { "mcp-session-id": await initialize(upstream.url, {}) };
      const gated = { ...auth, "mcp-session-id": await initialize(gatewayUrl, auth) };
      const mode = json ? "JSON" : "SSE";
      await load(upstream.url, direct, 1, options.connections);
      rows.push(
        row(
          `${mode}, direct to the upstream`,
          await load(upstream.url, direct, options.seconds, options.connections),
        ),
      );
      await load(gatewayUrl, gated, 1, options.connections);
      rows.push(
        row(
          `${mode}, through the gateway`,
          await load(gatewayUrl, gated, options.seconds, options.connections),
        ),
      );
    } finally {
      await gateway.close();
      await upstream.close();
    }
  }
  const lines = [
    "| case | requests/s | p50 ms | p99 ms | errors or non-2xx |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...rows.map((r) => `| ${r.name} | ${r.requestsPerSecond} | ${r.p50} | ${r.p99} | ${r.non2xx} |`),
  ];
  return lines.join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const seconds = Number(process.env.BENCH_MCP_SECONDS ?? 5);
  const connections = Number(process.env.BENCH_MCP_CONNECTIONS ?? 8);
  const cpu = cpus();
  process.stdout.write(
    `MCP gateway vs direct: Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? "unknown CPU"}, ` +
      `${connections} connections, ${seconds} s per case, tools/call echo\n\n`,
  );
  process.stdout.write(`${await runMcpBenchmark({ seconds, connections })}\n`);
}
