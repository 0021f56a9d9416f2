import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { recordAudit } from "../../../sts/src/audit/audit_log.js";
import { hasControlCharacter, isStorableText, toStorableText } from "../../../sts/src/db/text.js";
import { isUsableSubject } from "../../../sts/src/identity/trusted_issuers.js";
import { basicAuth, postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

test("usable subjects: 1-255 units of well-formed Unicode without control characters", () => {
  for (const sub of ["alice", "spiffe://example.test/agent/7", "émile", "😀", "x".repeat(255)]) {
    assert.equal(isUsableSubject(sub), true, JSON.stringify(sub));
  }
  for (const sub of [
    "",
    "x".repeat(256),
    "a\u0000b",
    "tab\there",
    "new\nline",
    "del\u007f",
    "c1\u0085",
    "\ud800",
    "a\udc00",
    "\ud83d",
    7,
    null,
  ]) {
    assert.equal(isUsableSubject(sub), false, JSON.stringify(sub));
  }
});

test("storable text: no NUL, no lone surrogate; control characters are found", () => {
  for (const text of ["", "plain", "line\nbreak\ttab", "😀", "é"])
    assert.equal(isStorableText(text), true, text);
  for (const text of ["a\u0000", "\ud800", "x\udfff", "\ud83d"])
    assert.equal(isStorableText(text), false, text);
  assert.equal(hasControlCharacter("line\nbreak"), true);
  assert.equal(hasControlCharacter("c1\u009f"), true);
  assert.equal(hasControlCharacter("plain é 😀"), false);
  assert.equal(toStorableText("a\u0000b\ud800c😀\udc00"), "a\ufffdb\ufffdc😀\ufffd");
  assert.equal(toStorableText("plain"), "plain");
});

for (const engine of testEngines()) {
  describe(`text Postgres cannot store, on ${engine}`, () => {
    let sts: TestApp;
    before(async () => {
      sts = await startTestApp({ engine });
    });
    after(() => sts.stop());

    for (const [label, sub] of [
      ["a NUL character", "a\u0000b"],
      ["a line break", "alice\nadmin"],
      ["a lone surrogate", "\ud800"],
    ] as const) {
      test(`a subject token whose sub holds ${label}: 400 invalid_grant, no 5xx, nothing written`, async () => {
        const approvalId = await insertApproval(sts.handle.db, { subject: null });
        const token = await sts.app.services.devIssuer!.mint({ sub, usage: "subject" });
        const answer = await exchange(sts.url, {
          subject_token: token,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(answer.status, 400);
        assert.deepEqual(answer.body, {
          error: "invalid_grant",
          error_description: "the subject token has no usable sub",
        });
        const row = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.equal(row.tokens_issued, 0);
      });
    }

    test("an approval id with a NUL: 400 invalid_request, not a 5xx", async () => {
      const token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const answer = await exchange(sts.url, {
        subject_token: token,
        authorization_details: agentTask("apr_\u0000"),
      });
      assert.equal(answer.status, 400);
      assert.deepEqual(answer.body, {
        error: "invalid_request",
        error_description: "the agent_task must carry an approval_id",
      });
    });

    test("an audit detail holding a NUL or a lone surrogate is stored, with U+FFFD in their place", async () => {
      await recordAudit(sts.handle.db, {
        event: "unstorable_text_test",
        outcome: "info",
        detail: { echoed: "a\u0000b", nested: ["\ud800"] },
      });
      const rows = await sts.handle.db
        .selectFrom("audit_events")
        .select("detail")
        .where("event", "=", "unstorable_text_test")
        .execute();
      assert.deepEqual(rows, [{ detail: { echoed: "a\ufffdb", nested: ["\ufffd"] } }]);
    });

    test("a client_id with a NUL: 401 invalid_client, not a 5xx", async () => {
      const answer = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        scope: "approvals:request",
        client_id: "billing-agent\u0000",
        client_secret: TEST_SECRET,
      });
      assert.equal(answer.status, 401);
      assert.deepEqual(answer.body, {
        error: "invalid_client",
        error_description: "client authentication failed",
      });
    });

    test("approval bodies with a NUL or a lone surrogate: 400 naming the field, not a 5xx or a silent change", async () => {
      const cc = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      const create = async (body: Record<string, unknown>) => {
        const response = await fetch(`${sts.url}/approvals`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${cc.body.access_token as string}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            resource: "https://crm.example.test",
            scope: "crm:read",
            task: "t",
            ...body,
          }),
        });
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      };
      assert.deepEqual(await create({ task: "a\u0000b" }), {
        status: 400,
        body: {
          error: "invalid_request",
          error_description: "task: must be well-formed Unicode without NUL characters",
        },
      });
      assert.deepEqual(await create({ task: "\ud800x" }), {
        status: 400,
        body: {
          error: "invalid_request",
          error_description: "task: must be well-formed Unicode without NUL characters",
        },
      });
      assert.deepEqual(await create({ subject: "alice\nadmin" }), {
        status: 400,
        body: {
          error: "invalid_request",
          error_description: "subject: must be well-formed Unicode without control characters",
        },
      });
      const multiline = await create({ task: "first line\nsecond line" });
      assert.equal(multiline.status, 201);
      assert.equal(multiline.body.task, "first line\nsecond line");
    });
  });
}
