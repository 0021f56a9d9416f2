import type { Approval } from "../db/schema.js";
import { parseScope } from "../oauth/scope.js";
import { ApprovalError } from "./errors.js";
import type { ApprovalTargets, ApprovalTerms } from "./repository.js";
import { type ApproveBody, TARGET_KEYS } from "./schemas.js";

/**
 * The terms an approver grants: the approval as requested, narrowed by `body` (docs/reference.md#post-approvalsidapprove). Each term
 * may only narrow: `scope` ⊆ the requested scope, `max_tokens` ≤ the requested budget, `ttl_seconds`
 * (measured from creation) ending no later than the requested expiry and after `now`, and `rate_limit`
 * per_second and burst ≤ the requested ones (any limit narrows a request without one), and `tools`,
 * `resources` and `prompts` each a subset of the requested list (any list narrows a request that named
 * none, which allowed everything the scopes allow).
 * @param now - the current time in milliseconds since the epoch.
 * @throws {ApprovalError} 400 `invalid_scope` or `invalid_request` naming the term that widens.
 */
export function narrowTerms(approval: Approval, body: ApproveBody, now = Date.now()): ApprovalTerms {
  const refusal = { approvalId: approval.id };
  const requestedScopes = parseScope(approval.scope);
  let scope = approval.scope;
  if (body.scope !== undefined) {
    const scopes = parseScope(body.scope);
    if (scopes.length === 0) {
      throw new ApprovalError(400, "invalid_scope", "scope: names no scope", "scope_invalid", refusal);
    }
    const extra = scopes.filter((s) => !requestedScopes.includes(s));
    if (extra.length > 0) {
      throw new ApprovalError(
        400,
        "invalid_scope",
        `scope: may only narrow the requested scope "${approval.scope}"; ${extra.map((s) => JSON.stringify(s)).join(", ")} ${extra.length > 1 ? "were" : "was"} not requested`,
        "not_narrowing",
        refusal,
      );
    }
    scope = scopes.join(" ");
  }
  const maxTokens = body.max_tokens ?? approval.max_tokens;
  if (maxTokens > approval.max_tokens) {
    throw new ApprovalError(
      400,
      "invalid_request",
      `max_tokens: may only narrow the requested ${approval.max_tokens}`,
      "not_narrowing",
      refusal,
    );
  }
  let expiresAt = approval.expires_at;
  if (body.ttl_seconds !== undefined) {
    expiresAt = new Date(approval.created_at.getTime() + body.ttl_seconds * 1000);
    if (expiresAt.getTime() > approval.expires_at.getTime()) {
      const requested = Math.round((approval.expires_at.getTime() - approval.created_at.getTime()) / 1000);
      throw new ApprovalError(
        400,
        "invalid_request",
        `ttl_seconds: may only shorten the requested ${requested} seconds (measured from creation)`,
        "not_narrowing",
        refusal,
      );
    }
    if (expiresAt.getTime() <= now) {
      throw new ApprovalError(
        400,
        "invalid_request",
        "ttl_seconds: ends before now (it is measured from the approval's creation)",
        "ttl_elapsed",
        refusal,
      );
    }
  }
  const requestedLimit = approval.rate_limit;
  const rateLimit = body.rate_limit ?? requestedLimit;
  if (
    rateLimit &&
    requestedLimit &&
    (rateLimit.per_second > requestedLimit.per_second || rateLimit.burst > requestedLimit.burst)
  ) {
    throw new ApprovalError(
      400,
      "invalid_request",
      `rate_limit: may only narrow the requested per_second ${requestedLimit.per_second} and burst ${requestedLimit.burst}`,
      "not_narrowing",
      refusal,
    );
  }
  return { scope, maxTokens, expiresAt, rateLimit, targets: narrowTargets(approval, body) };
}

/** Each of `tools`, `resources`, `prompts`: the requested list, or the approver's subset of it. */
function narrowTargets(approval: Approval, body: ApproveBody): ApprovalTargets {
  const targets = { tools: approval.tools, resources: approval.resources, prompts: approval.prompts };
  for (const key of TARGET_KEYS) {
    const narrowed = body[key];
    if (narrowed === undefined) continue;
    const requested = approval[key];
    const extra = requested ? narrowed.filter((name) => !requested.includes(name)) : [];
    if (extra.length > 0) {
      throw new ApprovalError(
        400,
        "invalid_request",
        `${key}: may only narrow the requested ${key}; ${extra.map((name) => JSON.stringify(name)).join(", ")} ${extra.length > 1 ? "were" : "was"} not requested`,
        "not_narrowing",
        { approvalId: approval.id },
      );
    }
    targets[key] = narrowed;
  }
  return targets;
}
