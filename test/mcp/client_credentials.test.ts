import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { ConfigError, loadConfig } from "../../sts/src/config/load.js";
import type { Approval } from "../../sts/src/db/schema.js";
import { matchStandingApproval } from "../../sts/src/exchange/rules.js";
import {
  bearerJson as api,
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";

const MCP = "https://tools.example.test/mcp";
const CLOSED = "https://closed.example.test/mcp";

function config(): Record<string, unknown> {
  const base = baseConfig();
  return {
    ...base,
    resources: [
      ...(base.resources as unknown[]),
      {
        id: MCP,
        scopes: ["tools:read", "mail:send", "files:read"],
        client_credentials: true,
        default_scopes: ["tools:read"],
      },
      { id: CLOSED, scopes: ["tools:read"] },
    ],
  };
}

describe("client_credentials resources: the configuration", () => {
  const load = (resource: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    loadConfig({ COUNTERSIGN_DATA_DIR: tmpdir() }, { resources: [resource], dev_mode: false, ...extra });

  test("default_scopes outside scopes are refused, naming the key; mcp.request_cooldown_seconds defaults to 600", () => {
    assert.throws(
      () => load({ id: MCP, scopes: ["tools:read"], client_credentials: true, default_scopes: ["admin"] }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.issues.some((issue) => issue.includes("resources[0].default_scopes[0]: is not one of scopes")),
    );
    const config = load({ id: MCP, scopes: ["tools:read"], client_credentials: true });
    assert.equal(config.mcp.request_cooldown_seconds, 600);
    assert.equal(config.resources[0]?.client_credentials, true);
    assert.equal(
      load({ id: MCP, scopes: ["tools:read"] }, { mcp: { request_cooldown_seconds: 5 } }).mcp
        .request_cooldown_seconds,
      5,
    );
  });
});

describe("matchStandingApproval", () => {
  const now = Date.parse("2030-01-01T00:00:00Z");
  const row = (changes: Partial<Approval>): Approval =>
    ({
      id: "apr_0000000000000000000000",
      status: "denied",
      scope: "tools:read",
      requested_scope: "tools:read",
      expires_at: new Date(now + 3600_000),
      decided_at: new Date(now - 599_000),
      revoked_at: null,
      tokens_issued: 0,
      max_tokens: 10,
      ...changes,
    }) as Approval;

  test("a denial answers within the cool-down and no longer after it", () => {
    assert.equal(matchStandingApproval([row({})], ["tools:read"], now, 600).kind, "refused");
    assert.equal(
      matchStandingApproval([row({ decided_at: new Date(now - 601_000) })], ["tools:read"], now, 600).kind,
      "none",
    );
    const revoked = row({
      status: "revoked",
      decided_at: new Date(now - 9999_000),
      revoked_at: new Date(now - 1000),
    });
    assert.equal(matchStandingApproval([revoked], ["tools:read"], now, 600).kind, "refused");
  });

  test("an approval narrowed by its approver serves the request it was recorded for, with the scopes within it", () => {
    const narrowed = row({
      status: "approved",
      scope: "tools:read",
      requested_scope: "mail:send tools:read",
    });
    assert.deepEqual(matchStandingApproval([narrowed], ["mail:send", "tools:read"], now, 600), {
      kind: "approved",
      approval: narrowed,
      scopes: ["tools:read"],
    });
    // Another request wider than the approval is not served by it.
    assert.equal(matchStandingApproval([narrowed], ["files:read", "tools:read"], now, 600).kind, "none");
    // Nor is an approval whose budget is spent.
    const spent = row({ status: "approved", tokens_issued: 10 });
    assert.equal(matchStandingApproval([spent], ["tools:read"], now, 600).kind, "none");
  });
});

for (const engine of testEngines()) {
  describe(`client_credentials for an MCP resource (${engine})`, () => {
    let sts: TestApp;
    let approver: string;

    const token = (form: Record<string, string>, clientId = "billing-agent") =>
      postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", resource: MCP, ...form },
        { authorization: basicAuth(clientId, TEST_SECRET) },
      );
    const decide = (id: string, action: "approve" | "deny" | "revoke", body: Record<string, unknown> = {}) =>
      api(`${sts.url}/approvals/${id}/${action}`, approver, "POST", body);
    const pendingRows = (clientId: string) =>
      sts.handle.db
        .selectFrom("approvals")
        .selectAll()
        .where("client_id", "=", clientId)
        .where("resource", "=", MCP)
        .orderBy("created_at")
        .execute();

    before(async () => {
      sts = await startTestApp({ engine, config: config() });
      approver = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver" });
    });
    after(async () => {
      await sts.stop();
    });

    test("pending once, then approved: the same request gets a token with sub = client_id, counted against the budget", async () => {
      const first = await token({ scope: "mail:send tools:read" });
      assert.equal(first.status, 400);
      assert.equal(first.body.error, "authorization_pending");
      const id = first.body.approval_id as string;
      assert.match(id, /^apr_[A-Za-z0-9_-]{22}$/);
      assert.match(first.body.error_description as string, new RegExp(`approval ${id} was requested`));

      // The same request (scopes in another order) finds the same pending approval: no second row.
      const again = await token({ scope: "tools:read mail:send" });
      assert.equal(again.status, 400);
      assert.equal(again.body.error, "authorization_pending");
      assert.equal(again.body.approval_id, id);
      assert.match(again.body.error_description as string, new RegExp(`approval ${id} still waits`));
      const rows = await pendingRows("billing-agent");
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.status, "pending");
      assert.equal(rows[0]!.subject, null);
      assert.equal(rows[0]!.requested_scope, "mail:send tools:read");
      assert.match(rows[0]!.task, /client_credentials/);
      assert.ok(rows[0]!.task.includes(MCP));

      const approved = await decide(id, "approve", { max_tokens: 2 });
      assert.equal(approved.status, 200, JSON.stringify(approved.body));

      const minted = await token({ scope: "tools:read mail:send" });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.token_type, "Bearer");
      assert.equal(minted.body.scope, "mail:send tools:read");
      assert.equal(minted.body.issued_token_type, undefined);
      const claims = decodeJwt(minted.body.access_token as string);
      assert.equal(claims.sub, "billing-agent");
      assert.equal(claims.client_id, "billing-agent");
      assert.equal(claims.aud, MCP);
      assert.equal(claims.approval_id, id);
      assert.equal(claims.iss, sts.url);

      const read = await api(`${sts.url}/approvals/${id}`, approver, "GET");
      assert.equal(read.body.tokens_issued, 1);
      // A narrower request is served by the same approval.
      const narrower = await token({ scope: "tools:read" });
      assert.equal(narrower.status, 200, JSON.stringify(narrower.body));
      assert.equal(decodeJwt(narrower.body.access_token as string).approval_id, id);
      // The budget (2) is used up: the next request records a new pending approval.
      const spent = await token({ scope: "tools:read mail:send" });
      assert.equal(spent.status, 400);
      assert.equal(spent.body.error, "authorization_pending");
      assert.notEqual(spent.body.approval_id, id);
      const audit = await sts.handle.db
        .selectFrom("audit_events")
        .select(["event", "outcome", "reason"])
        .where("approval_id", "=", id)
        .where("event", "=", "client_credentials")
        .orderBy("id")
        .execute();
      assert.deepEqual(
        audit.map((row) => [row.outcome, row.reason]),
        [
          ["refused", "approval_requested"],
          ["refused", "approval_pending"],
        ],
      );
    });

    test("no scope: default_scopes; an approver's narrowing is honoured for the same request", async () => {
      const first = await token({}, "post-agent");
      assert.equal(first.status, 400);
      assert.equal(first.body.error, "authorization_pending");
      const id = first.body.approval_id as string;
      const rows = await pendingRows("post-agent");
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.requested_scope, "tools:read");
      assert.equal((await decide(id, "approve")).status, 200);
      const minted = await token({}, "post-agent");
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.scope, "tools:read");
    });

    test("deny: access_denied, and no new pending approval within the cool-down", async () => {
      const first = await token({ scope: "files:read" });
      const id = first.body.approval_id as string;
      assert.equal(first.body.error, "authorization_pending");
      const denied = await decide(id, "deny", { reason: "not now" });
      assert.equal(denied.status, 200, JSON.stringify(denied.body));
      const before = (await pendingRows("billing-agent")).length;
      for (let i = 0; i < 3; i++) {
        const refused = await token({ scope: "files:read" });
        assert.equal(refused.status, 400);
        assert.equal(refused.body.error, "access_denied");
        assert.equal(refused.body.approval_id, id);
        assert.match(refused.body.error_description as string, new RegExp(`approval ${id} was denied`));
      }
      assert.equal((await pendingRows("billing-agent")).length, before);
      const audit = await sts.handle.db
        .selectFrom("audit_events")
        .select(["reason", "occurrences"])
        .where("approval_id", "=", id)
        .where("event", "=", "client_credentials")
        .orderBy("id")
        .execute();
      // Repeated refusals within a window (10 s) are one counted row; the three may straddle two windows.
      const counted = new Map<string | null, number>();
      for (const row of audit)
        counted.set(row.reason, (counted.get(row.reason) ?? 0) + Number(row.occurrences));
      assert.deepEqual(
        [...counted],
        [
          ["approval_requested", 1],
          ["approval_cooldown", 3],
        ],
      );
      assert.ok(audit.length <= 3, `${audit.length} rows`);
      assert.equal(audit.filter((row) => row.reason === "approval_cooldown").length <= 2, true);
    });

    test("revoke: the next token request is refused with access_denied", async () => {
      const first = await token({ scope: "files:read tools:read" });
      const id = first.body.approval_id as string;
      assert.equal((await decide(id, "approve")).status, 200);
      assert.equal((await token({ scope: "files:read tools:read" })).status, 200);
      assert.equal((await decide(id, "revoke", { reason: "done" })).status, 200);
      const refused = await token({ scope: "files:read tools:read" });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, "access_denied");
      assert.equal(refused.body.approval_id, id);
      const rows = await pendingRows("billing-agent");
      assert.equal(rows.filter((row) => row.requested_scope === "files:read tools:read").length, 1);
    });

    test("refusals before any approval: unknown scope, no scope without defaults, a resource that did not opt in", async () => {
      const unknown = await token({ scope: "tools:read admin" });
      assert.equal(unknown.status, 400);
      assert.equal(unknown.body.error, "invalid_scope");
      assert.equal(unknown.body.error_description, "not a scope of the resource: admin");
      const closed = await token({ resource: CLOSED, scope: "tools:read" });
      assert.equal(closed.status, 400);
      assert.equal(closed.body.error, "invalid_target");
      const bad = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", resource: MCP },
        { authorization: basicAuth("billing-agent", "wrong-secret-0123456789-abcdefghijklmnop") },
      );
      assert.equal(bad.status, 401);
      assert.equal(bad.body.error, "invalid_client");
      const count = await sts.handle.db
        .selectFrom("approvals")
        .select((eb) => eb.fn.countAll<string>().as("n"))
        .where("task", "like", "%admin%")
        .executeTakeFirstOrThrow();
      assert.equal(Number(count.n), 0);
    });

    test("the approval API credential (no resource) is still the built-in grant", async () => {
      const credential = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("post-agent", TEST_SECRET) },
      );
      assert.equal(credential.status, 200, JSON.stringify(credential.body));
      const claims = decodeJwt(credential.body.access_token as string);
      assert.equal(claims.aud, `${sts.url}/approvals`);
      assert.equal(claims.scope, "approvals:request");
    });

    test("concurrent identical requests record one pending approval", async () => {
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => token({ scope: "mail:send" }, "post-agent")),
      );
      const ids = new Set(answers.map((answer) => answer.body.approval_id));
      assert.deepEqual(
        answers.map((answer) => answer.body.error),
        Array(6).fill("authorization_pending"),
      );
      assert.equal(ids.size, 1);
      const rows = (await pendingRows("post-agent")).filter((row) => row.requested_scope === "mail:send");
      assert.equal(rows.length, 1);
    });
  });
}
