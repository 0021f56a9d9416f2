import type { JsonRpcMessage } from "./jsonrpc.js";
import type { McpReason } from "./reasons.js";

/**
 * Which scopes each MCP call needs: the same JSON in the `mcp-gateway` config file and in
 * {@link McpGatewayOptions.policy}. Every list is additive: a call needs `default_scopes`, plus
 * `methods[<method>]`, plus the entry of its tool, resource or prompt.
 *
 * ```json
 * { "default_scopes": ["tools:read"], "tools": { "send_email": ["mail:send"] } }
 * ```
 */
export interface McpPolicy {
  /** Scopes every request needs (including `initialize`, `tools/list`, GET and DELETE). Default none. */
  default_scopes?: readonly string[];
  /** Extra scopes per JSON-RPC method, e.g. `{ "logging/setLevel": ["admin"] }`. */
  methods?: Readonly<Record<string, readonly string[]>>;
  /** Extra scopes per tool name, for `tools/call`. */
  tools?: Readonly<Record<string, readonly string[]>>;
  /** Extra scopes per resource URI (exact match), for `resources/read`, `resources/subscribe`, `resources/unsubscribe`. */
  resources?: Readonly<Record<string, readonly string[]>>;
  /** Extra scopes per prompt name, for `prompts/get`. */
  prompts?: Readonly<Record<string, readonly string[]>>;
  /**
   * A tool, resource or prompt with no entry above: `"allow"` (default: it needs the default and
   * method scopes only) or `"deny"` (refused, `tool_not_listed` / `resource_not_listed` / `prompt_not_listed`).
   */
  unlisted?: "allow" | "deny";
  /**
   * Scope hierarchy (MCP: servers MUST account for it): a token scope implies the listed ones,
   * transitively, e.g. `{ "mail:admin": ["mail:send", "mail:read"] }`.
   */
  implied_scopes?: Readonly<Record<string, readonly string[]>>;
}

/** What a message targets, for per-target scopes and approval lists. */
export interface McpTarget {
  kind: "tool" | "resource" | "prompt";
  name: string;
}

/** RFC 6749 §3.3 scope-token. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const MAX_ENTRIES = 10_000;
const MAX_NAME_LENGTH = 2048;
const RESOURCE_METHODS = new Set(["resources/read", "resources/subscribe", "resources/unsubscribe"]);

/** An invalid {@link McpPolicy}; `problems` names every bad entry. */
export class PolicyError extends TypeError {
  constructor(readonly problems: readonly string[]) {
    super(`invalid MCP policy: ${problems.join("; ")}`);
    this.name = "PolicyError";
  }
}

/** A validated {@link McpPolicy} with lookups that never reach `Object.prototype`. */
export interface CompiledPolicy {
  readonly defaultScopes: readonly string[];
  readonly unlisted: "allow" | "deny";
  /** Scopes the gateway knows (default, methods, targets), for `scopes_supported` defaults. */
  readonly knownScopes: readonly string[];
  /** The scopes `message` needs, or a refusal when it is unlisted under `unlisted: "deny"`. */
  scopesFor(message: JsonRpcMessage, target: McpTarget | undefined): readonly string[] | McpReason;
  /** `granted` plus every scope it implies. */
  expand(granted: readonly string[]): ReadonlySet<string>;
}

function scopeList(value: unknown, path: string, problems: string[]): string[] {
  if (!Array.isArray(value) || value.length > 100) {
    problems.push(`${path} must be an array of at most 100 scopes`);
    return [];
  }
  const scopes: string[] = [];
  value.forEach((scope, i) => {
    if (typeof scope !== "string" || !SCOPE_TOKEN.test(scope)) {
      problems.push(`${path}[${i}] must be a scope token (RFC 6749 §3.3)`);
    } else if (!scopes.includes(scope)) {
      scopes.push(scope);
    }
  });
  return scopes;
}

function scopeMap(value: unknown, path: string, problems: string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  if (value === undefined) return map;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    problems.push(`${path} must be an object`);
    return map;
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_ENTRIES) problems.push(`${path} has more than ${MAX_ENTRIES} entries`);
  for (const [key, scopes] of entries) {
    if (key.length === 0 || key.length > MAX_NAME_LENGTH) {
      problems.push(`${path} keys must be 1 to ${MAX_NAME_LENGTH} characters`);
      continue;
    }
    map.set(key, scopeList(scopes, `${path}[${JSON.stringify(key)}]`, problems));
  }
  return map;
}

/**
 * Validates a policy and prepares its lookups.
 * @throws TypeError naming every problem.
 */
export function compilePolicy(policy: McpPolicy = {}, prefix = "policy."): CompiledPolicy {
  const problems: string[] = [];
  if (typeof policy !== "object" || policy === null || Array.isArray(policy)) {
    throw new TypeError(`${prefix || "policy"} must be an object`);
  }
  const known = new Set([
    "default_scopes",
    "methods",
    "tools",
    "resources",
    "prompts",
    "unlisted",
    "implied_scopes",
  ]);
  for (const key of Object.keys(policy))
    if (!known.has(key)) problems.push(`${prefix}${key} is not a known key`);
  const defaultScopes =
    policy.default_scopes === undefined
      ? []
      : scopeList(policy.default_scopes, `${prefix}default_scopes`, problems);
  const methods = scopeMap(policy.methods, `${prefix}methods`, problems);
  const targets = {
    tool: scopeMap(policy.tools, `${prefix}tools`, problems),
    resource: scopeMap(policy.resources, `${prefix}resources`, problems),
    prompt: scopeMap(policy.prompts, `${prefix}prompts`, problems),
  };
  const unlisted = policy.unlisted ?? "allow";
  if (unlisted !== "allow" && unlisted !== "deny")
    problems.push(`${prefix}unlisted must be "allow" or "deny"`);
  const implied = scopeMap(policy.implied_scopes, `${prefix}implied_scopes`, problems);
  for (const key of implied.keys()) {
    if (!SCOPE_TOKEN.test(key)) problems.push(`${prefix}implied_scopes keys must be scope tokens`);
  }
  if (problems.length > 0) throw new PolicyError(problems);

  // Transitive closure of the hierarchy, computed once (cycles are harmless: visited set).
  const closure = new Map<string, readonly string[]>();
  for (const scope of implied.keys()) {
    const seen = new Set<string>();
    const pending = [scope];
    while (pending.length > 0) {
      const next = pending.pop() as string;
      for (const child of implied.get(next) ?? []) {
        if (!seen.has(child)) {
          seen.add(child);
          pending.push(child);
        }
      }
    }
    closure.set(scope, [...seen]);
  }

  const knownScopes = new Set(defaultScopes);
  for (const map of [methods, targets.tool, targets.resource, targets.prompt]) {
    for (const scopes of map.values()) for (const scope of scopes) knownScopes.add(scope);
  }

  return {
    defaultScopes,
    unlisted,
    knownScopes: [...knownScopes],
    scopesFor(message, target) {
      const required = [...defaultScopes];
      const add = (scopes: readonly string[] | undefined) => {
        for (const scope of scopes ?? []) if (!required.includes(scope)) required.push(scope);
      };
      if (message.method !== undefined) add(methods.get(message.method));
      if (target !== undefined) {
        const entry = targets[target.kind].get(target.name);
        if (entry === undefined && unlisted === "deny") return `${target.kind}_not_listed` as const;
        add(entry);
      }
      return required;
    },
    expand(granted) {
      const all = new Set(granted);
      for (const scope of granted) for (const child of closure.get(scope) ?? []) all.add(child);
      return all;
    },
  };
}

/**
 * The tool, resource or prompt a message acts on: `tools/call` → `params.name`; `resources/read`,
 * `resources/subscribe`, `resources/unsubscribe` → `params.uri`; `prompts/get` → `params.name`;
 * `completion/complete` → `params.ref` (`ref/prompt` name or `ref/resource` uri). `"invalid"` when
 * such a method lacks its string name or URI (the gateway cannot decide, so it refuses).
 */
export function targetOf(message: JsonRpcMessage): McpTarget | undefined | "invalid" {
  const method = message.method;
  if (method === undefined) return undefined;
  const params = message.params;
  if (method === "tools/call" || method === "prompts/get") {
    const name = params?.name;
    if (typeof name !== "string") return "invalid";
    return { kind: method === "tools/call" ? "tool" : "prompt", name };
  }
  if (RESOURCE_METHODS.has(method)) {
    const uri = params?.uri;
    return typeof uri === "string" ? { kind: "resource", name: uri } : "invalid";
  }
  if (method === "completion/complete") {
    const ref = params?.ref as Record<string, unknown> | undefined;
    if (typeof ref !== "object" || ref === null) return "invalid";
    if (ref.type === "ref/prompt" && typeof ref.name === "string") return { kind: "prompt", name: ref.name };
    if (ref.type === "ref/resource" && typeof ref.uri === "string")
      return { kind: "resource", name: ref.uri };
    return "invalid";
  }
  return undefined;
}
