import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { DEFAULT_POLICY_FILE } from "../../../sts/src/policy/schema.js";
import { baseConfig, bearerJson, startTestApp, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";

const dir = mkdtempSync(path.join(tmpdir(), "countersign-approver-targets-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const LEDGER_FILE = "file:///srv/ledger.csv";

// Approver policies on the MCP names an approval is limited to: the narrowed `tools` on approve, the
// current `resources` on deny and revoke. Absent lists allow every name, so the forbid covers them.
const TARGET_POLICIES = path.join(dir, "targets.cedar");
writeFileSync(
  TARGET_POLICIES,
  `@id("no-delete-all")
@reason("delete_all is never approved")
forbid (principal is Approver, action == Action::"approve", resource)
unless { context has tools && !context.tools.contains("delete_all") };

@id("ledger-file-security")
@reason("only the security group denies or revokes access to the ledger file")
forbid (principal is Approver, action in [Action::"deny", Action::"revoke"], resource)
when {
  context has resources && context.resources.contains("${LEDGER_FILE}") &&
  !principal.groups.contains("security")
};
`,
);

for (const engine of testEngines()) {
  describe(`approver policies on an approval's tools, resources and prompts, on ${engine}`, () => {
    let sts: TestApp;
    before(async () => {
      sts = await startTestApp({
        engine,
        config: { ...baseConfig(), policies: [DEFAULT_POLICY_FILE, TARGET_POLICIES] },
      });
    });
    after(() => sts.stop());

    const approver = (sub: string, groups: string[] = []) =>
      sts.app.services.devIssuer!.mint({ sub, usage: "approver", extraClaims: { groups } });

    const decide = async (id: string, action: string, token: string, body: unknown = {}) =>
      bearerJson(`${sts.url}/approvals/${id}/${action}`, token, "POST", body);

    async function refusalsOf(id: string) {
      return sts.handle.db
        .selectFrom("audit_events")
        .select(["event", "reason", "actor"])
        .where("approval_id", "=", id)
        .where("outcome", "=", "refused")
        .orderBy("id")
        .execute();
    }

    test("approving while the narrowed tools hold delete_all: 403 access_denied naming the policy, audited; narrowing it away approves", async () => {
      const carol = await approver("carol");
      const id = await insertApproval(sts.handle.db, {
        status: "pending",
        tools: ["read_invoices", "delete_all"],
      });
      const refused = await decide(id, "approve", carol);
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "access_denied",
        error_description: "policy no-delete-all forbids this approval: delete_all is never approved",
      });
      assert.deepEqual(await refusalsOf(id), [
        { event: "approval.approve", reason: "policy_denied", actor: "carol" },
      ]);

      const narrowed = await decide(id, "approve", carol, { tools: ["read_invoices"] });
      assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
      assert.equal(narrowed.body.status, "approved");
      assert.deepEqual(narrowed.body.tools, ["read_invoices"]);
    });

    test("an approval naming no tools allows every tool: the policy sees tools absent and forbids; a tools list approves", async () => {
      const carol = await approver("carol");
      const id = await insertApproval(sts.handle.db, { status: "pending" });
      const refused = await decide(id, "approve", carol);
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "access_denied",
        error_description: "policy no-delete-all forbids this approval: delete_all is never approved",
      });
      const listed = await decide(id, "approve", carol, { tools: ["read_invoices"] });
      assert.equal(listed.status, 200, JSON.stringify(listed.body));
      assert.deepEqual(listed.body.tools, ["read_invoices"]);
    });

    test("revoking an approval that names the ledger file: 403 for an approver outside security, 200 for security", async () => {
      const id = await insertApproval(sts.handle.db, {
        status: "approved",
        tools: ["read_invoices"],
        resources: [LEDGER_FILE, "file:///srv/notes.txt"],
      });
      const refused = await decide(id, "revoke", await approver("carol"), { reason: "done" });
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "access_denied",
        error_description:
          "policy ledger-file-security forbids revoking this approval: only the security group denies or revokes access to the ledger file",
      });
      assert.deepEqual(await refusalsOf(id), [
        { event: "approval.revoke", reason: "policy_denied", actor: "carol" },
      ]);
      const revoked = await decide(id, "revoke", await approver("dave", ["security"]), { reason: "done" });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      assert.equal(revoked.body.status, "revoked");

      // An approval naming other resources (or none) is revoked by anyone.
      for (const resources of [["file:///srv/notes.txt"], undefined]) {
        const other = await insertApproval(sts.handle.db, { status: "approved", resources });
        const answer = await decide(other, "revoke", await approver("carol"));
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
      }
    });

    test("denying a pending approval that names the ledger file: the same policy reads its requested resources", async () => {
      const id = await insertApproval(sts.handle.db, { status: "pending", resources: [LEDGER_FILE] });
      const refused = await decide(id, "deny", await approver("carol"));
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "access_denied",
        error_description:
          "policy ledger-file-security forbids denying this approval: only the security group denies or revokes access to the ledger file",
      });
      const denied = await decide(id, "deny", await approver("dave", ["security"]));
      assert.equal(denied.status, 200, JSON.stringify(denied.body));
      assert.equal(denied.body.status, "denied");
    });
  });
}
