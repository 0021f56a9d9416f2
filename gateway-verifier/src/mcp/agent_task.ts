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
 */
export interface ApprovedTargets {
  /** Whether the approval allows `target`. */
  allows(target: McpTarget): boolean;
}

const LIST_KEYS = { tool: "tools", resource: "resources", prompt: "prompts" } as const;
const UNRESTRICTED: ApprovedTargets = { allows: () => true };
const cache = new WeakMap<object, ApprovedTargets | "invalid">();

function stringList(value: unknown): ReadonlySet<string> | undefined {
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) return undefined;
  return new Set(value as string[]);
}

function read(details: unknown): ApprovedTargets | "invalid" {
  if (details === undefined) return UNRESTRICTED;
  if (!Array.isArray(details)) return "invalid";
  const lists: Record<McpTarget["kind"], ReadonlySet<string>[]> = { tool: [], resource: [], prompt: [] };
  for (const entry of details) {
    if (typeof entry !== "object" || entry === null || (entry as { type?: unknown }).type !== "agent_task")
      continue;
    for (const kind of ["tool", "resource", "prompt"] as const) {
      const value = (entry as Record<string, unknown>)[LIST_KEYS[kind]];
      if (value === undefined) continue;
      const list = stringList(value);
      if (list === undefined) return "invalid";
      lists[kind].push(list);
    }
  }
  if (lists.tool.length + lists.resource.length + lists.prompt.length === 0) return UNRESTRICTED;
  return { allows: (target) => lists[target.kind].every((list) => list.has(target.name)) };
}

/**
 * The approved targets of a verified token, or `"invalid"` when `authorization_details` is not an
 * array or a `tools`/`resources`/`prompts` list is not an array of strings (fail closed). Memoised per
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
