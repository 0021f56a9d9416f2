import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { sendJson, startServer, type TestServer } from "../gateway-verifier/helpers.js";
import { freePort, startTestApp, type TestApp } from "../helpers/app.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";
import { cli, waitForLine } from "../helpers/processes.js";
import { revokeViaApi } from "../sts/revocations/support.js";
import { findBinary, type RunningProxy, startCaddy, startNginx } from "./proxies.js";

const AUDIENCE = "https://crm.example.test";
const ROUTES = {
  routes: [
    { method: "GET", path_prefix: "/contacts", scopes: ["crm:read"] },
    { method: "*", path_prefix: "/contacts", scopes: ["crm:write"] },
    { path_prefix: "/admin", scopes: ["crm:delete"] },
  ],
};
const REVOKED_CHALLENGE = 'Bearer error="invalid_token", error_description="The approval has been revoked"';
const MISSING_CHALLENGE = 'Bearer, DPoP algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request with the path sent exactly as given (fetch would resolve `..`). */
function send(origin: string, method: string, rawPath: string, headers: Record<string, string> = {}) {
  const url = new URL(origin);
  return new Promise<Answer>((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path: rawPath, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function mint(sts: TestApp, approvalId: string): Promise<string> {
  const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
  const minted = await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) });
  assert.equal(minted.status, 200, JSON.stringify(minted.body));
  return minted.body.access_token as string;
}

const binaries = { nginx: findBinary("nginx"), caddy: findBinary("caddy") };
const dir = mkdtempSync(path.join(tmpdir(), "countersign-authz-"));
let sts: TestApp;
let api: TestServer;
let authz: ChildProcess;
let authzPort: number;
const tokens = { reader: "", revoked: "" };
const ids = { reader: "", revoked: "" };

before(async () => {
  sts = await startTestApp({ engine: "pglite" });
  ids.reader = await insertApproval(sts.handle.db, { scope: "crm:read" });
  ids.revoked = await insertApproval(sts.handle.db, { scope: "crm:read" });
  tokens.reader = await mint(sts, ids.reader);
  tokens.revoked = await mint(sts, ids.revoked);
  assert.equal(await revokeViaApi(sts, ids.revoked), 200);
  api = await startServer((req, res) =>
    sendJson(res, 200, {
      method: req.method,
      url: req.url,
      client_id: req.headers["x-countersign-client-id"],
      subject: req.headers["x-countersign-subject"],
      approval_id: req.headers["x-countersign-approval-id"],
      scope: req.headers["x-countersign-scope"],
    }),
  );
  const config = path.join(dir, "routes.json");
  writeFileSync(config, JSON.stringify(ROUTES));
  authzPort = await freePort();
  // The real command; it attempts the first revocation poll before listening, so the approval
  // revoked above is known from the first request on.
  authz = spawn(
    process.execPath,
    [
      cli,
      "authz-server",
      "--issuer",
      sts.url,
      "--audience",
      AUDIENCE,
      "--port",
      String(authzPort),
      "--revocation-url",
      `${sts.url}/revocations`,
      "--trust-forwarded-headers",
      "--config",
      config,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOG_LEVEL: "info" } },
  );
  await waitForLine(authz, /authz server listening/, 30_000);
});

after(async () => {
  if (authz !== undefined && authz.exitCode === null) {
    const exited = new Promise((resolve) => authz.once("exit", resolve));
    authz.kill("SIGTERM");
    await exited;
  }
  await api?.close();
  await sts?.stop();
  rmSync(dir, { recursive: true, force: true });
});

for (const [name, start] of [
  ["nginx", startNginx],
  ["caddy", startCaddy],
] as const) {
  const binary = binaries[name];
  const skip =
    binary === undefined &&
    `${name} is not installed (apt-get install ${name === "nginx" ? "nginx-light" : "caddy"})`;
  describe(`${name} in front of an API, authorization by countersign authz-server`, { skip }, () => {
    let proxy: RunningProxy;
    let limitedToken: string;
    before(async () => {
      const proxyDir = mkdtempSync(path.join(dir, `${name}-`));
      proxy = await start(binary as string, proxyDir, {
        listen: await freePort(),
        authz: authzPort,
        api: Number(new URL(api.url).port),
      });
      // One request, then none for 1000 s: the second is refused with 429 however slow the machine is.
      const limited = await insertApproval(sts.handle.db, {
        scope: "crm:read",
        rate_limit: { per_second: 0.001, burst: 1 },
      });
      limitedToken = await mint(sts, limited);
    });
    after(async () => {
      await proxy?.stop();
    });

    test("a token reaches the API, which gets the identity from the token (the client's copies replaced)", async () => {
      const answer = await send(proxy.origin, "GET", "/contacts?q=1", {
        authorization: `Bearer ${tokens.reader}`,
        "x-countersign-subject": "mallory",
        "x-countersign-client-id": "spoofed",
        "x-original-uri": "/public",
      });
      assert.equal(answer.status, 200, `${answer.body}\n${proxy.output()}`);
      assert.deepEqual(JSON.parse(answer.body), {
        method: "GET",
        url: "/contacts?q=1",
        client_id: "billing-agent",
        subject: "alice",
        approval_id: ids.reader,
        scope: "crm:read",
      });
    });

    test("no token: 401 with the challenge reaching the client, and the API never called", async () => {
      const before = api.requests.length;
      const answer = await send(proxy.origin, "GET", "/contacts");
      assert.equal(answer.status, 401);
      assert.equal(answer.headers["www-authenticate"], MISSING_CHALLENGE);
      assert.deepEqual(JSON.parse(answer.body), {
        error: "invalid_token",
        error_description: "An access token is required",
      });
      assert.equal(api.requests.length, before);
    });

    test("a revoked approval's token is refused with 401 approval revoked", async () => {
      const answer = await send(proxy.origin, "GET", "/contacts", {
        authorization: `Bearer ${tokens.revoked}`,
      });
      assert.equal(answer.status, 401);
      assert.equal(answer.headers["www-authenticate"], REVOKED_CHALLENGE);
      assert.deepEqual(JSON.parse(answer.body), {
        error: "invalid_token",
        error_description: "The approval has been revoked",
      });
    });

    test("the original method decides the route's scopes: POST /contacts needs crm:write (403 with its challenge)", async () => {
      const answer = await send(proxy.origin, "POST", "/contacts/7", {
        authorization: `Bearer ${tokens.reader}`,
      });
      assert.equal(answer.status, 403);
      assert.equal(
        answer.headers["www-authenticate"],
        'Bearer error="insufficient_scope", error_description="The token lacks a scope this request requires", scope="crm:write"',
      );
      assert.equal(JSON.parse(answer.body).error, "insufficient_scope");
    });

    test("dot segments and escapes cannot dodge a route: /x/../admin and /%61dmin need crm:delete", async () => {
      for (const rawPath of ["/x/../admin", "/%61dmin", "//admin/"]) {
        const answer = await send(proxy.origin, "GET", rawPath, { authorization: `Bearer ${tokens.reader}` });
        assert.equal(answer.status, 403, rawPath);
        assert.match(String(answer.headers["www-authenticate"]), /scope="crm:delete"/, rawPath);
      }
    });

    test("over the approval's rate limit: 429 with Retry-After reaches the client", async () => {
      const first = await send(proxy.origin, "GET", "/contacts", { authorization: `Bearer ${limitedToken}` });
      assert.equal(first.status, 200, first.body);
      const second = await send(proxy.origin, "GET", "/contacts", {
        authorization: `Bearer ${limitedToken}`,
      });
      assert.equal(second.status, 429);
      assert.ok(Number(second.headers["retry-after"]) >= 1, String(second.headers["retry-after"]));
      assert.deepEqual(JSON.parse(second.body), {
        error: "rate_limited",
        error_description: "Too many requests",
      });
    });
  });
}
