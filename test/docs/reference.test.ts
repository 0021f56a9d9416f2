import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import {
  type JsonSchema,
  members,
  openApi,
  REFERENCE,
  regenerate,
  SECTIONS,
  SUPPLEMENTS,
  toJsonSchema,
} from "../../scripts/docs.js";
import { configFileSchema, envSchema } from "../../sts/src/config/schema.js";
import { REASONS } from "../../sts/src/reasons.js";

const text = readFileSync(REFERENCE, "utf8");

/** The section between a generated marker pair. */
function section(name: string): string {
  const start = text.indexOf(`<!-- generated: ${name} (npm run docs) -->`);
  const end = text.indexOf(`<!-- end: ${name} -->`);
  assert.ok(start >= 0 && end > start, `docs/reference.md has the ${name} markers`);
  return text.slice(start, end);
}

/** The meaning cell (last column) of the table row for `key` in `name`'s section. */
function meaningOf(name: string, key: string): string | undefined {
  const row = section(name)
    .split("\n")
    .find((line) => line.startsWith(`| \`${key}\` |`));
  return row?.split(" | ").at(-1)?.replace(/ \|$/, "").trim();
}

describe("docs/reference.md", () => {
  test("every generated section is exactly what the code says (run `npm run docs` after changing it)", () => {
    assert.equal(text, regenerate(text));
    assert.deepEqual(Object.keys(SECTIONS).sort(), [
      "approval-api",
      "approval-objects",
      "config",
      "env",
      "reasons",
      "token-request",
    ]);
  });

  test("the drift check sees a changed, missing or reordered row", () => {
    const row = "| `tokens.max_ttl_seconds` |";
    assert.ok(text.includes(row));
    const lines = text.split("\n");
    const at = lines.findIndex((line) => line.startsWith(row));
    const edited = [...lines];
    edited[at] = (edited[at] as string).replace("`900`", "`600`");
    assert.notEqual(regenerate(edited.join("\n")), edited.join("\n"));
    const dropped = lines.filter((_, i) => i !== at).join("\n");
    assert.notEqual(regenerate(dropped), dropped);
    assert.equal(regenerate(dropped), text);
    assert.throws(() => regenerate(text.replace("<!-- end: config -->", "")), /config/);
  });

  test("its reason-code table has every code of sts/src/reasons.ts", () => {
    for (const reason of Object.keys(REASONS)) assert.ok(text.includes(`| \`${reason}\` |`), reason);
  });

  test("every config file key path has a row with a description (a .describe() in the schema)", () => {
    const paths = members(toJsonSchema(configFileSchema)).map((member) => member.path);
    for (const key of [
      "issuer",
      "tokens.max_delegation_depth",
      "resources[].rate_limit.burst",
      "clients[].client_secret",
      "trusted_issuers[].approver_max_age_seconds",
      "trusted_issuers[].approver_claim.value",
      "issuance_limits.client_credentials.per_second",
      "revocations.max_stream_subscribers",
      "webhooks[].secret",
      "dev_mode",
    ]) {
      assert.ok(paths.includes(key), key);
    }
    for (const member of members(toJsonSchema(configFileSchema))) {
      assert.ok((member.schema.description ?? "").length > 0, `${member.path} has a .describe() text`);
      assert.ok(meaningOf("config", member.path)?.startsWith(member.schema.description ?? "-"), member.path);
    }
    assert.match(
      meaningOf("config", "trusted_issuers[].approver_max_age_seconds") ?? "",
      /Default 900\. Security:/,
    );
  });

  test("every environment variable has a row with a description", () => {
    const names = Object.keys((toJsonSchema(envSchema).properties ?? {}) as Record<string, JsonSchema>);
    assert.ok(names.includes("COUNTERSIGN_KEK") && names.includes("DATABASE_URL"));
    const properties = toJsonSchema(envSchema).properties ?? {};
    for (const name of names) {
      const description = properties[name]?.description ?? "";
      assert.ok(description.length > 0, `${name} has a .describe() text`);
      assert.ok(meaningOf("env", name)?.startsWith(description), name);
    }
  });

  test("every approval API route of the OpenAPI document has its section; the audit route is written by hand", () => {
    const doc = openApi();
    const routes = Object.entries(doc.paths)
      .filter(([route]) => route.startsWith("/approvals"))
      .flatMap(([route, methods]) =>
        Object.keys(methods).map((method) => `${method.toUpperCase()} ${route}`),
      );
    assert.deepEqual(routes.sort(), [
      "GET /approvals",
      "GET /approvals/{id}",
      "POST /approvals",
      "POST /approvals/{id}/approve",
      "POST /approvals/{id}/deny",
      "POST /approvals/{id}/revoke",
    ]);
    for (const route of routes) assert.ok(section("approval-api").includes(`### \`${route}\``), route);
    assert.ok(text.includes("### `GET /approvals/{id}/audit`"));
    for (const member of [
      "resource",
      "scope",
      "task",
      "max_tokens",
      "ttl_seconds",
      "subject_issuer",
      "tools",
    ]) {
      assert.ok(section("approval-api").includes(`| \`${member}\` |`), member);
    }
  });

  test("every supplementary description names a member that has none of its own", () => {
    const doc = openApi();
    for (const key of Object.keys(SUPPLEMENTS)) {
      const [owner, ...rest] = key.split(".");
      const operation = Object.values(doc.paths)
        .flatMap((methods) => Object.values(methods))
        .find((candidate) => candidate.operationId === owner);
      if (operation) {
        const parameter = operation.parameters?.find((candidate) => candidate.name === rest.join("."));
        assert.ok(parameter, key);
        assert.equal(parameter.description ?? parameter.schema.description, undefined, key);
        continue;
      }
      const schema = doc.components.schemas[owner as string];
      assert.ok(schema, key);
      if (rest.length === 0) {
        assert.equal(schema.description, undefined, key);
        continue;
      }
      const member = members(schema).find((candidate) => candidate.path === rest.join("."));
      assert.ok(member, key);
      assert.equal(member.schema.description, undefined, key);
      assert.ok(text.includes(SUPPLEMENTS[key] as string), key);
    }
  });
});
