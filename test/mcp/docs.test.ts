import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { MCP_REASONS } from "../../gateway-verifier/src/index.js";

test("docs/mcp.md's reason table lists exactly the MCP gateway's reason codes, statuses and errors", () => {
  const docs = readFileSync(new URL("../../docs/mcp.md", import.meta.url), "utf8");
  const rows = [...docs.matchAll(/^\| `(\w+)` \| (\d{3}) \| (?:`(\w+)`|(-\d+)) \|/gm)].map((m) => [
    m[1],
    Number(m[2]),
    m[3] ?? Number(m[4]),
  ]);
  const expected = Object.entries(MCP_REASONS).map(([reason, entry]) => [
    reason,
    entry.status,
    entry.kind === "jsonrpc" ? entry.code : entry.error,
  ]);
  assert.deepEqual(rows, expected);
});
