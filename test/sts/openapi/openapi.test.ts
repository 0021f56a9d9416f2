import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { buildOpenApiDocument } from "../../../sts/src/openapi/document.js";
import { startTestApp, type TestApp } from "../../helpers/app.js";

interface Operation {
  operationId: string;
  security?: Array<Record<string, string[]>>;
  requestBody?: { content: Record<string, { schema: { $ref: string } }> };
  responses: Record<string, { content?: Record<string, { schema: { $ref: string } }> }>;
}
type Document = {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>>; securitySchemes: Record<string, unknown> };
};

describe("GET /openapi.json", () => {
  let sts: TestApp;
  let document: Document;
  let response: Response;

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    response = await fetch(`${sts.url}/openapi.json`);
    document = (await response.json()) as Document;
  });
  after(() => sts.stop());

  test("is served without authentication as JSON", () => {
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(document.openapi, "3.1.0");
    assert.deepEqual((document as unknown as { servers: unknown }).servers, [{ url: sts.url }]);
  });

  test("is a valid OpenAPI 3.1 document", async () => {
    const validator = new Validator();
    type Spec = Parameters<Validator["validate"]>[0];
    const result = await validator.validate(document as unknown as Spec);
    assert.deepEqual(result, { valid: true });
    assert.equal(validator.version, "3.1");
    // The validator is not lenient: a response without its required description is refused.
    const broken = structuredClone(document);
    const post = broken.paths["/approvals"]?.post as
      | { responses: Record<string, { description?: string }> }
      | undefined;
    assert.ok(post?.responses["201"]);
    delete post.responses["201"].description;
    assert.equal((await new Validator().validate(broken as unknown as Spec)).valid, false);
  });

  test("covers every approval API route (docs/reference.md#the-approval-api-routes) with its bodies, answers and errors", () => {
    const expected: Array<[string, string, string, string[]]> = [
      ["/approvals", "post", "201", ["400", "401", "403", "413", "415", "429"]],
      ["/approvals", "get", "200", ["400", "401", "403"]],
      ["/approvals/{id}", "get", "200", ["401", "404"]],
      ["/approvals/{id}/approve", "post", "200", ["400", "401", "403", "404", "409", "413", "415"]],
      ["/approvals/{id}/deny", "post", "200", ["400", "401", "403", "404", "409", "413", "415"]],
      ["/approvals/{id}/revoke", "post", "200", ["400", "401", "403", "404", "409", "413", "415"]],
    ];
    for (const [path, method, success, errors] of expected) {
      const operation = document.paths[path]?.[method];
      assert.ok(operation, `${method.toUpperCase()} ${path}`);
      assert.ok(operation.security && operation.security.length > 0, `${path} names its security`);
      assert.ok(operation.responses[success]?.content?.["application/json"], `${path} ${success}`);
      for (const status of errors) {
        assert.deepEqual(
          operation.responses[status]?.content?.["application/json"]?.schema,
          { $ref: "#/components/schemas/Error" },
          `${method} ${path} ${status}`,
        );
      }
      if (method === "post") assert.ok(operation.requestBody?.content["application/json"], `${path} body`);
    }
    // The per-agent bounds of POST /approvals say when to retry.
    const capped = document.paths["/approvals"]?.post?.responses["429"] as {
      headers?: Record<string, unknown>;
    };
    assert.deepEqual(capped.headers, {
      "Retry-After": { description: "Seconds to wait (RFC 9110 §10.2.3)", schema: { type: "integer" } },
    });
    assert.deepEqual(Object.keys(document.components.securitySchemes).sort(), [
      "agentBearer",
      "approverBearer",
      "clientSecretBasic",
    ]);
    assert.ok(document.paths["/token"]?.post?.requestBody?.content["application/x-www-form-urlencoded"]);
  });

  test("the schemas are the zod schemas: required fields, limits, strictness, defaults", () => {
    const request = document.components.schemas.ApprovalRequest as {
      required: string[];
      additionalProperties: boolean;
      properties: Record<string, Record<string, unknown>>;
    };
    assert.deepEqual(request.required, ["resource", "scope", "task"]);
    assert.equal(request.additionalProperties, false);
    assert.equal(request.properties.max_tokens?.default, 10);
    assert.equal(request.properties.ttl_seconds?.default, 3600);
    assert.equal(request.properties.task?.maxLength, 2000);
    const approval = document.components.schemas.Approval as { required: string[] };
    for (const field of [
      "id",
      "status",
      "client_id",
      "resource",
      "scope",
      "task",
      "subject",
      "max_tokens",
      "tokens_issued",
      "rate_limit",
      "requested_by",
      "approved_by",
      "created_at",
      "decided_at",
      "expires_at",
      "tools",
      "resources",
      "prompts",
    ]) {
      assert.ok(approval.required.includes(field), field);
    }
    // MCP tools, resources and prompts: optional bounded lists of names on the request and the approve body.
    for (const name of ["ApprovalRequest", "ApproveRequest"]) {
      const body = document.components.schemas[name] as {
        properties: Record<string, { type?: string; maxItems?: number; items?: { maxLength?: number } }>;
        required?: string[];
      };
      for (const key of ["tools", "resources", "prompts"]) {
        assert.equal(body.properties[key]?.type, "array", `${name}.${key}`);
        assert.equal(body.properties[key]?.maxItems, 64, `${name}.${key}`);
        assert.equal(body.properties[key]?.items?.maxLength, 256, `${name}.${key}`);
        assert.ok(!(body.required ?? []).includes(key), `${name}.${key}`);
      }
    }
    assert.deepEqual(document.components.schemas.Error?.required, ["error", "error_description"]);
  });

  test("the document matches what buildOpenApiDocument makes", () => {
    assert.deepEqual(document, buildOpenApiDocument({ issuer: sts.url }));
  });
});
