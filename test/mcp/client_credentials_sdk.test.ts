import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type RunningMcpGateway, startMcpGateway } from "../../gateway-verifier/src/index.js";
import { baseConfig, freePort, startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { startUpstream, type Upstream } from "./upstream.js";

for (const engine of testEngines()) {
  describe(`the MCP SDK's ClientCredentialsProvider against the gateway and the STS (${engine})`, () => {
    let sts: TestApp;
    let upstream: Upstream;
    let gateway: RunningMcpGateway;
    let resource: string;
    const clients: Client[] = [];

    const provider = () =>
      new ClientCredentialsProvider({
        clientId: "billing-agent",
        clientSecret: TEST_SECRET,
        expectedIssuer: sts.url,
      });
    async function connect(auth: ClientCredentialsProvider): Promise<Client> {
      const client = new Client({ name: "m2m-agent", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(resource), { authProvider: auth }));
      clients.push(client);
      return client;
    }
    const api = async (path: string, body: unknown) => {
      const approver = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver" });
      const response = await fetch(`${sts.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${approver}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return response.status;
    };

    before(async () => {
      upstream = await startUpstream();
      const port = await freePort();
      resource = `http://127.0.0.1:${port}/mcp`;
      const config = baseConfig();
      sts = await startTestApp({
        engine,
        config: {
          ...config,
          resources: [
            ...(config.resources as unknown[]),
            {
              id: resource,
              scopes: ["tools:read", "mail:send"],
              client_credentials: true,
              default_scopes: ["tools:read"],
            },
          ],
        },
      });
      gateway = await startMcpGateway({
        port,
        upstream: upstream.url,
        resource,
        issuer: sts.url,
        policy: { default_scopes: ["tools:read"] },
        verifier: { revocation: { url: `${sts.url}/revocations`, stream: true } },
      });
    });
    after(async () => {
      for (const client of clients) await client.close().catch(() => {});
      await gateway.close();
      await upstream.close();
      await sts.stop();
    });

    test("discovery from a 401 → pending (recorded once) → approve → tools/list → revoke → refused", async () => {
      const pendingError = await connect(provider()).then(
        () => assert.fail("connected without an approval"),
        (error: Error) => error,
      );
      const id = /approval (apr_[A-Za-z0-9_-]{22})/.exec(pendingError.message)?.[1];
      assert.ok(id, `the SDK's error names the approval: ${pendingError.message}`);
      // A second attempt finds the same pending approval.
      const again = await connect(provider()).then(
        () => assert.fail("connected without an approval"),
        (error: Error) => error,
      );
      assert.match(again.message, new RegExp(`approval ${id} still waits`));
      const rows = await sts.handle.db
        .selectFrom("approvals")
        .select(["id", "status", "subject", "requested_scope"])
        .where("resource", "=", resource)
        .execute();
      assert.deepEqual(rows, [{ id, status: "pending", subject: null, requested_scope: "tools:read" }]);

      assert.equal(await api(`/approvals/${id}/approve`, {}), 200);
      const client = await connect(provider());
      const listed = await client.listTools();
      assert.ok(listed.tools.length > 0);

      assert.equal(await api(`/approvals/${id}/revoke`, { reason: "done" }), 200);
      // The gateway learns of the revocation from the STS's stream; poll a bounded number of times
      // (at least 10 s: the bound is for the run, not the stream's latency).
      let refused: unknown;
      for (let attempt = 0; attempt < 500 && refused === undefined; attempt++) {
        await client.listTools().catch((error: unknown) => {
          refused = error;
        });
        if (refused === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.ok(refused instanceof Error, "tools/list is refused after the revoke");
      // The gateway answers 401 for the revoked token; the SDK asks the STS again and gets access_denied.
      assert.match(refused.message, new RegExp(`^approval ${id} was revoked: this request is refused`));
      const after = await sts.handle.db
        .selectFrom("approvals")
        .select("id")
        .where("resource", "=", resource)
        .execute();
      assert.equal(after.length, 1, "no new approval is requested during the cool-down");
    });
  });
}
