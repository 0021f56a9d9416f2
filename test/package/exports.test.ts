import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../..");

test("countersign/gateway-verifier resolves through the package exports (built by npm install's prepare)", async () => {
  const { stdout } = await run(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      "const m = await import('countersign/gateway-verifier'); console.log(JSON.stringify(Object.keys(m).sort()))",
    ],
    { cwd: root, timeout: 30_000 },
  );
  const exported = JSON.parse(stdout) as string[];
  for (const name of [
    "createVerifier",
    "koaVerifier",
    "connectVerifier",
    "createExtAuthzHandler",
    "REASONS",
  ]) {
    assert.ok(exported.includes(name), `${name} is exported`);
  }
});

test("the gateway verifier never imports from sts/ and loads only jose at run time", () => {
  const dir = path.join(root, "gateway-verifier/src");
  const runtime = new Set<string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
    const source = readFileSync(path.join(dir, file), "utf8");
    for (const match of source.matchAll(/^import\s+(type\s+)?[^"']*["']([^"']+)["']/gm)) {
      const specifier = match[2] as string;
      assert.ok(!specifier.includes("sts/"), `${file} imports ${specifier}`);
      const typeOnly = match[1] !== undefined;
      if (!typeOnly && !specifier.startsWith(".") && !specifier.startsWith("node:")) runtime.add(specifier);
    }
  }
  // Koa and rate-limiter-flexible appear only as types; the Redis store loads its limiter lazily.
  assert.deepEqual([...runtime].sort(), ["jose"]);
});
