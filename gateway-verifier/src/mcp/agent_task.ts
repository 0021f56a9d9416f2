import type { AccessTokenClaims } from "../types.js";
import type { McpTarget } from "./policy.js";

/**
 * What the human approved, as far as MCP is concerned: the `agent_task` entries of the token's
 * `authorization_details` (RFC 9396) may name the tools, resources and prompts of the task:
 *
 * ```json
 * "authorization_details": [{ "type": "agent_task", "approval_id": "…", "task": "…",
 *   "tools": ["send_email"], "resources": ["file:///reports/q1.pdf"], "prompts": ["summarize"] }]
 * ```
 *
 * A list that is present restricts (an empty list allows nothing); an absent list leaves everything
 * the scopes allow. Several `agent_task` entries with the same list all apply (intersection).
 *
 * An entry may also bind one `tools/call`: `"call": { "tool": "send_email", "arguments_digest": "…" }`
 * (base64url SHA-256 of the RFC 8785 canonical `arguments`, see `jcs.ts`).
 */
export interface ApprovedTargets {
  /** Whether the approval allows `target`. */
  allows(target: McpTarget): boolean;
  /** The calls the token is bound to; a `tools/call` must match every one. Empty: bound to none. */
  readonly calls: readonly BoundCall[];
}

/** One `tools/call` an approval binds: the tool and the digest of its exact arguments. */
export interface BoundCall {
  readonly tool: string;
  /** base64url(SHA-256(RFC 8785 canonical JSON of `arguments`)), 43 characters. */
  readonly argumentsDigest: string;
}

const LIST_KEYS = { tool: "tools", resource: "resources", prompt: "prompts" } as const;
const UNRESTRICTED: ApprovedTargets = { allows: () => true, calls: [] };
const DIGEST = /^[A-Za-z0-9_-]{43}$/;

function boundCall(value: unknown): BoundCall | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const { tool, arguments_digest: digest } = value as Record<string, unknown>;
  if (typeof tool !== "string" || tool === "" || typeof digest !== "string" || !DIGEST.test(digest)) {
    return undefined;
  }
  return { tool, argumentsDigest: digest };
}
const cache = new WeakMap<object, ApprovedTargets | "invalid">();

function stringList(value: unknown): ReadonlySet<string> | undefined {
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) return undefined;
  return new Set(value as string[]);
}

function read(details: unknown): ApprovedTargets | "invalid" {
  if (details === undefined) return UNRESTRICTED;
  if (!Array.isArray(details)) return "invalid";
  const lists: Record<McpTarget["kind"], ReadonlySet<string>[]> = { tool: [], resource: [], prompt: [] };
  const calls: BoundCall[] = [];
  for (const entry of details) {
    if (typeof entry !== "object" || entry === null || (entry as { type?: unknown }).type !== "agent_task")
      continue;
    const call = (entry as Record<string, unknown>).call;
    if (call !== undefined) {
      const bound = boundCall(call);
      if (bound === undefined) return "invalid";
      calls.push(bound);
    }
    for (const kind of ["tool", "resource", "prompt"] as const) {
      const value = (entry as Record<string, unknown>)[LIST_KEYS[kind]];
      if (value === undefined) continue;
      const list = stringList(value);
      if (list === undefined) return "invalid";
      lists[kind].push(list);
    }
  }
  if (lists.tool.length + lists.resource.length + lists.prompt.length + calls.length === 0) {
    return UNRESTRICTED;
  }
  return { allows: (target) => lists[target.kind].every((list) => list.has(target.name)), calls };
}

/**
 * The approved targets of a verified token, or `"invalid"` when `authorization_details` is not an
 * array, a `tools`/`resources`/`prompts` list is not an array of strings, or a `call` is not
 * `{tool, arguments_digest}` (fail closed). Memoised per
 * claims object (the verifier shares frozen claims between requests presenting the same token).
 */
export function approvedTargets(claims: Readonly<AccessTokenClaims>): ApprovedTargets | "invalid" {
  let result = cache.get(claims);
  if (result === undefined) {
    result = read(claims.authorization_details);
    cache.set(claims, result);
  }
  return result;
}
