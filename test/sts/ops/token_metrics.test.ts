import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from "jose";
import { newApprovalId } from "../../../sts/src/approvals/model.js";
import type { ExchangeGuards } from "../../../sts/src/exchange/guards.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const WRONG_SECRET = "wrong-secret-Zq8vXk2LmN4pR7tY";

/** `countersign_token_requests_total` from /metrics, as `grant_type/error` → value. */
async function tokenRequestCounts(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(
    /^countersign_token_requests_total\{grant_type="([^"]*)",error="([^"]*)"\} (\d+)$/gm,
  )) {
    counts[`${match[1]}/${match[2]}`] = Number(match[3]);
  }
  return counts;
}

function clientCredentials(
  secret = TEST_SECRET,
  extra: Record<string, string> = {},
  clientId = "billing-agent",
) {
  return (url: string) =>
    postForm(
      `${url}/token`,
      { grant_type: "client_credentials", ...extra },
      { authorization: basicAuth(clientId, secret) },
    );
}

/** The JSON log lines of a run, parsed. */
function logLines(sts: TestApp): Record<string, unknown>[] {
  return sts.logs.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

for (const engine of testEngines()) {
  describe(`token endpoint metrics on ${engine}`, () => {
    let sts: TestApp;
    let explode = false;
    const guards: ExchangeGuards = {
      policy: {
        authorizeExchange: async () => {
          if (explode) throw new Error("the policy engine broke");
          return { allowed: true };
        },
      },
    };
    before(async () => {
      sts = await startTestApp({ engine, appOptions: { exchangeGuards: guards } });
    });
    after(() => sts.stop());

    test("every POST /token is counted once, by grant_type and error, whichever check refuses it", async () => {
      const statuses: number[] = [];
      const send = async (times: number, request: (url: string) => Promise<{ status: number }>) => {
        for (let i = 0; i < times; i += 1) statuses.push((await request(sts.url)).status);
      };
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const approvalId = await insertApproval(sts.handle.db, { max_tokens: 10 });
      const exchangeFor = (id: string) => (url: string) =>
        exchange(url, { subject_token: subjectToken, authorization_details: agentTask(id) });

      await send(3, clientCredentials());
      await send(1, clientCredentials(TEST_SECRET, { resource: "https://crm.example.test" }));
      await send(2, clientCredentials(WRONG_SECRET));
      await send(1, clientCredentials(TEST_SECRET, {}, "nobody"));
      await send(1, clientCredentials(TEST_SECRET, { grant_type: "password" }));
      // An unknown grant type of any length is one label value.
      await send(1, clientCredentials(TEST_SECRET, { grant_type: `urn:example:${"x".repeat(500)}` }));
      await send(1, (url) =>
        postForm(`${url}/token`, {}, { authorization: basicAuth("billing-agent", TEST_SECRET) }),
      );
      await send(2, exchangeFor(approvalId));
      await send(2, exchangeFor(newApprovalId()));
      explode = true;
      await send(1, exchangeFor(approvalId));
      explode = false;

      assert.deepEqual(statuses, [200, 200, 200, 400, 401, 401, 401, 400, 400, 400, 200, 200, 400, 400, 500]);
      assert.deepEqual(await tokenRequestCounts(sts.url), {
        "client_credentials/none": 3,
        "client_credentials/invalid_target": 1,
        "client_credentials/invalid_client": 3,
        "other/unsupported_grant_type": 2,
        "other/invalid_request": 1,
        "token_exchange/none": 2,
        "token_exchange/invalid_grant": 2,
        "token_exchange/server_error": 1,
      });
    });
  });

  describe(`the MCP grants are counted once each on ${engine}`, () => {
    const mcp = "https://tools.example.test/mcp";
    const idp = "https://idp.example.test";
    let sts: TestApp;
    let idpKey: CryptoKey;
    before(async () => {
      const pair = await generateKeyPair("ES256");
      idpKey = pair.privateKey;
      const jwk = { ...(await exportJWK(pair.publicKey)), kid: "idp-1", alg: "ES256", use: "sig" };
      sts = await startTestApp({
        engine,
        config: (issuer) => {
          const base = baseConfig();
          return {
            ...base,
            resources: [
              ...(base.resources as unknown[]),
              { id: mcp, scopes: ["tools:read"], client_credentials: true, default_scopes: ["tools:read"] },
            ],
            trusted_issuers: [{ issuer: idp, jwks: { keys: [jwk] }, audience: issuer, usage: ["id_jag"] }],
          };
        },
      });
    });
    after(() => sts.stop());

    /** An ID-JAG of the trusted IdP for alice, to billing-agent, for the MCP server. */
    const idJag = () => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ client_id: "billing-agent", resource: mcp, scope: "tools:read" })
        .setProtectedHeader({ alg: "ES256", typ: "oauth-id-jag+jwt", kid: "idp-1" })
        .setIssuer(idp)
        .setSubject("alice")
        .setAudience(sts.url)
        .setJti(randomUUID())
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .sign(idpKey);
    };

    test("client_credentials for an MCP resource and jwt-bearer (ID-JAG): one success and one refusal each, each counted once", async () => {
      await insertApproval(sts.handle.db, { resource: mcp, scope: "tools:read", subject: null });
      await insertApproval(sts.handle.db, {
        resource: mcp,
        scope: "tools:read",
        subject: "alice",
        subject_issuer: idp,
      });
      const issued = await clientCredentials(TEST_SECRET, { resource: mcp })(sts.url);
      assert.equal(issued.status, 200, JSON.stringify(issued.body.error));
      assert.equal(issued.body.token_type, "Bearer");
      const unknownScope = await clientCredentials(TEST_SECRET, { resource: mcp, scope: "tools:write" })(
        sts.url,
      );
      assert.equal(unknownScope.status, 400);
      assert.equal(unknownScope.body.error, "invalid_scope");

      const assertion = await idJag();
      const redeem = () =>
        postForm(
          `${sts.url}/token`,
          { grant_type: JWT_BEARER, assertion },
          { authorization: basicAuth("billing-agent", TEST_SECRET) },
        );
      const redeemed = await redeem();
      assert.equal(redeemed.status, 200, JSON.stringify(redeemed.body.error));
      assert.equal(redeemed.body.token_type, "Bearer");
      const replayed = await redeem();
      assert.equal(replayed.status, 400);
      assert.equal(replayed.body.error, "invalid_grant");
      assert.equal(replayed.body.error_description, "a token was already issued for this assertion (jti)");

      assert.deepEqual(await tokenRequestCounts(sts.url), {
        "client_credentials/none": 1,
        "client_credentials/invalid_scope": 1,
        "jwt_bearer/none": 1,
        "jwt_bearer/invalid_grant": 1,
      });
    });
  });

  describe(`client authentication failures are logged on ${engine}`, () => {
    let sts: TestApp;
    before(async () => {
      sts = await startTestApp({ engine });
    });
    after(() => sts.stop());

    test("a wrong secret is one line: reason client_auth_failed, the client id, no secret", async () => {
      const before = sts.logs.lines.length;
      const { status, body } = await clientCredentials(WRONG_SECRET)(sts.url);
      assert.equal(status, 401);
      assert.equal(body.error, "invalid_client");
      const lines = logLines(sts).slice(before);
      assert.equal(lines.length, 1, sts.logs.lines.slice(before).join("\n"));
      const { time, pid, hostname, ...line } = lines[0]!;
      assert.equal(typeof time, "string");
      assert.deepEqual(line, {
        level: 30,
        service: "countersign",
        event: "token.client_auth",
        reason: "client_auth_failed",
        failure: "secret_mismatch",
        client_id: "billing-agent",
        grant_type: "client_credentials",
        error: "invalid_client",
        msg: "client authentication failed",
      });
      assert.ok(!sts.logs.text.includes(WRONG_SECRET));
      assert.ok(!sts.logs.text.includes(basicAuth("billing-agent", WRONG_SECRET).slice("Basic ".length)));
      assert.ok(!sts.logs.text.includes(TEST_SECRET));
    });

    test("a client using another authentication method than its own: failure auth_method_mismatch", async () => {
      const before = sts.logs.lines.length;
      // billing-agent has a secret; here it sends none (token_endpoint_auth_method "none").
      const { status } = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        client_id: "billing-agent",
      });
      assert.equal(status, 401);
      const lines = logLines(sts).slice(before);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.reason, "client_auth_failed");
      assert.equal(lines[0]!.failure, "auth_method_mismatch");
      assert.equal(lines[0]!.client_id, "billing-agent");
      assert.ok(!sts.logs.text.includes(TEST_SECRET));
    });

    test("a client id the caller made up is logged bounded (128 characters), and escaped", async () => {
      const claimed = `\u202e\u001b[2J${"a".repeat(300)}`;
      const before = sts.logs.lines.length;
      const { status, body } = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        client_id: claimed,
        client_secret: WRONG_SECRET,
      });
      assert.equal(status, 401);
      assert.equal(body.error, "invalid_client");
      const raw = sts.logs.lines.slice(before);
      assert.equal(raw.length, 1, raw.join("\n"));
      // The terminal controls are escapes in the line, never the characters themselves.
      assert.ok(!raw[0]!.includes("\u001b") && !raw[0]!.includes("\u202e"));
      assert.ok(raw[0]!.includes("\\u001b[2J") && raw[0]!.includes("\\u202e"));
      const line = JSON.parse(raw[0]!) as Record<string, unknown>;
      assert.equal(line.reason, "client_auth_failed");
      assert.equal(line.failure, "client_unknown");
      assert.equal(line.client_id, claimed.slice(0, 128));
      assert.ok(!sts.logs.text.includes(WRONG_SECRET));
    });
  });
}
