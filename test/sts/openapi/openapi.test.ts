import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { buildOpenApiDocument } from "../../../sts/src/openapi/document.js";
import {
  cursorResetSchema,
  feedRateLimitedSchema,
  revocationPageSchema,
} from "../../../sts/src/revocations/wire.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";

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

  test("covers the revocation feed and its stream: 410 cursor_reset, 429 slow_down (feed_rate_limited) and too_many_streams (streams_per_address_reached, replay_rate_limited) with Retry-After, 503 (stream_subscribers_reached)", () => {
    type Response = {
      description: string;
      headers?: Record<string, unknown>;
      content?: Record<string, { schema: { $ref?: string } }>;
    };
    const responses = (path: string) =>
      (document.paths[path]?.get?.responses ?? {}) as unknown as Record<string, Response>;
    const schemaOf = (response: Response | undefined, type = "application/json") =>
      response?.content?.[type]?.schema.$ref?.split("/").at(-1);
    const feed = responses("/revocations");
    assert.deepEqual(Object.keys(feed).sort(), ["200", "400", "410", "429", "503"]);
    assert.equal(schemaOf(feed["200"]), "RevocationPage");
    assert.equal(schemaOf(feed["410"]), "CursorReset");
    assert.equal(schemaOf(feed["429"]), "FeedRateLimited");
    assert.deepEqual(Object.keys(feed["429"]?.headers ?? {}), ["Retry-After"]);
    const stream = responses("/revocations/stream");
    assert.deepEqual(Object.keys(stream).sort(), ["200", "400", "410", "429", "503"]);
    assert.ok(stream["200"]?.content?.["text/event-stream"]);
    assert.equal(schemaOf(stream["410"]), "CursorReset");
    assert.equal(schemaOf(stream["429"]), "TooManyStreams");
    assert.match(stream["429"]?.description ?? "", /too_many_streams/);
    assert.deepEqual(Object.keys(stream["429"]?.headers ?? {}), ["Retry-After"]);
    assert.equal(schemaOf(stream["503"]), "StreamsFull");
    assert.deepEqual(Object.keys(stream["503"]?.headers ?? {}), ["Retry-After"]);
    const tooMany = document.components.schemas.TooManyStreams as {
      required: string[];
      properties: { error: { const: string }; reason: { enum: string[] } };
    };
    assert.deepEqual([...tooMany.required].sort(), ["error", "error_description", "reason"]);
    assert.equal(tooMany.properties.error.const, "too_many_streams");
    assert.deepEqual(tooMany.properties.reason.enum, ["streams_per_address_reached", "replay_rate_limited"]);
    const full = document.components.schemas.StreamsFull as {
      required: string[];
      properties: { error: { const: string }; reason: { const: string } };
    };
    assert.deepEqual([...full.required].sort(), ["error", "error_description", "reason"]);
    assert.equal(full.properties.error.const, "temporarily_unavailable");
    assert.equal(full.properties.reason.const, "stream_subscribers_reached");
    const reset = document.components.schemas.CursorReset as {
      required: string[];
      properties: { reason: { enum: string[] } };
    };
    assert.deepEqual([...reset.required].sort(), ["cursor", "error", "error_description", "reason"]);
    assert.deepEqual(reset.properties.reason.enum, [
      "cursor_epoch_mismatch",
      "cursor_below_low_water",
      "cursor_ahead_of_head",
      "cursor_beyond_replay",
    ]);
    const limited = document.components.schemas.FeedRateLimited as {
      properties: { error: { const: string }; reason: { const: string } };
    };
    assert.equal(limited.properties.error.const, "slow_down");
    assert.equal(limited.properties.reason.const, "feed_rate_limited");
  });

  test("the feed's real answers match the documented schemas (200, 410 cursor_reset)", async () => {
    const page = await fetch(`${sts.url}/revocations`);
    assert.equal(page.status, 200);
    revocationPageSchema.strict().parse(await page.json());
    const reset = await fetch(`${sts.url}/revocations?after=0123456789abcdef.0`);
    assert.equal(reset.status, 410);
    const body = cursorResetSchema.strict().parse(await reset.json());
    assert.equal(body.reason, "cursor_epoch_mismatch");
  });

  test("the feed's 429 matches FeedRateLimited", async () => {
    const limited = await startTestApp({
      engine: "pglite",
      config: { ...baseConfig(), revocations: { max_feed_reads_per_address_per_minute: 1 } },
    });
    try {
      assert.equal((await (await fetch(`${limited.url}/revocations`)).arrayBuffer()).byteLength > 0, true);
      const refused = await fetch(`${limited.url}/revocations`);
      assert.equal(refused.status, 429);
      assert.match(refused.headers.get("retry-after") ?? "", /^[1-9][0-9]?$/);
      feedRateLimitedSchema.strict().parse(await refused.json());
    } finally {
      await limited.stop();
    }
  });

  test("the document matches what buildOpenApiDocument makes", () => {
    assert.deepEqual(document, buildOpenApiDocument({ issuer: sts.url }));
  });
});
