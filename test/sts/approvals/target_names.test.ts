import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { approveBody, createApprovalBody } from "../../../sts/src/approvals/schemas.js";
import { describeIssues } from "../../../sts/src/http/json_body.js";

const base = { resource: "https://crm.example.test", scope: "crm.read", task: "sync contacts" };
const REFUSED = "must not contain control, bidi control, invisible or line separator characters";

/** The one-line `error_description` the route answers for `body`, or "ok" when it parses. */
function verdict(schema: typeof createApprovalBody | typeof approveBody, body: unknown): string {
  const parsed = schema.safeParse(body);
  return parsed.success ? "ok" : describeIssues(parsed.error);
}

describe("MCP names in approvals (hostile agent: a name that reads as another)", () => {
  test("tools, resources, prompts and call.tool refuse controls, bidi controls and line separators", () => {
    // U+202E (right-to-left override) makes "delete_all\u202Eredaer" display as "delete_allreader".
    const names = [
      "delete_all\u202Eredaer",
      "echo\u2066x",
      "a\u200Fb",
      "read\nwrite",
      "x\u001b[2K",
      "x\u0085",
      "a\u2028b",
    ];
    for (const name of names) {
      const label = JSON.stringify(name);
      assert.equal(verdict(createApprovalBody, { ...base, tools: [name] }), `tools.0: ${REFUSED}`, label);
      assert.equal(
        verdict(createApprovalBody, { ...base, prompts: ["ok", name] }),
        `prompts.1: ${REFUSED}`,
        label,
      );
      assert.equal(
        verdict(createApprovalBody, { ...base, resources: [name] }),
        `resources.0: ${REFUSED}`,
        label,
      );
      assert.equal(
        verdict(createApprovalBody, { ...base, call: { tool: name, arguments: {} } }),
        `call.tool: ${REFUSED}`,
        label,
      );
      assert.equal(verdict(approveBody, { tools: [name] }), `tools.0: ${REFUSED}`, label);
    }
  });

  test("ordinary names, non-Latin ones included, are accepted", () => {
    for (const name of ["send_email", "crm.contacts/list", "file:///srv/a%20b.txt", "報告", "שלום"]) {
      assert.equal(
        verdict(createApprovalBody, { ...base, tools: [name], resources: [name], prompts: [name] }),
        "ok",
      );
      assert.equal(
        verdict(createApprovalBody, { ...base, call: { tool: name, arguments: { q: "\u202E" } } }),
        "ok",
      );
    }
  });
});
