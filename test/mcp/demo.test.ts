import assert from "node:assert/strict";
import { test } from "node:test";
import { runMcpDemo } from "../../examples/mcp/run.js";

/** Each step's expected outcome, in order, as the demo prints it. */
const EXPECTED = [
  "━━ Step 1. The agent connects: it asks for a task, carol approves it ━━",
  'scope "tools:read", tools ["search"]',
  "✔ expected: the approved tool answers",
  "━━ Step 2. A tool the approval does not name: refused, the agent steps up, carol approves the union ━━",
  'scope "tools:read", tools ["search","send_email"]',
  'scope "tools:read mail:send", tools ["search","send_email"]',
  "✔ expected: the email is sent after two step-ups",
  "━━ Step 3. A per-call approval: carol sees the exact arguments; the token is good for that one call ━━",
  'the one call {"tool":"send_email","arguments":{"body":"Q1 revenue: 42","to":"bob@example.test"},"arguments_digest":"',
  "✔ expected: the exact call passes",
  "the same token, other arguments → HTTP 403 reason=call_arguments_mismatch",
  "the same token, the same call again → HTTP 403 reason=call_token_used",
  "━━ Step 4. carol revokes the task: the next call is refused and the agent does not ask again ━━",
  "search → approval_revoked",
  "✔ expected: no new request for carol",
  "All 4 steps ended as expected.",
];

test("npm run demo:mcp: every step prints its expected outcome and the demo succeeds", async () => {
  let output = "";
  const ok = await runMcpDemo({ write: (text) => (output += text), color: false });
  assert.equal(ok, true, output);
  let from = 0;
  for (const expected of EXPECTED) {
    const at = output.indexOf(expected, from);
    assert.ok(at >= 0, `missing, in order: ${expected}\n\n${output}`);
    from = at + expected.length;
  }
  assert.equal((output.match(/✔ expected:/g) ?? []).length, 7, output);
  assert.doesNotMatch(output, /✘/);
});
