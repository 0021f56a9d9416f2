import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import Koa from "koa";
import {
  createMcpGateway,
  type McpDecision,
  type McpGatewayOptions,
  type RunningMcpGateway,
  startMcpGateway,
} from "../../gateway-verifier/src/index.js";
import {
  accessTokenClaims,
  dpopProof,
  generateDpopKey,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  type SigningKey,
} from "../gateway-verifier/helpers.js";

const RESOURCE = "https://tools.example.test/mcp";
const METADATA = "https://tools.example.test/.well-known/oauth-protected-resource/mcp";
const ALGS = "ES256 ES384 EdDSA Ed25519 PS256 RS256";

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A stand-in MCP server: records what arrives, answers each JSON-RPC request with `{forwarded: true}`. */
async function fakeUpstream() {
  const seen: Seen[] = [];
  const state = { status: 200 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (state.status !== 200) {
        res.writeHead(state.status, { "www-authenticate": 'Bearer realm="upstream"' }).end();
        return;
      }
      const id = body === "" ? null : ((JSON.parse(body) as { id?: unknown }).id ?? null);
      const text = JSON.stringify({ jsonrpc: "2.0", id, result: { forwarded: true } });
      res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "session-1" }).end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    seen,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type Upstream = Awaited<ReturnType<typeof fakeUpstream>>;

async function send(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
  method = "POST",
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method,
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    ...(method === "POST" ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text === "" ? {} : JSON.parse(text) };
}

const call = (name: string, id = 1) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name, arguments: {} },
});

describe("MCP gateway decisions (static keys, frozen clock, stand-in upstream)", () => {
  let key: SigningKey;
  let upstream: Upstream;
  const running: RunningMcpGateway[] = [];
  const decisions: McpDecision[] = [];

  async function start(overrides: Partial<McpGatewayOptions> = {}): Promise<string> {
    const gateway = await startMcpGateway({
      upstream: upstream.url,
      resource: "HTTPS://Tools.Example.TEST:443/mcp/",
      issuer: ISSUER,
      verifier: { jwks: { keys: [key.publicJwk] }, rateLimit: false },
      now: () => NOW_MS,
      policy: {
        default_scopes: ["tools:read"],
        tools: { send_email: ["mail:send"] },
        implied_scopes: { "mail:admin": ["mail:send"] },
      },
      onDecision: (decision) => decisions.push(decision),
      ...overrides,
    });
    running.push(gateway);
    return `${gateway.url}/mcp`;
  }

  const token = (claims: Record<string, unknown> = {}) =>
    mintToken(key, accessTokenClaims(NOW, { aud: RESOURCE, scope: "tools:read", ...claims }));
  const bearer = async (claims: Record<string, unknown> = {}) => ({
    authorization: `Bearer ${await token(claims)}`,
  });

  before(async () => {
    key = await generateSigningKey("k1");
    upstream = await fakeUpstream();
  });
  after(async () => {
    for (const gateway of running) await gateway.close();
    await upstream.close();
  });

  test("the resource is canonicalised: lower-case scheme and host, no default port, no trailing slash", async () => {
    const url = await start();
    const gateway = running.at(-1)!.gateway;
    assert.equal(gateway.resource, RESOURCE);
    assert.equal(gateway.resourceMetadataUrl, METADATA);
    const ok = await send(url, call("echo"), await bearer());
    assert.equal(ok.status, 200);
    const wrongAudience = await send(
      url,
      call("echo"),
      await bearer({ aud: "https://tools.example.test/mcp/" }),
    );
    assert.equal(wrongAudience.status, 401);
    assert.equal(wrongAudience.body.reason, "invalid_audience");
    assert.equal(
      wrongAudience.headers.get("www-authenticate"),
      `Bearer error="invalid_token", error_description="The token is not meant for this resource", ` +
        `scope="tools:read", resource_metadata="${METADATA}"`,
    );
    for (const bad of ["https://x.test/mcp#f", "https://x.test/mcp?a=1", "x.test/mcp", "ftp://x.test/mcp"]) {
      assert.throws(
        () => createMcpGateway({ upstream: upstream.url, resource: bad, issuer: ISSUER }),
        /createMcpGateway: invalid options: resource/,
      );
    }
  });

  test("a duplicate member name is refused: the gateway and the server could read different tools", async () => {
    const url = await start();
    const before = upstream.seen.length;
    const body =
      '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","n\\u0061me":"send_email"}}';
    const reply = await send(url, body, await bearer());
    assert.equal(reply.status, 400);
    assert.deepEqual(reply.body, {
      jsonrpc: "2.0",
      id: 3,
      error: {
        code: -32600,
        message: "Invalid Request: duplicate member name",
        data: { reason: "duplicate_key" },
      },
    });
    const nested = await send(
      url,
      `{"jsonrpc":"2.0","id":4,"method":"x","params":{"a":${"[".repeat(70)}${"]".repeat(70)}}}`,
      await bearer(),
    );
    assert.equal(nested.status, 400);
    assert.equal((nested.body.error as { data: { reason: string } }).data.reason, "too_deep");
    // Braces, quotes and escapes inside strings are only text.
    const tricky = await send(
      url,
      {
        jsonrpc: "2.0",
        id: 5,
        method: "tools/call",
        params: { name: "echo", arguments: { a: '}{"name":"x"', b: "\\" } },
      },
      await bearer(),
    );
    assert.equal(tricky.status, 200);
    assert.equal(upstream.seen.length, before + 1);
  });

  test("malformed bodies: -32700, -32600, -32602; 415 for another media type", async () => {
    const url = await start();
    const auth = await bearer();
    const cases: [string, number, string][] = [
      ["{", -32700, "parse_error"],
      ["[]", -32600, "invalid_request"],
      ['{"jsonrpc":"1.0","id":1,"method":"ping"}', -32600, "invalid_request"],
      ['{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}', -32602, "invalid_params"],
      ['{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":7}}', -32602, "invalid_params"],
    ];
    for (const [body, code, reason] of cases) {
      const reply = await send(url, body, auth);
      assert.equal(reply.status, 400, body);
      assert.equal((reply.body.error as { code: number }).code, code, body);
      assert.equal((reply.body.error as { data: { reason: string } }).data.reason, reason, body);
    }
    const batch = await send(
      url,
      Array.from({ length: 33 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "ping" })),
      auth,
    );
    assert.equal((batch.body.error as { data: { reason: string } }).data.reason, "batch_too_large");
    const text = await send(url, JSON.stringify(call("echo")), { ...auth, "content-type": "text/plain" });
    assert.equal(text.status, 415);
    assert.equal(text.body.reason, "unsupported_media_type");
  });

  test("Mcp-Name in Base64 is decoded before comparing; MCP-Protocol-Version must match the body's _meta", async () => {
    const url = await start({ policy: { default_scopes: ["tools:read"] } });
    const auth = await bearer();
    const name = "envoyer_courriel_été";
    const encoded = `=?base64?${Buffer.from(name).toString("base64")}?=`;
    const headers = { ...auth, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call" };
    const ok = await send(url, call(name), { ...headers, "mcp-name": encoded });
    assert.equal(ok.status, 200);
    const mismatch = await send(url, call("envoyer"), { ...headers, "mcp-name": encoded });
    assert.equal((mismatch.body.error as { data: { reason: string } }).data.reason, "mcp_name_mismatch");
    const badBase64 = await send(url, call(name), { ...headers, "mcp-name": "=?base64?***?=" });
    assert.equal((badBase64.body.error as { data: { reason: string } }).data.reason, "mcp_header_invalid");
    const meta = {
      jsonrpc: "2.0",
      id: 2,
      method: "tools/list",
      params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2025-11-25" } },
    };
    const version = await send(url, meta, {
      ...auth,
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": "tools/list",
    });
    assert.equal(version.status, 400);
    assert.deepEqual(version.body.error, {
      code: -32020,
      message: "Header mismatch: MCP-Protocol-Version does not match the request body",
      data: { reason: "protocol_version_mismatch" },
    });
    // Older revisions send no mirrored headers: the body decides.
    const old = await send(url, call("echo"), { ...auth, "mcp-protocol-version": "2025-06-18" });
    assert.equal(old.status, 200);
    // 2026-07-28 requires Mcp-Method on requests.
    const missing = await send(url, call("echo"), { ...auth, "mcp-protocol-version": "2026-07-28" });
    assert.equal((missing.body.error as { data: { reason: string } }).data.reason, "mcp_header_missing");
  });

  test("no passthrough: the upstream gets the configured header, never Authorization, DPoP or forged identity", async () => {
    const url = await start({ upstreamHeaders: { "x-api-key": "upstream-secret" }, identityHeaders: true });
    const before = upstream.seen.length;
    const auth = await bearer({ sub: "alice", client_id: "billing-agent", approval_id: "appr_9" });
    // node:http, not fetch: fetch refuses to send a Connection header.
    const status = await new Promise<number>((resolve, reject) => {
      const body = JSON.stringify(call("echo"));
      const req = request(url, {
        method: "POST",
        headers: {
          ...auth,
          "content-type": "application/json",
          dpop: "not-a-proof",
          "x-countersign-client-id": "forged",
          "x-countersign-extra": "forged",
          connection: "keep-alive, x-drop-me",
          "x-drop-me": "1",
        },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end(body);
    });
    const reply = { status };
    assert.equal(reply.status, 200);
    const seen = upstream.seen[before]!.headers;
    assert.equal(seen.authorization, undefined);
    assert.equal(seen.dpop, undefined);
    assert.equal(seen["x-drop-me"], undefined);
    assert.equal(seen["x-countersign-extra"], undefined);
    assert.equal(seen["x-api-key"], "upstream-secret");
    assert.equal(seen["x-countersign-client-id"], "billing-agent");
    assert.equal(seen["x-countersign-subject"], "alice");
    assert.equal(seen["x-countersign-approval-id"], "appr_9");
    assert.equal(seen["x-countersign-scope"], "tools:read");
    assert.equal(seen.host, new URL(upstream.url).host);
  });

  test("an upstream-credentials hook: called with the caller; if it fails nothing is forwarded (503)", async () => {
    const callers: string[] = [];
    let fail = false;
    const url = await start({
      upstreamHeaders: async (caller) => {
        callers.push(`${caller.clientId}/${caller.approvalId}`);
        if (fail) throw new Error("token endpoint down");
        return { authorization: "Bearer gateway-own-token" };
      },
    });
    const before = upstream.seen.length;
    assert.equal((await send(url, call("echo"), await bearer())).status, 200);
    assert.equal(upstream.seen[before]!.headers.authorization, "Bearer gateway-own-token");
    fail = true;
    const refused = await send(url, call("echo"), await bearer());
    assert.equal(refused.status, 503);
    assert.equal(refused.body.reason, "upstream_credentials_unavailable");
    assert.deepEqual(callers, ["billing-agent/appr_123", "billing-agent/appr_123"]);
    assert.equal(upstream.seen.length, before + 1);
  });

  test("upstream failures: 401 becomes 502 without the upstream's challenge; unreachable 502", async () => {
    const url = await start();
    upstream.state.status = 401;
    try {
      const refused = await send(url, call("echo"), await bearer());
      assert.equal(refused.status, 502);
      assert.equal(refused.headers.get("www-authenticate"), null);
      assert.equal(refused.body.reason, "upstream_unauthorized");
    } finally {
      upstream.state.status = 200;
    }
    const down = await start({ upstream: "http://127.0.0.1:9/mcp" });
    const unreachable = await send(down, call("echo"), await bearer());
    assert.equal(unreachable.status, 502);
    assert.equal(unreachable.body.reason, "upstream_unavailable");
  });

  test("scope hierarchy, unlisted tools, invalid authorization_details, completions of unapproved prompts", async () => {
    const url = await start({
      policy: {
        default_scopes: ["tools:read"],
        tools: { send_email: ["mail:send"], echo: [] },
        unlisted: "deny",
        implied_scopes: { "mail:admin": ["mail:send"] },
      },
    });
    const admin = await bearer({ scope: "tools:read mail:admin" });
    assert.equal((await send(url, call("send_email"), admin)).status, 200);
    const unlisted = await send(url, call("delete_everything"), admin);
    assert.equal(unlisted.status, 403);
    assert.deepEqual(unlisted.body, {
      error: "access_denied",
      error_description: "This tool is not enabled at this gateway",
      reason: "tool_not_listed",
    });
    const malformed = await send(
      url,
      call("echo"),
      await bearer({
        authorization_details: [{ type: "agent_task", approval_id: "appr_123", tools: "echo" }],
      }),
    );
    assert.equal(malformed.status, 401);
    assert.equal(malformed.body.reason, "invalid_authorization_details");
    assert.equal(
      malformed.headers.get("www-authenticate"),
      `Bearer error="invalid_token", error_description="The token's authorization details are invalid", ` +
        `scope="tools:read", resource_metadata="${METADATA}"`,
    );
    const open = await start({ policy: { default_scopes: ["tools:read"] } });
    const prompts = await bearer({
      authorization_details: [
        { type: "agent_task", approval_id: "appr_123", prompts: ["summarize"], tools: [] },
      ],
    });
    const complete = (name: string) => ({
      jsonrpc: "2.0",
      id: 1,
      method: "completion/complete",
      params: { ref: { type: "ref/prompt", name }, argument: { name: "text", value: "a" } },
    });
    assert.equal((await send(open, complete("summarize"), prompts)).status, 200);
    assert.equal((await send(open, complete("exfiltrate"), prompts)).body.reason, "prompt_not_approved");
    assert.equal(
      (await send(open, call("echo"), prompts)).body.reason,
      "tool_not_approved",
      "an empty list allows nothing",
    );
  });

  test("DPoP: required tokens get a DPoP challenge; a DPoP-bound token with a proof for the resource URL passes", async () => {
    const url = await start({ dpop: { required: true } });
    const none = await send(url, call("echo"));
    assert.equal(none.status, 401);
    assert.equal(
      none.headers.get("www-authenticate"),
      `DPoP algs="${ALGS}", resource_metadata="${METADATA}", scope="tools:read"`,
    );
    const bearerOnly = await send(url, call("echo"), await bearer());
    assert.equal(bearerOnly.status, 401);
    assert.equal(bearerOnly.body.reason, "dpop_required");
    assert.equal(
      bearerOnly.headers.get("www-authenticate"),
      `DPoP error="invalid_token", error_description="A DPoP-bound access token is required", ` +
        `scope="tools:read", resource_metadata="${METADATA}", algs="${ALGS}"`,
    );
    const dpopKey = await generateDpopKey();
    const bound = await token({ cnf: { jkt: dpopKey.jkt } });
    const proof = await dpopProof(dpopKey, bound, { htm: "POST", htu: RESOURCE });
    const ok = await send(url, call("echo"), { authorization: `DPoP ${bound}`, dpop: proof });
    assert.equal(ok.status, 200);
    const wrongUrl = await dpopProof(dpopKey, bound, { htm: "POST", htu: "https://elsewhere.test/mcp" });
    const refused = await send(url, call("echo"), { authorization: `DPoP ${bound}`, dpop: wrongUrl });
    assert.equal(refused.status, 401);
    assert.equal(refused.body.reason, "dpop_htu_mismatch");
    assert.match(String(refused.headers.get("www-authenticate")), /^DPoP error="invalid_dpop_proof", /);
    const metadata = await fetch(`${running.at(-1)!.url}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(
      ((await metadata.json()) as Record<string, unknown>).dpop_bound_access_tokens_required,
      true,
    );
  });

  test("Origin outside the allowed list 403; other methods 405; other paths 404; decisions are reported", async () => {
    const url = await start();
    decisions.length = 0;
    const foreign = await send(url, call("echo"), { ...(await bearer()), origin: "https://evil.example" });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.body.reason, "origin_not_allowed");
    const same = await send(url, call("echo"), { ...(await bearer()), origin: "https://tools.example.test" });
    assert.equal(same.status, 200);
    const put = await send(url, call("echo"), await bearer(), "PUT");
    assert.equal(put.status, 405);
    assert.equal(put.headers.get("allow"), "GET, POST, DELETE");
    const other = await send(url.replace(/\/mcp$/, "/admin"), call("echo"), await bearer());
    assert.equal(other.status, 404);
    assert.deepEqual(
      decisions.map((d) => [d.outcome, d.status, d.reason ?? null]),
      [
        ["refused", 403, "origin_not_allowed"],
        ["forwarded", 200, null],
        ["refused", 405, "method_not_allowed"],
        ["refused", 404, "not_found"],
      ],
    );
    assert.deepEqual(decisions[1], {
      outcome: "forwarded",
      status: 200,
      httpMethod: "POST",
      clientId: "billing-agent",
      subject: "alice",
      approvalId: "appr_123",
      methods: ["tools/call"],
      targets: ["tool:echo"],
    });
    assert.ok(!JSON.stringify(decisions).includes("eyJ"), "no token in decisions");
    decisions.length = 0;
    await send(url, call("t".repeat(5000)), await bearer());
    assert.deepEqual(
      decisions[0]?.targets,
      [`tool:${"t".repeat(199)}…`],
      "agent-chosen text is cut in audit lines",
    );
  });

  test("mountable: Koa (ctx.respond = false) and connect-style next() for other paths", async () => {
    const gateway = createMcpGateway({
      upstream: upstream.url,
      resource: RESOURCE,
      issuer: ISSUER,
      verifier: { jwks: { keys: [key.publicJwk] }, rateLimit: false },
      now: () => NOW_MS,
    });
    const app = new Koa();
    app.use(async (ctx, next) => {
      if (ctx.path === "/health") {
        ctx.body = "ok";
        return;
      }
      await next();
    });
    app.use((ctx) => {
      ctx.respond = false;
      gateway.handler(ctx.req, ctx.res);
    });
    const koa = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => koa.once("listening", resolve));
    const connectStyle = createServer((req, res) =>
      gateway.handler(req, res, () => {
        res.statusCode = 299;
        res.end("next");
      }),
    );
    await new Promise<void>((resolve) => connectStyle.listen(0, "127.0.0.1", resolve));
    try {
      const koaUrl = `http://127.0.0.1:${(koa.address() as AddressInfo).port}`;
      assert.equal(await (await fetch(`${koaUrl}/health`)).text(), "ok");
      assert.equal((await send(`${koaUrl}/mcp`, call("echo"), await bearer())).status, 200);
      assert.equal((await send(`${koaUrl}/mcp`, call("echo"))).status, 401);
      const connectUrl = `http://127.0.0.1:${(connectStyle.address() as AddressInfo).port}`;
      const passed = await fetch(`${connectUrl}/elsewhere`);
      assert.equal(passed.status, 299);
      assert.equal((await send(`${connectUrl}/mcp`, call("echo"), await bearer())).status, 200);
    } finally {
      gateway.close();
      koa.closeAllConnections();
      connectStyle.closeAllConnections();
      await new Promise((resolve) => koa.close(resolve));
      await new Promise((resolve) => connectStyle.close(resolve));
    }
  });
});
