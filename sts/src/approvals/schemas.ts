import { z } from "zod";
import { rateLimitSchema } from "../config/schema.js";
import type { ApprovalStatus } from "../db/schema.js";

/** Longest `task`, in characters. */
export const MAX_TASK_CHARS = 2000;
/** Longest space-separated `scope`, in characters. */
export const MAX_SCOPE_CHARS = 1024;
/** Largest `max_tokens` (an agent on a long task may need many). */
export const MAX_TOKENS_LIMIT = 1_000_000;
/** Longest approval lifetime, in seconds (30 days). */
export const MAX_TTL_SECONDS = 2_592_000;
/** Approval lifetime when the agent names none, in seconds (CONTRACT §3). */
export const DEFAULT_TTL_SECONDS = 3600;
/** `max_tokens` when the agent names none (CONTRACT §3). */
export const DEFAULT_MAX_TOKENS = 10;
/** Longest deny/revoke `reason`, in characters. */
export const MAX_REASON_CHARS = 500;
/** Largest page of `GET /approvals`; the default is {@link DEFAULT_LIST_LIMIT}. */
export const MAX_LIST_LIMIT = 200;
export const DEFAULT_LIST_LIMIT = 50;

const scope = z.string().min(1).max(MAX_SCOPE_CHARS);
const maxTokens = z.number().int().min(1).max(MAX_TOKENS_LIMIT);
const ttlSeconds = z.number().int().min(1).max(MAX_TTL_SECONDS);

/** `POST /approvals` (agent). Unknown fields are rejected. */
export const createApprovalBody = z
  .object({
    /** A configured resource indicator (RFC 8707). */
    resource: z.string().min(1).max(2048),
    /** Space-separated scopes, each one of the resource's. */
    scope,
    /** What the agent means to do, shown to the approver. */
    task: z
      .string()
      .max(MAX_TASK_CHARS)
      .refine((task) => task.trim().length > 0, "must not be empty"),
    /** How many tokens may be minted under the approval. Default 10. */
    max_tokens: maxTokens.default(DEFAULT_MAX_TOKENS),
    /** Lifetime from creation, in seconds, pending or not. Default 3600. */
    ttl_seconds: ttlSeconds.default(DEFAULT_TTL_SECONDS),
    /** The only `sub` tokens under the approval may carry. */
    subject: z.string().min(1).max(255).optional(),
    /** Rate and burst limit written into tokens minted under the approval. */
    rate_limit: rateLimitSchema.optional(),
  })
  .strict();
export type CreateApprovalBody = z.infer<typeof createApprovalBody>;

/** `POST /approvals/{id}/approve` (approver). Every field may only narrow what was requested. */
export const approveBody = z
  .object({
    scope: scope.optional(),
    max_tokens: maxTokens.optional(),
    /** Lifetime measured from the approval's creation, in seconds; may only shorten it. */
    ttl_seconds: ttlSeconds.optional(),
    rate_limit: rateLimitSchema.optional(),
  })
  .strict();
export type ApproveBody = z.infer<typeof approveBody>;

/** `POST /approvals/{id}/deny` and `/revoke` (approver). */
export const decisionBody = z
  .object({
    /** Why, for the audit log and the agent. */
    reason: z.string().min(1).max(MAX_REASON_CHARS).optional(),
  })
  .strict();
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
    cursor: z.string().min(1).max(256).optional(),
  })
  .strict();
export type ListQuery = z.infer<typeof listQuery>;

/**
 * One line describing what is wrong with a request, naming the field: `unknown field "foo"`,
 * `max_tokens: Too big: expected number to be <=1000000`.
 */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map(String).join(".");
      if (issue.code === "unrecognized_keys") {
        const keys = issue.keys.map((key) => `"${key}"`).join(", ");
        const prefix = path ? `${path}: ` : "";
        return `${prefix}unknown field${issue.keys.length > 1 ? "s" : ""} ${keys}`;
      }
      return `${path || "body"}: ${issue.message}`;
    })
    .join("; ");
}
