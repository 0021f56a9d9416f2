import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { test } from "node:test";

/** Upper bound on the demo's run time, in milliseconds (a bound so the suite stops by itself, not a timing assertion). */
const BOUND_MS = 240_000;

/** Each step's expected outcome, as the demo prints it. */
const EXPECTED = [
  "━━ Step 1. An agent asks for a task ━━",
  "✔ expected: the request is pending (HTTP 201)",
  "✔ expected: no token yet: HTTP 400 authorization_pending",
  "━━ Step 2. A human approves a narrower task ━━",
  "✔ expected: approved with crm:read only, 3 tokens, 1/s burst 3",
  "━━ Step 3. The agent exchanges for a task token and calls the CRM API ━━",
  "✔ expected: token exchange succeeds (HTTP 200)",
  "GET /contacts (needs crm:read) → HTTP 200",
  "━━ Step 4. Stopped: over scope ━━",
  "→ HTTP 403 insufficient_scope reason=insufficient_scope",
  "✔ expected: HTTP 403 insufficient_scope",
  "━━ Step 5. Stopped: wrong service ━━",
  "→ HTTP 401 invalid_token reason=invalid_audience",
  "━━ Step 6. Stopped: stale token ━━",
  "→ HTTP 401 invalid_token reason=token_stale",
  "✔ expected: HTTP 200 with a fresh token",
  "━━ Step 7. Stopped: budget used up ━━",
  `→ HTTP 400 invalid_grant — "the approval's token budget is used up"`,
  "━━ Step 8. Stopped: burst ━━",
  "→ HTTP 429 rate_limited reason=rate_limited",
  "retry-after: ",
  "━━ Step 9. Stopped: revoked ━━",
  `→ HTTP 400 invalid_grant — "the approval was revoked"`,
  "→ HTTP 401 invalid_token reason=approval_revoked",
  "All 9 steps ended as expected.",
];

test("npm run demo: every step prints its expected outcome and the demo exits 0", async () => {
  const child = spawn(process.execPath, [path.join("node_modules", ".bin", "tsx"), "examples/demo/run.ts"], {
    cwd: process.cwd(),
    env: { ...process.env, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const bound = setTimeout(() => child.kill("SIGKILL"), BOUND_MS);
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  clearTimeout(bound);

  assert.equal(code, 0, `${stdout}\n${stderr}`);
  let from = 0;
  for (const expected of EXPECTED) {
    const at = stdout.indexOf(expected, from);
    assert.ok(at >= 0, `missing, in order: ${expected}\n\n${stdout}`);
    from = at + expected.length;
  }
  assert.equal((stdout.match(/✔ expected:/g) ?? []).length, 17, stdout);
  assert.doesNotMatch(stdout, /✘/);
});
