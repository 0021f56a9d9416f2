import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { isUsableSubject } from "../../sts/src/identity/trusted_issuers.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";

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

for (const engine of testEngines()) {
  describe(`subject identifiers on ${engine}`, () => {
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
  });
}
