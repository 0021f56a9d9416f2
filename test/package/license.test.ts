import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { buildOpenApiDocument } from "../../sts/src/openapi/document.js";

const root = path.resolve(import.meta.dirname, "../..");
const read = (file: string) => readFileSync(path.join(root, file), "utf8");

test("LICENSE is the Apache License 2.0 with the Countersign authors' copyright, also in the verifier package", () => {
  const license = read("LICENSE");
  const copyright = "   Copyright 2026 The Countersign authors\n";
  assert.ok(license.includes(copyright));
  // With the appendix's placeholder put back it is, byte for byte, the text at apache.org/licenses/LICENSE-2.0.txt.
  const standard = license.replace(copyright, "   Copyright [yyyy] [name of copyright owner]\n");
  assert.equal(
    createHash("sha256").update(standard).digest("hex"),
    "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
  );
  assert.equal(read("gateway-verifier/LICENSE"), license);
});

test("both package.json files and the OpenAPI document say Apache-2.0", () => {
  for (const file of ["package.json", "gateway-verifier/package.json"]) {
    assert.equal((JSON.parse(read(file)) as { license?: string }).license, "Apache-2.0", file);
  }
  const document = buildOpenApiDocument({ issuer: "http://127.0.0.1:8080" }) as {
    info: { license?: unknown };
  };
  assert.deepEqual(document.info.license, {
    name: "Apache-2.0",
    url: "https://www.apache.org/licenses/LICENSE-2.0",
  });
});
