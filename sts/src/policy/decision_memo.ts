import { LRUCache } from "lru-cache";
import type { AuthorizationResult, CedarValue } from "./cedar_wasm.js";
import type { CedarRequest } from "./entities.js";

/** Policy ASTs (Cedar's JSON policy format, as `policyToJson` gives them). */
type PolicyJson = unknown;

/**
 * The `context` members a set of policies can read: every `context.<name>`, `context["<name>"]` and
 * `context has <name>`. `"all"` when some policy uses `context` as a whole (e.g. `context == {…}`),
 * because then every member matters. Found by walking the policies' ASTs, so comments and string
 * literals that merely mention a name do not count.
 */
export function contextMembersRead(policies: Iterable<PolicyJson>): ReadonlySet<string> | "all" {
  const names = new Set<string>();
  let whole = false;
  const isContext = (node: unknown) =>
    typeof node === "object" && node !== null && (node as { Var?: unknown }).Var === "context";
  const visit = (node: unknown): void => {
    if (whole || typeof node !== "object" || node === null) return;
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (isContext(node)) {
      whole = true; // reached only when `context` is not the left side of `.`/`has`
      return;
    }
    for (const [key, value] of Object.entries(node)) {
      if ((key === "." || key === "has") && typeof value === "object" && value !== null) {
        const { left, attr } = value as { left?: unknown; attr?: unknown };
        if (isContext(left) && typeof attr === "string") {
          names.add(attr);
          continue;
        }
      }
      visit(value);
    }
  };
  for (const policy of policies) visit(policy);
  return whole ? "all" : names;
}

/** Options of {@link createDecisionMemo}. */
export interface DecisionMemoOptions {
  /** What the policies read of `context` ({@link contextMembersRead}). */
  readonly reads: ReadonlySet<string> | "all";
  /** Most decisions kept; the least recently used goes first. Default 10 000. */
  readonly maxEntries?: number;
}

/**
 * Cedar decisions remembered by everything the policies can observe of a request. A Cedar decision is
 * a pure function of the policies, the request (principal, action, resource, context) and the
 * entities; the memo's key is the principal, action, resource, every entity (with all its attributes,
 * parents and tags) and exactly the `context` members the policies read — so two requests with the
 * same key get the same decision, and a member no policy reads (such as the approval's remaining
 * budget, which changes at every exchange under the shipped policies) does not defeat the memo. Only
 * clean decisions are kept: an answer with evaluation errors, or a failure, is recomputed every time.
 * One memo per loaded policy set: reloading policies builds a new one.
 */
export interface DecisionMemo {
  /** The remembered answer for `request`, or `decide(request)` (remembered when clean). */
  decide(request: CedarRequest, decide: () => AuthorizationResult): AuthorizationResult;
  readonly size: number;
}

/** Builds a {@link DecisionMemo}. */
export function createDecisionMemo(options: DecisionMemoOptions): DecisionMemo {
  const { reads } = options;
  const cache = new LRUCache<string, AuthorizationResult>({ max: options.maxEntries ?? 10_000 });
  const keyOf = (request: CedarRequest): string => {
    let context: Record<string, CedarValue>;
    if (reads === "all") context = request.context;
    else {
      context = {};
      for (const name of reads)
        if (name in request.context) context[name] = request.context[name] as CedarValue;
    }
    return JSON.stringify([request.principal, request.action, request.resource, request.entities, context]);
  };
  return {
    decide(request, decide) {
      const key = keyOf(request);
      const known = cache.get(key);
      if (known !== undefined) return known;
      const result = decide();
      if (result.type === "decision" && result.errors.length === 0) cache.set(key, result);
      return result;
    },
    get size() {
      return cache.size;
    },
  };
}
