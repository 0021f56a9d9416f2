/**
 * Generates the parts of docs/reference.md that are data, each between a pair of markers
 * (`<!-- generated: <name> (npm run docs) -->` … `<!-- end: <name> -->`):
 *
 * - `config` and `env`: the config file key by key and the environment variables, from the zod schemas
 *   in sts/src/config/schema.ts (`z.toJSONSchema`, with the `.describe()` text of each key);
 * - `approval-api` and `approval-objects`: every approval API operation with its parameters, request
 *   and answers, and the objects it answers with, from the OpenAPI document (sts/src/openapi/document.ts);
 * - `token-request`: the `POST /token` parameters and success members, from the same document;
 * - `reasons`: the reason-code table, from sts/src/reasons.ts.
 *
 * `npm run docs` rewrites them in place; test/docs/reference.test.ts fails when the file and the code
 * drift apart.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { configFileSchema, envSchema } from "../sts/src/config/schema.js";
import { buildOpenApiDocument } from "../sts/src/openapi/document.js";
import { REASONS, type WireError } from "../sts/src/reasons.js";

export const REFERENCE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../docs/reference.md");

/** The part of JSON Schema 2020-12 that zod emits and the tables render. */
export interface JsonSchema {
  type?: string | string[];
  $ref?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema | boolean;
  anyOf?: JsonSchema[];
}

/** One row of a members table: a key path and its schema. */
export interface Member {
  readonly path: string;
  readonly schema: JsonSchema;
  readonly required: boolean;
}

/** Past this, a bound is "no bound" for a reader (zod writes `Number.MAX_SAFE_INTEGER` for `.int()`). */
const UNBOUNDED = 1e15;

const code = (value: unknown) => `\`${typeof value === "string" ? value : JSON.stringify(value)}\``;
/** A table cell: no line breaks, and `|` escaped. */
const cell = (text: string) => text.replace(/\s*\n\s*/g, " ").replace(/\|/g, "\\|");

/**
 * `nullable` unwrapped: zod writes `T | null` as `anyOf: [T, {type: "null"}]`, or as
 * `type: [T, "null"]` for a primitive.
 */
function unwrapNull(schema: JsonSchema): { schema: JsonSchema; nullable: boolean } {
  if (Array.isArray(schema.type) && schema.type.includes("null")) {
    const rest = schema.type.filter((type) => type !== "null");
    return { schema: { ...schema, type: rest.length === 1 ? rest[0] : rest }, nullable: true };
  }
  const options = schema.anyOf;
  if (!options) return { schema, nullable: false };
  const rest = options.filter((option) => option.type !== "null");
  if (rest.length === 1 && rest.length < options.length) {
    const { anyOf: _anyOf, ...outer } = schema;
    return { schema: { ...outer, ...(rest[0] as JsonSchema) }, nullable: true };
  }
  return { schema, nullable: false };
}

function range(low: number | undefined, high: number | undefined, unit: string): string | undefined {
  const max = high !== undefined && high < UNBOUNDED ? high : undefined;
  if (low !== undefined && max !== undefined) return `${low}–${max}${unit}`;
  if (low !== undefined && low > 0) return `≥ ${low}${unit}`;
  if (max !== undefined) return `≤ ${max}${unit}`;
  return undefined;
}

/** A short type: `integer, 1–86400`, `string (uri), ≤ 2048 chars`, `array of string`, `one of …`. */
export function typeText(input: JsonSchema): string {
  const { schema, nullable } = unwrapNull(input);
  const text = baseType(schema);
  return nullable ? `${text}, or null` : text;
}

function baseType(schema: JsonSchema): string {
  if (schema.$ref) return `\`${schema.$ref.split("/").at(-1)}\``;
  if (schema.const !== undefined) return code(schema.const);
  if (schema.enum) return `one of ${schema.enum.map(code).join(", ")}`;
  const component = componentOf(schema);
  if (component) return `[\`${component}\`](#${component.toLowerCase()})`;
  if (schema.anyOf) return schema.anyOf.map(baseType).join(" or ");
  const type = Array.isArray(schema.type) ? schema.type.join(" or ") : (schema.type ?? "any JSON");
  const parts: string[] = [];
  switch (type) {
    case "string":
      parts.push(schema.format ? `string (${schema.format})` : "string");
      parts.push(range(schema.minLength, schema.maxLength, " chars") ?? "");
      break;
    case "integer":
    case "number":
      parts.push(type);
      if (schema.exclusiveMinimum !== undefined) {
        const max = range(undefined, schema.maximum, "");
        parts.push(`> ${schema.exclusiveMinimum}${max ? `, ${max}` : ""}`);
      } else {
        parts.push(range(schema.minimum, schema.maximum, "") ?? "");
      }
      break;
    case "array":
      parts.push(`array of ${schema.items ? itemText(schema.items) : "any JSON"}`);
      parts.push(range(schema.minItems, schema.maxItems, " items") ?? "");
      break;
    case "object":
      if (!schema.properties && typeof schema.additionalProperties === "object") {
        const values = schema.additionalProperties;
        parts.push(Object.keys(values).length === 0 ? "object" : `object of ${baseType(values)}`);
      } else parts.push("object");
      break;
    default:
      parts.push(type);
  }
  return parts.filter(Boolean).join(", ");
}

/** An array's item type, bounds in parentheses so they do not read as the array's. */
function itemText(items: JsonSchema): string {
  if (items.type === "object" && items.properties && !componentOf(items)) return "objects (below)";
  const text = baseType(items);
  const [head, ...bounds] = text.split(", ");
  return bounds.length > 0 && !text.startsWith("one of") ? `${head} (${bounds.join(", ")})` : text;
}

/**
 * Every member of an object schema, depth first: nested objects as `a.b`, objects inside arrays as
 * `a[].b`. A member is required when its parent says so.
 */
export function members(schema: JsonSchema, prefix = ""): Member[] {
  const rows: Member[] = [];
  const required = new Set(schema.required ?? []);
  for (const [name, raw] of Object.entries(schema.properties ?? {})) {
    const member = `${prefix}${name}`;
    rows.push({ path: member, schema: raw, required: required.has(name) });
    const { schema: inner } = unwrapNull(raw);
    if (inner.type === "object" && inner.properties) rows.push(...members(inner, `${member}.`));
    const items = inner.items;
    if (inner.type === "array" && items?.type === "object" && items.properties && !componentOf(items)) {
      rows.push(...members(items, `${member}[].`));
    }
  }
  return rows;
}

/** Default column: the default, or whether the member must be there. */
function defaultText(member: Member): string {
  const { schema } = member;
  if (schema.default !== undefined) {
    const isObject = typeof schema.default === "object" && schema.default !== null;
    if (isObject && !Array.isArray(schema.default) && schema.properties) return "see its keys";
    return code(schema.default);
  }
  return member.required ? "required" : "—";
}

/**
 * Description column: the schema's description (or, lacking one, the reference's own words from
 * {@link SUPPLEMENTS}), and its pattern when it has one (not for a `format`, which says it better).
 */
function descriptionText(schema: JsonSchema, key?: string): string {
  const { schema: inner } = unwrapNull(schema);
  const own = inner.format ? undefined : inner.pattern;
  const pattern = own ?? (inner.items?.type === "string" ? inner.items.pattern : undefined);
  const text = schema.description ?? inner.description ?? (key ? SUPPLEMENTS[key] : undefined) ?? "";
  return pattern ? `${text}${text ? " " : ""}Pattern: \`${pattern}\`.` : text;
}

/** A config-style table: key, type, default, meaning. */
function keyTable(rows: readonly Member[], header = "key"): string {
  return [
    `| ${header} | type | default | meaning |`,
    "| --- | --- | --- | --- |",
    ...rows.map(
      (row) =>
        `| \`${row.path}\` | ${cell(typeText(row.schema))} | ${cell(defaultText(row))} | ${cell(descriptionText(row.schema))} |`,
    ),
  ].join("\n");
}

/** A zod schema as JSON Schema 2020-12, as a caller writes it (`io: "input"`: defaulted keys are optional). */
export function toJsonSchema(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema, {
    io: "input",
    target: "draft-2020-12",
    unrepresentable: "any",
  }) as JsonSchema;
}

/** The config file, one row per key path (`trusted_issuers[].approver_max_age_seconds`). */
export function renderConfigTable(): string {
  return keyTable(members(toJsonSchema(configFileSchema)));
}

/** The environment variables, one row each. */
export function renderEnvTable(): string {
  return keyTable(members(toJsonSchema(envSchema)), "variable");
}

export interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}
export interface Response {
  description: string;
  headers?: Record<string, { description?: string }>;
  content?: Record<string, { schema: JsonSchema }>;
}
export interface Operation {
  operationId: string;
  summary?: string;
  description?: string;
  security?: Array<Record<string, string[]>>;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content: Record<string, { schema: JsonSchema }> };
  responses: Record<string, Response>;
}
export interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, JsonSchema> };
}

/** The document as the generator reads it (the issuer only shows in `servers`, which is not rendered). */
export function openApi(): OpenApi {
  return buildOpenApiDocument({ issuer: "https://sts.example.test" }) as unknown as OpenApi;
}

/** The OpenAPI components that get their own table, by their JSON text, so a copy links to it. */
const COMPONENTS = new Map<string, string>(
  ["Approval"].map((name) => [JSON.stringify(openApi().components.schemas[name]), name]),
);

/** The component a schema is a copy of (zod inlines reused schemas), if it has its own table. */
function componentOf(schema: JsonSchema): string | undefined {
  return COMPONENTS.get(JSON.stringify(schema));
}

/**
 * The reference's words for OpenAPI members whose schema carries no description (keyed
 * `<Component>.<member>`, `<Component>` for the object itself, or `<operationId>.<parameter>`). test/docs/reference.test.ts fails
 * when one names no such member or when the schema has gained a description of its own.
 */
export const SUPPLEMENTS: Readonly<Record<string, string>> = {
  "Approval.id": "The approval's id: `apr_` and 22 base64url characters (128 random bits).",
  "Approval.resource": "The resource the approval is for (a configured resource indicator).",
  "Approval.task": "The agent's task text, whole (tokens carry at most 512 bytes of it).",
  "Approval.max_tokens": "How many tokens may be minted under the approval (the approved number).",
  "Approval.rate_limit.per_second": "Sustained rate, in requests per second.",
  "Approval.rate_limit.burst": "Bucket size: how many requests may arrive at once.",
  "Approval.created_at": "When the agent asked (ISO 8601).",
  "Approval.decided_at": "When an approver approved or denied it; null while pending.",
  "Approval.expires_at": "`created_at` plus `ttl_seconds` (as narrowed by the approver), pending or not.",
  "Approval.revoked_at": "When it was revoked; null unless revoked.",
  ApprovalList:
    "A page of approvals: pending ones round by round per agent (each agent's newest, then each agent's second newest, …, newest first within a round), other statuses oldest first.",
  "listApprovals.status":
    "Which approvals to list; `expired` lists pending or approved ones past `expires_at`.",
  "ApprovalList.approvals": "This page's approvals.",
  "TokenResponse.issued_token_type":
    "Token exchange: always `urn:ietf:params:oauth:token-type:access_token`.",
  "TokenResponse.token_type":
    "`DPoP` when the request carried a DPoP proof (the token has `cnf.jkt`), else `Bearer`.",
  "TokenResponse.expires_in": "Seconds until the token's `exp`.",
  "TokenResponse.scope": "The granted scopes, space-separated.",
};

const schemaName = (schema: JsonSchema | undefined) => schema?.$ref?.split("/").at(-1);

const CALLERS: Record<string, string> = {
  agentBearer: "an agent ([its credential](#agent-credentials-client_credentials))",
  approverBearer: "an approver (a [trusted-issuer](#trusted-issuers) token with `approver` usage)",
};

function callers(operation: Operation): string {
  const names = (operation.security ?? []).flatMap((entry) => Object.keys(entry));
  return names.map((name) => CALLERS[name] ?? name).join(", or ");
}

/** A request or response members table: member, type, required, default, meaning. */
function memberTable(name: string, schema: JsonSchema): string {
  return [
    "| member | type | required | default | meaning |",
    "| --- | --- | --- | --- | --- |",
    ...members(schema).map(
      (row) =>
        `| \`${row.path}\` | ${cell(typeText(row.schema))} | ${row.required ? "yes" : "no"} | ${row.schema.default === undefined ? "—" : code(row.schema.default)} | ${cell(descriptionText(row.schema, `${name}.${row.path}`))} |`,
    ),
  ].join("\n");
}

function renderOperation(route: string, method: string, operation: Operation, doc: OpenApi): string {
  const out: string[] = [`### \`${method.toUpperCase()} ${route}\``, ""];
  if (operation.summary)
    out.push(`${operation.summary}.${operation.description ? ` ${operation.description}` : ""}`, "");
  out.push(`Caller: ${callers(operation)}.`, "");
  const parameters = operation.parameters ?? [];
  if (parameters.length > 0) {
    out.push(
      "| parameter | in | type | required | default | meaning |",
      "| --- | --- | --- | --- | --- | --- |",
      ...parameters.map(
        (parameter) =>
          `| \`${parameter.name}\` | ${parameter.in} | ${cell(typeText(parameter.schema))} | ${parameter.required ? "yes" : "no"} | ${parameter.schema.default === undefined ? "—" : code(parameter.schema.default)} | ${cell(descriptionText({ ...parameter.schema, description: parameter.description ?? parameter.schema.description }, `${operation.operationId}.${parameter.name}`))} |`,
      ),
      "",
    );
  }
  const body = operation.requestBody?.content["application/json"]?.schema;
  const bodyName = schemaName(body);
  if (bodyName) {
    const schema = doc.components.schemas[bodyName] as JsonSchema;
    out.push(
      `Request body (\`application/json\`, ${operation.requestBody?.required ? "required" : "optional"}): ${cell(schema.description ?? bodyName)} Unknown members are refused with 400.`,
      "",
      memberTable(bodyName, schema),
      "",
    );
  }
  out.push("| answer | body | meaning |", "| --- | --- | --- |");
  for (const [status, response] of Object.entries(operation.responses)) {
    const name = schemaName(response.content?.["application/json"]?.schema);
    const headers = Object.keys(response.headers ?? {}).filter((h) => !response.description.includes(h));
    const headerText = headers.length > 0 ? ` (header ${headers.map((h) => `\`${h}\``).join(", ")})` : "";
    out.push(
      `| ${status} | ${name ? `[\`${name}\`](#${name.toLowerCase()})` : "—"} | ${cell(response.description)}${headerText} |`,
    );
  }
  return out.join("\n");
}

/** The approval API's operations, in the document's order. */
function approvalOperations(doc: OpenApi): Array<[string, string, Operation]> {
  return Object.entries(doc.paths)
    .filter(([route]) => route.startsWith("/approvals"))
    .flatMap(([route, methods]) =>
      Object.entries(methods).map(([method, operation]): [string, string, Operation] => [
        route,
        method,
        operation,
      ]),
    );
}

/** The approval API: every `/approvals` operation with its parameters, body and answers. */
export function renderApprovalApi(): string {
  const doc = openApi();
  return approvalOperations(doc)
    .map(([route, method, operation]) => renderOperation(route, method, operation, doc))
    .join("\n\n");
}

/** The objects the approval API answers with, one table each. */
export function renderApprovalObjects(): string {
  const doc = openApi();
  const answers = new Set<string>();
  for (const [, , operation] of approvalOperations(doc)) {
    for (const response of Object.values(operation.responses)) {
      const name = schemaName(response.content?.["application/json"]?.schema);
      if (name) answers.add(name);
    }
  }
  const out: string[] = [];
  for (const name of [...answers].sort()) {
    const schema = doc.components.schemas[name] as JsonSchema;
    out.push(
      `### \`${name}\``,
      "",
      schema.description ?? SUPPLEMENTS[name] ?? "",
      "",
      memberTable(name, schema),
      "",
    );
  }
  return out.join("\n").trimEnd();
}

/** `POST /token`: the form parameters and the success answer's members. */
export function renderTokenRequest(): string {
  const { schemas } = openApi().components;
  return [
    "Request parameters (`application/x-www-form-urlencoded`):",
    "",
    memberTable("TokenRequest", schemas.TokenRequest as JsonSchema),
    "",
    "Success (200, `application/json`):",
    "",
    memberTable("TokenResponse", schemas.TokenResponse as JsonSchema),
  ].join("\n");
}

const wire = (answer: WireError | undefined) => (answer ? `${answer.status} \`${answer.error}\`` : "—");

/** The reason table as Markdown, one row per code, in the table's order. */
export function renderReasonTable(): string {
  const rows = Object.entries(REASONS).map(([reason, entry]) => {
    const { token, approvals } = entry as { token?: WireError; approvals?: WireError };
    return `| \`${reason}\` | ${wire(token)} | ${wire(approvals)} | ${entry.meaning} |`;
  });
  return [
    "| reason | at `POST /token` | at the approval API | meaning |",
    "| --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
}

/** Every generated section, by marker name. */
export const SECTIONS: Readonly<Record<string, () => string>> = {
  env: renderEnvTable,
  config: renderConfigTable,
  "approval-api": renderApprovalApi,
  "approval-objects": renderApprovalObjects,
  "token-request": renderTokenRequest,
  reasons: renderReasonTable,
};

const start = (name: string) => `<!-- generated: ${name} (npm run docs) -->`;
const end = (name: string) => `<!-- end: ${name} -->`;

/** The reference with its generated parts replaced by what the code says now. */
export function regenerate(text: string): string {
  let out = text;
  for (const [name, render] of Object.entries(SECTIONS)) {
    const from = out.indexOf(start(name));
    const to = out.indexOf(end(name));
    if (from < 0 || to < from || out.indexOf(start(name), from + 1) >= 0) {
      throw new Error(`docs/reference.md needs exactly one ${start(name)} … ${end(name)} pair`);
    }
    out = `${out.slice(0, from + start(name).length)}\n${render()}\n${out.slice(to)}`;
  }
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(REFERENCE, regenerate(readFileSync(REFERENCE, "utf8")));
  process.stdout.write(`updated ${path.relative(process.cwd(), REFERENCE)}\n`);
}
