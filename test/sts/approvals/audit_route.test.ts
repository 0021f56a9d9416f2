import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";
import { windowsTouched } from "../../helpers/refusal_windows.js";

/**
 * `GET /approvals/{id}/audit` refuses like every other approval API route: an authenticated caller's
 * refusal is an audit row `approval.read_audit` under the caller (never under the approval, whose trail
 * a prober would fill), an anonymous caller's is a log line only.
 */
for (const engine of testEngines()) {
  describe(`GET /approvals/{id}/audit refusals on ${engine}`, () => {
    let sts: TestApp;
    let post: string;
    let alice: string;

    before(async () => {
      sts = await startTestApp({ engine });
      const answer = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        scope: "approvals:request",
        client_id: "post-agent",
        client_secret: TEST_SECRET,
      });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      post = answer.body.access_token as string;
      alice = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver" });
    });
    after(() => sts.stop());

    async function readAudit(id: string, token?: string) {
      const response = await fetch(`${sts.url}/approvals/${id}/audit`, {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    }

    /** The newest refusal audited under `reason`. */
    async function refusal(reason: string) {
      return sts.app.services.db
        .selectFrom("audit_events")
        .select(["event", "outcome", "reason", "actor", "client_id", "approval_id"])
        .where("reason", "=", reason)
        .orderBy("id", "desc")
        .executeTakeFirst();
    }

    async function auditRows(): Promise<number> {
      const row = await sts.app.services.db
        .selectFrom("audit_events")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    }

    /** The log lines of approval API refusals. */
    function refusalLines() {
      return sts.logs.lines
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.msg === "approval api refusal");
    }

    test("another agent reading an approval's audit trail: 403, audited under the agent, not the approval", async () => {
      // billing-agent's approval; post-agent (a hostile agent) probes its trail.
      const id = await insertApproval(sts.handle.db, { status: "pending" });
      const refused = await readAudit(id, post);
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "insufficient_scope",
        error_description: "this call needs an approver; agents may not decide approvals",
      });
      assert.deepEqual(await refusal("role_approver_required"), {
        event: "approval.read_audit",
        outcome: "refused",
        reason: "role_approver_required",
        actor: "post-agent",
        client_id: "post-agent",
        approval_id: null,
      });
      const line = refusalLines().at(-1);
      assert.equal(line?.event, "approval.read_audit");
      assert.equal(line?.reason, "role_approver_required");
      assert.equal(line?.actor, "post-agent");
      // The probe is not in the approval's own trail.
      const trail = await readAudit(id, alice);
      assert.equal(trail.status, 200);
      assert.deepEqual(
        (trail.body.events as { event: string }[]).map((event) => event.event),
        [],
      );
    });

    test("an agent looping on a refused call: 60 refusals add 60 to one counted row per 10-second window they touch", async () => {
      const id = await insertApproval(sts.handle.db, { status: "pending" });
      const counted = async () => {
        const rows = await sts.app.services.db
          .selectFrom("audit_events")
          .select(["occurrences"])
          .where("event", "=", "approval.read_audit")
          .where("client_id", "=", "post-agent")
          .where("reason", "=", "role_approver_required")
          .where("approval_id", "is", null)
          .execute();
        return rows.reduce((sum, row) => sum + Number(row.occurrences), 0);
      };
      const before = { rows: await auditRows(), counted: await counted() };
      const started = Date.now();
      for (let i = 0; i < 60; i++) assert.equal((await readAudit(id, post)).status, 403);
      const seconds = (Date.now() - started) / 1000;
      assert.equal((await counted()) - before.counted, 60);
      const added = (await auditRows()) - before.rows;
      assert.ok(added <= windowsTouched(seconds), `${added} new rows in ${seconds} s`);
    });

    test("approvers looping on a refused decision: 60 refusals each of two approvers add to one counted row per approver and window, under the approval", async () => {
      const id = await insertApproval(sts.handle.db, { status: "denied" });
      const bob = await sts.app.services.devIssuer!.mint({ sub: "bob", usage: "approver" });
      const approve = async (token: string) => {
        const response = await fetch(`${sts.url}/approvals/${id}/approve`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: "{}",
        });
        await response.body?.cancel();
        return response.status;
      };
      const rowsOf = () =>
        sts.app.services.db
          .selectFrom("audit_events")
          .select(["actor", "client_id", "occurrences"])
          .where("event", "=", "approval.approve")
          .where("reason", "=", "state_conflict")
          .where("approval_id", "=", id)
          .execute();
      const started = Date.now();
      for (let i = 0; i < 60; i++) {
        assert.equal(await approve(alice), 409);
        assert.equal(await approve(bob), 409);
      }
      const seconds = (Date.now() - started) / 1000;
      const rows = await rowsOf();
      for (const approver of ["alice", "bob"]) {
        const own = rows.filter((row) => row.actor === approver);
        assert.equal(
          own.reduce((sum, row) => sum + Number(row.occurrences), 0),
          60,
        );
        assert.ok(
          own.length >= 1 && own.length <= windowsTouched(seconds),
          `${own.length} rows for ${approver} in ${seconds} s`,
        );
        assert.ok(own.every((row) => row.client_id === null));
      }
      assert.equal(rows.length, rows.filter((row) => row.actor === "alice" || row.actor === "bob").length);
    });

    test("an approver asking for an unknown approval's trail: 404, audited under the approver", async () => {
      const refused = await readAudit("apr_AAAAAAAAAAAAAAAAAAAAAA", alice);
      assert.equal(refused.status, 404);
      assert.deepEqual(refused.body, { error: "not_found", error_description: "no such approval" });
      assert.deepEqual(await refusal("not_found"), {
        event: "approval.read_audit",
        outcome: "refused",
        reason: "not_found",
        actor: "alice",
        client_id: null,
        approval_id: null,
      });
    });

    test("an anonymous caller: 401, a log line with the reason, no audit row, no token in the log", async () => {
      const id = await insertApproval(sts.handle.db, { status: "pending" });
      const rows = await auditRows();
      const none = await readAudit(id);
      assert.equal(none.status, 401);
      assert.equal(none.body.error, "invalid_request");
      const bad = await readAudit(id, "not-a-jwt");
      assert.equal(bad.status, 401);
      assert.equal(bad.body.error, "invalid_token");
      assert.equal(await auditRows(), rows);
      assert.deepEqual(
        refusalLines()
          .slice(-2)
          .map((line) => [line.event, line.reason, line.actor]),
        [
          ["approval.read_audit", "credentials_missing", null],
          ["approval.read_audit", "credentials_invalid", null],
        ],
      );
      assert.ok(!sts.logs.text.includes(post));
      assert.ok(!sts.logs.text.includes(alice));
    });
  });
}
