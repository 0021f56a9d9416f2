import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

test("the MCP gateway imports only Node built-ins and the verifier package's own modules", () => {
  const dir = path.resolve(import.meta.dirname, "../../gateway-verifier/src/mcp");
  const files = readdirSync(dir).filter((file) => file.endsWith(".ts"));
  assert.ok(files.includes("gateway.ts"));
  for (const file of files) {
    const source = readFileSync(path.join(dir, file), "utf8");
    for (const match of source.matchAll(/^(?:import|export)\s(?:[^;"']*?\sfrom\s+)?["']([^"']+)["']/gm)) {
      const specifier = match[1] as string;
      assert.ok(!specifier.includes("sts/"), `${file} imports ${specifier}`);
      assert.ok(
        specifier.startsWith("node:") || specifier.startsWith("./") || specifier.startsWith("../"),
        `${file} imports ${specifier}`,
      );
      if (specifier.startsWith("../"))
        assert.match(specifier, /^\.\.\/[a-z_]+\.js$/, `${file} imports ${specifier}`);
    }
  }
});
