import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import type { JSONWebKeySet } from "jose";
import { createVerifier } from "../../gateway-verifier/src/index.js";
import { generateSigningKey, rawToken } from "../gateway-verifier/helpers.js";
import { startTestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";
import { sleep } from "./load.js";

const CRM = "https://crm.example.test";

/** A JWKS server on 127.0.0.1 that can be stopped (connection refused) and started again on its port. */
async function startJwksServer(keys: JSONWebKeySet) {
  let fetches = 0;
  const handler = (_req: unknown, res: import("node:http").ServerResponse) => {
    fetches += 1;
    const text = JSON.stringify(keys);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  };
  let server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    get fetches() {
      return fetches;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async start() {
      server = createServer(handler);
      await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    },
  };
}

/**
 * Fault: the STS's JWKS endpoint goes down. A gateway verifier with a remote JWKS keeps verifying tokens
 * whose `kid` it cached (through failed background refreshes), and refuses a token with an unknown
 * `kid`: 503 temporarily_unavailable `jwks_unavailable` while the JWKS cannot be fetched (it cannot
 * know), 401 invalid_token `unknown_kid` once the JWKS answers again without that key.
 */
test("JWKS endpoint down: cached kids keep verifying, unknown kids are refused", async () => {
  const engine = testEngines().at(-1) ?? "pglite";
  const sts = await startTestApp({ engine });
  const jwks = (await (await fetch(`${sts.url}/jwks`)).json()) as JSONWebKeySet;
  const server = await startJwksServer(jwks);
  const backgroundErrors: string[] = [];
  const verifier = createVerifier({
    issuer: sts.url,
    audience: CRM,
    jwksUri: server.url,
    // Refresh often, so the outage is felt by background refreshes and refetches, not hidden by caching.
    jwksOptions: { cacheMaxAgeMs: 100, cooldownMs: 50, timeoutMs: 1000 },
    rateLimit: false,
    cache: false,
    onBackgroundError: (_error, source) => {
      backgroundErrors.push(source);
    },
  });
  try {
    await verifier.ready();
    const approvalId = await insertApproval(sts.handle.db, { max_tokens: 10, scope: "crm:read" });
    const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
    const minted = await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) });
    assert.equal(minted.status, 200, JSON.stringify(minted.body));
    const token = String(minted.body.access_token);
    const verify = (t: string) =>
      verifier.verify({
        authorization: `Bearer ${t}`,
        method: "GET",
        url: `${CRM}/x`,
        requiredScopes: ["crm:read"],
      });

    const before = await verify(token);
    assert.equal(before.ok, true, JSON.stringify(before));

    // A token signed by a key the STS never published, with the same claims.
    const stranger = await generateSigningKey("stranger-kid");
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as Record<
      string,
      unknown
    >;
    const unknownKid = rawToken({ alg: "ES256", typ: "at+jwt", kid: "stranger-kid" }, claims, stranger);

    await server.stop();
    const fetchesAtOutage = server.fetches;
    // Outlive several refresh periods while the JWKS is down.
    for (let i = 0; i < 5; i++) {
      await sleep(150);
      const during = await verify(token);
      assert.equal(
        during.ok,
        true,
        `a cached kid was refused while the JWKS was down: ${JSON.stringify(during)}`,
      );
    }
    const refused = await verify(unknownKid);
    assert.equal(refused.ok, false);
    if (!refused.ok) {
      assert.deepEqual(
        { status: refused.status, error: refused.error, reason: refused.reason },
        { status: 503, error: "temporarily_unavailable", reason: "jwks_unavailable" },
      );
    }
    assert.equal(server.fetches, fetchesAtOutage, "nothing answered while down");
    assert.ok(backgroundErrors.includes("jwks"), "the failed refreshes were reported");

    await server.start();
    const back = await verify(unknownKid);
    assert.equal(back.ok, false);
    if (!back.ok) {
      assert.deepEqual(
        { status: back.status, error: back.error, reason: back.reason },
        { status: 401, error: "invalid_token", reason: "unknown_kid" },
      );
    }
    const still = await verify(token);
    assert.equal(still.ok, true);
    assert.ok(server.fetches > fetchesAtOutage, "the verifier refetched once the JWKS was back");
  } finally {
    verifier.close();
    await server.stop().catch(() => {});
    await sts.stop();
  }
});
