import { z } from "zod";
import { canonicalJson } from "../../../gateway-verifier/src/mcp/jcs.js";
import { rateLimitSchema } from "../config/schema.js";
import type { ApprovalStatus } from "../db/schema.js";
import { isStorableText } from "../db/text.js";
import { isUsableSubject } from "../identity/trusted_issuers.js";
import { hasUnsafeCharacter } from "../ops/safe_text.js";

/** Longest `task`, in characters. */
export const MAX_TASK_CHARS = 2000;
/** Longest space-separated `scope`, in characters. */
export const MAX_SCOPE_CHARS = 1024;
/** Largest `max_tokens` (an agent on a long task may need many). */
export const MAX_TOKENS_LIMIT = 1_000_000;
/** Longest approval lifetime, in seconds (30 days). */
export const MAX_TTL_SECONDS = 2_592_000;
/** Approval lifetime when the agent names none, in seconds (docs/reference.md#post-approvals). */
export const DEFAULT_TTL_SECONDS = 3600;
/** `max_tokens` when the agent names none (docs/reference.md#post-approvals). */
export const DEFAULT_MAX_TOKENS = 10;
/** Longest deny/revoke `reason`, in characters. */
export const MAX_REASON_CHARS = 500;
/** Largest page of `GET /approvals`; the default is {@link DEFAULT_LIST_LIMIT}. */
export const MAX_LIST_LIMIT = 200;
export const DEFAULT_LIST_LIMIT = 50;

/** Most names in an approval's `tools`, `resources` or `prompts` list. */
export const MAX_TARGETS = 64;
/** Longest name (or resource URI) in those lists, in characters. */
export const MAX_TARGET_CHARS = 256;
/**
 * Largest JSON-encoded UTF-8 size of the `tools`, `resources` and `prompts` lists together, in bytes:
 * tokens carry them, and a token stays within 8192 bytes (sts/src/exchange/rules.ts).
 */
export const MAX_TARGETS_BYTES = 3072;

/** A string Postgres stores exactly ({@link isStorableText}). */
const text = () => z.string().refine(isStorableText, "must be well-formed Unicode without NUL characters");

const scope = text().min(1).max(MAX_SCOPE_CHARS);

/** The MCP kinds an approval may name, as their wire keys (the token's `agent_task` keys too). */
export const TARGET_KEYS = ["tools", "resources", "prompts"] as const;
export type TargetKey = (typeof TARGET_KEYS)[number];

/**
 * An MCP name (tool, prompt, resource URI): 1..256 storable characters, none a control, bidi control or
 * line separator, so that what an approver reads (console, webhook, CLI) is the name the token carries.
 */
const targetName = () =>
  text()
    .min(1)
    .max(MAX_TARGET_CHARS)
    .refine(
      (name) => !hasUnsafeCharacter(name),
      "must not contain control, bidi control, invisible or line separator characters",
    );

/** A list of MCP names: 1..64 distinct {@link targetName}s. */
const targetList = (what: string) =>
  z
    .array(targetName())
    .min(1)
    .max(MAX_TARGETS)
    .refine((names) => new Set(names).size === names.length, "must not name anything twice")
    .optional()
    .describe(what);

/** The size {@link MAX_TARGETS_BYTES} bounds. */
export function targetsBytes(
  lists: Partial<Record<TargetKey, readonly string[] | null | undefined>>,
): number {
  return TARGET_KEYS.reduce(
    (total, key) => total + (lists[key] ? Buffer.byteLength(JSON.stringify(lists[key])) : 0),
    0,
  );
}

const targetFields = {
  tools: targetList(
    "The MCP tools the task may call (`tools/call` names). Absent: every tool the scopes allow.",
  ),
  resources: targetList(
    "The MCP resource URIs the task may read (`resources/read`). Absent: every resource the scopes allow.",
  ),
  prompts: targetList(
    "The MCP prompts the task may get (`prompts/get`). Absent: every prompt the scopes allow.",
  ),
};

function boundTargets(
  body: Partial<Record<TargetKey, readonly string[] | undefined>>,
  context: z.RefinementCtx,
): void {
  if (targetsBytes(body) > MAX_TARGETS_BYTES) {
    context.addIssue({
      code: "custom",
      path: ["tools"],
      message: `tools, resources and prompts together exceed ${MAX_TARGETS_BYTES} bytes of JSON`,
    });
  }
}
/** Largest RFC 8785 canonical JSON of a bound call's `arguments`, in UTF-8 bytes. */
export const MAX_CALL_ARGUMENTS_BYTES = 32_768;
/** Deepest nesting of a bound call's `arguments` (the arguments object itself is depth 1). */
export const MAX_CALL_ARGUMENTS_DEPTH = 32;

/**
 * The canonical JSON text of call arguments, or the problem with them: a JSON object, I-JSON (no lone
 * surrogates), at most {@link MAX_CALL_ARGUMENTS_DEPTH} deep and {@link MAX_CALL_ARGUMENTS_BYTES} long.
 */
export function canonicalCallArguments(value: unknown): { text: string } | { problem: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { problem: "must be a JSON object" };
  }
  let text: string;
  try {
    text = canonicalJson(value, MAX_CALL_ARGUMENTS_DEPTH);
  } catch (error) {
    return { problem: (error as Error).message.replace(/^JCS: /, "") };
  }
  if (Buffer.byteLength(text) > MAX_CALL_ARGUMENTS_BYTES) {
    return { problem: `exceed ${MAX_CALL_ARGUMENTS_BYTES} bytes of canonical JSON` };
  }
  return { text };
}

/** `call`: the one MCP `tools/call` an approval binds, by tool and exact arguments. */
const callField = z
  .object({
    tool: targetName().describe("The tool (`tools/call` `params.name`)."),
    arguments: z
      .record(z.string(), z.unknown())
      .superRefine((value, context) => {
        const canonical = canonicalCallArguments(value);
        if ("problem" in canonical) context.addIssue({ code: "custom", message: canonical.problem });
      })
      .describe(
        `The call's exact \`arguments\` (a JSON object, at most ${MAX_CALL_ARGUMENTS_BYTES} bytes of RFC 8785 canonical JSON, nested at most ${MAX_CALL_ARGUMENTS_DEPTH} deep).`,
      ),
  })
  .strict()
  .optional()
  .describe(
    "Binds the approval to one MCP `tools/call` with exactly these arguments: its token carries `call: {tool, arguments_digest}` (base64url SHA-256 of the RFC 8785 canonical arguments), the gateway lets that one call through once, and the approval mints one token.",
  );

const maxTokens = z.number().int().min(1).max(MAX_TOKENS_LIMIT);
const ttlSeconds = z.number().int().min(1).max(MAX_TTL_SECONDS);

/** `POST /approvals` (agent). Unknown fields are rejected. */
export const createApprovalBody = z
  .object({
    /** A configured resource indicator (RFC 8707). */
    resource: text().min(1).max(2048).describe("A configured resource indicator (RFC 8707)."),
    /** Space-separated scopes, each one of the resource's. */
    scope: scope.describe("Space-separated scopes, each one of the resource's (RFC 6749 §3.3)."),
    /** What the agent means to do, shown to the approver. */
    task: text()
      .max(MAX_TASK_CHARS)
      .refine((task) => task.trim().length > 0, "must not be empty")
      .describe("What the agent means to do, shown to the approver."),
    /**
     * How many tokens may be minted under the approval. Default {@link DEFAULT_MAX_TOKENS} (10); an
     * approval with `call` mints one token, so it takes 1 or nothing (the route refuses another value:
     * it is not silently changed).
     */
    max_tokens: maxTokens
      .optional()
      .meta({ default: DEFAULT_MAX_TOKENS })
      .describe(
        "How many tokens may be minted under the approval. With `call`: 1 or absent (the approval mints one token; another value is refused with `call_max_tokens_conflict`).",
      ),
    /** Lifetime from creation, in seconds, pending or not. Default 3600. */
    ttl_seconds: ttlSeconds
      .default(DEFAULT_TTL_SECONDS)
      .describe("Lifetime from creation, in seconds, pending or not."),
    /** The only `sub` tokens under the approval may carry. */
    subject: z
      .string()
      .min(1)
      .max(255)
      .refine(isUsableSubject, "must be well-formed Unicode without control characters")
      .optional()
      .describe("The only `sub` tokens under the approval may carry."),
    /**
     * The issuer (`iss`) of `subject`: one of the issuers trusted for subject tokens. Required with
     * `subject` when several issuers are; with one, that one is recorded.
     */
    subject_issuer: text()
      .min(1)
      .max(2048)
      .optional()
      .describe(
        "The issuer (`iss`) whose `sub` is `subject`; required with `subject` when several issuers are trusted for subject tokens.",
      ),
    /** Rate and burst limit written into tokens minted under the approval. */
    rate_limit: rateLimitSchema
      .optional()
      .describe("Rate and burst limit written into tokens minted under the approval."),
    ...targetFields,
    call: callField,
  })
  .strict()
  .superRefine(boundTargets)
  .superRefine((body, context) => {
    if (body.call && body.tools && (body.tools.length !== 1 || body.tools[0] !== body.call.tool)) {
      context.addIssue({ code: "custom", path: ["tools"], message: "must be absent or name only call.tool" });
    }
  })
  .describe("An agent's request for a human approval.");
export type CreateApprovalBody = z.infer<typeof createApprovalBody>;

/** `POST /approvals/{id}/approve` (approver). Every field may only narrow what was requested. */
export const approveBody = z
  .object({
    scope: scope.optional().describe("A subset of the requested scopes."),
    max_tokens: maxTokens.optional().describe("At most the requested max_tokens."),
    /** Lifetime measured from the approval's creation, in seconds; may only shorten it. */
    ttl_seconds: ttlSeconds
      .optional()
      .describe("Lifetime measured from the approval's creation, in seconds; may only shorten it."),
    rate_limit: rateLimitSchema.optional().describe("At most the requested rate and burst."),
    tools: targetFields.tools.describe(
      "A subset of the requested tools (any list narrows a request that named none).",
    ),
    resources: targetFields.resources.describe(
      "A subset of the requested resources (any list narrows a request that named none).",
    ),
    prompts: targetFields.prompts.describe(
      "A subset of the requested prompts (any list narrows a request that named none).",
    ),
  })
  .strict()
  .superRefine(boundTargets)
  .describe("An approver's decision to approve; every field may only narrow what was requested.");
export type ApproveBody = z.infer<typeof approveBody>;

/** `POST /approvals/{id}/deny` and `/revoke` (approver). */
export const decisionBody = z
  .object({
    /** Why, for the audit log and the agent. */
    reason: text().min(1).max(MAX_REASON_CHARS).optional().describe("Why, for the audit log and the agent."),
  })
  .strict()
  .describe("A deny or revoke decision.");
export type DecisionBody = z.infer<typeof decisionBody>;

const statuses = [
  "pending",
  "approved",
  "denied",
  "revoked",
  "expired",
] as const satisfies readonly ApprovalStatus[];

/** `GET /approvals` query: `status` (default `pending`), `limit` (1..200, default 50), `cursor`. */
export const listQuery = z
  .object({
    status: z.enum(statuses).default("pending"),
    limit: z
      .string()
      .regex(/^[0-9]{1,4}$/, "must be an integer")
      .transform(Number)
      .pipe(z.number().int().min(1).max(MAX_LIST_LIMIT))
      .default(DEFAULT_LIST_LIMIT),
    cursor: text().min(1).max(256).optional(),
  })
  .strict();
export type ListQuery = z.infer<typeof listQuery>;

/** The statuses an approval can have (as a reader sees it). */
export const approvalStatusSchema = z
  .enum(statuses)
  .describe("`expired`: a pending or approved approval past `expires_at`.");

const isoTime = z.iso.datetime({ offset: true });
const wireRateLimit = z
  .object({ per_second: z.number(), burst: z.number().int() })
  .strict()
  .describe("Rate (per second) and burst limit written into tokens minted under the approval.");

/**
 * An approval as the API returns it (docs/reference.md#approval; `ApprovalJson` in model.ts). For the OpenAPI
 * document and response checks; the routes serialise with `toApprovalJson`.
 */
export const approvalSchema = z
  .object({
    id: z.string().regex(/^apr_[A-Za-z0-9_-]{22}$/),
    status: approvalStatusSchema,
    client_id: z.string().describe("The agent that asked."),
    resource: z.string(),
    scope: z.string().describe("The approved scope (the requested scope while pending), space-separated."),
    task: z.string(),
    subject: z.string().nullable().describe("When set, the only `sub` tokens under the approval may carry."),
    subject_issuer: z
      .string()
      .nullable()
      .describe("When set, the only issuer (`iss`) of subject tokens under the approval."),
    max_tokens: z.number().int(),
    tokens_issued: z.number().int().describe("Tokens minted so far; never above max_tokens."),
    rate_limit: wireRateLimit.nullable(),
    requested_by: z.string().describe("The agent's client_id."),
    approved_by: z.string().nullable().describe("The approver's `sub`."),
    created_at: isoTime,
    decided_at: isoTime.nullable(),
    expires_at: isoTime,
    requested_scope: z.string().describe("The scope the agent asked for."),
    decision_reason: z.string().nullable().describe("The deny or revoke reason, when one was given."),
    revoked_at: isoTime.nullable(),
    tools: z
      .array(z.string())
      .nullable()
      .describe("The MCP tools tokens under the approval may call; null: every tool the scopes allow."),
    resources: z
      .array(z.string())
      .nullable()
      .describe(
        "The MCP resource URIs tokens under the approval may read; null: every one the scopes allow.",
      ),
    prompts: z
      .array(z.string())
      .nullable()
      .describe("The MCP prompts tokens under the approval may get; null: every prompt the scopes allow."),
    call: z
      .object({
        tool: z.string(),
        arguments: z.record(z.string(), z.unknown()).describe("The exact arguments the approver approves."),
        arguments_digest: z
          .string()
          .describe("base64url(SHA-256(RFC 8785 canonical JSON of `arguments`)), as the token carries it."),
      })
      .strict()
      .nullable()
      .describe("The one MCP `tools/call` the approval binds; null: it binds none."),
  })
  .strict()
  .describe("An approval: a human's decision on an agent's task.");

/** `GET /approvals` answer. */
export const approvalListSchema = z
  .object({
    approvals: z.array(approvalSchema),
    next_cursor: z.string().nullable().describe("Pass as `cursor` for the next page; null on the last."),
  })
  .strict();

/** Every refusal: `{"error", "error_description"}` (docs/reference.md#error). */
export const errorSchema = z
  .object({
    error: z
      .string()
      .describe("A stable machine code, e.g. `invalid_request`, `not_found`, `invalid_state`."),
    error_description: z.string().describe("A human-readable explanation naming the field or state."),
  })
  .describe("An error.");
