import type { RateLimit } from "../config/schema.js";
import type { Approval } from "../db/schema.js";
import { parseScope } from "../oauth/scope.js";
import { refuse } from "../oidc/refusal.js";
import type { ActClaim, IssuedTokenBounds, SubjectIdentity } from "./token_validators.js";

/**
 * The token exchange's own rules, as pure functions: no I/O, no clock of their own, no HTTP. Each
 * either answers or throws the refusal the reference names (sts/src/reasons.ts). The grant
 * (grant.ts) calls them in the documented order.
 */

/** How many actors a (possibly nested) `act` claim holds, counting at most `limit + 1`. */
export function actDepth(act: unknown, limit = 8): number {
  let depth = 0;
  let node = act;
  while (node && typeof node === "object") {
    depth += 1;
    if (depth > limit) return depth;
    node = (node as { act?: unknown }).act;
  }
  return depth;
}

/**
 * The approval's subject binding is (issuer, sub). A token this STS issued under the same approval
 * (checked by {@link assertNarrowing}) was matched when it was minted, so its own issuer is not
 * compared; its `sub` still is.
 */
export function assertSubjectBinding(approval: Approval, subject: SubjectIdentity): void {
  if (approval.subject === null) return;
  const issuerDiffers =
    approval.subject_issuer !== null &&
    subject.bounds === undefined &&
    approval.subject_issuer !== subject.issuer;
  if (approval.subject !== subject.sub || issuerDiffers) {
    throw refuse("subject_mismatch", "the subject token's subject is not the approval's subject");
  }
}

/** The approval is for the requested resource. */
export function assertApprovedResource(approval: Approval, resourceId: string): void {
  if (approval.resource !== resourceId) {
    throw refuse("resource_not_approved", "the approval is for another resource");
  }
}

/**
 * RFC 8693 chained exchange: a token this STS issued may only be exchanged for something narrower —
 * same approval and client, same resource, and a proof of its DPoP key when it is bound.
 */
export function assertNarrowing(
  bounds: IssuedTokenBounds | undefined,
  request: { approvalId: string; clientId: string; resourceId: string; dpopThumbprint: string | undefined },
): void {
  if (bounds === undefined) return;
  if (bounds.approvalId !== request.approvalId || bounds.clientId !== request.clientId) {
    throw refuse("subject_token_other_approval", "the subject token belongs to another approval");
  }
  if (bounds.audience !== request.resourceId) {
    throw refuse("subject_token_other_resource", "the subject token is for another resource");
  }
  if (bounds.jkt !== undefined && request.dpopThumbprint !== bounds.jkt) {
    throw refuse(
      "subject_token_dpop_key_mismatch",
      "the subject token is DPoP-bound: send a DPoP proof signed with its key",
    );
  }
}

/**
 * The scopes the token gets: those requested (or, when none are, everything allowed), where allowed
 * is the approval's scope ∩ the resource's scopes ∩ (for a chained exchange) the subject token's.
 */
export function grantedScopes(input: {
  approvalScope: string;
  resourceScopes: readonly string[];
  bounds: IssuedTokenBounds | undefined;
  requested: readonly string[];
}): string[] {
  const allowed = new Set(
    parseScope(input.approvalScope).filter(
      (scope) =>
        input.resourceScopes.includes(scope) && (!input.bounds || input.bounds.scopes.includes(scope)),
    ),
  );
  const scopes = input.requested.length > 0 ? [...input.requested] : [...allowed];
  const outside = scopes.filter((scope) => !allowed.has(scope));
  if (outside.length > 0 || scopes.length === 0) {
    throw refuse("scope_not_approved", `scope not within the approval: ${outside.join(" ") || "(none)"}`);
  }
  return scopes;
}

/**
 * The token's lifetime in seconds: the smallest of the resource's cap (or the default lifetime), the
 * STS's cap, the approval's remaining life and, for a chained exchange, the subject token's.
 */
export function tokenLifetime(input: {
  resourceMaxTtlSeconds: number | undefined;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  approvalExpiresAt: Date;
  boundsExp: number | undefined;
  nowMs: number;
}): number {
  const iat = Math.floor(input.nowMs / 1000);
  const caps = [
    input.resourceMaxTtlSeconds ?? input.defaultTtlSeconds,
    input.maxTtlSeconds,
    Math.floor((input.approvalExpiresAt.getTime() - input.nowMs) / 1000),
  ];
  if (input.boundsExp !== undefined) caps.push(input.boundsExp - iat);
  const ttl = Math.min(...caps);
  if (ttl < 1) throw refuse("approval_expired", "the approval has expired");
  return ttl;
}

/**
 * The minted token's `act` (RFC 8693 §4.1: the outermost `act` is the current actor, nested ones are
 * prior actors, the least recent most deeply nested):
 *
 * - the current actor is the actor token's subject (`{sub, iss}`), the party policy decides on;
 * - under it, the actor token's own `act` (who acts for that actor), kept as the actor token gave it;
 * - deepest, the chain the subject token already carried (the delegation of the subject's authority
 *   before this exchange, so the least recent).
 *
 * Without an actor token the subject token's chain is carried as it is. At most `maxDepth` actors in
 * all, counted before anything is built; the presented claims are not modified.
 * @throws `delegation_too_deep` when the chain would hold more than `maxDepth` actors.
 */
export function chainAct(
  actor: ActClaim | undefined,
  prior: ActClaim | undefined,
  maxDepth: number,
): ActClaim | undefined {
  if (actDepth(actor, maxDepth) + actDepth(prior, maxDepth) > maxDepth) {
    throw refuse("delegation_too_deep", `the delegation chain would exceed ${maxDepth} actors`);
  }
  if (actor === undefined || prior === undefined) return actor ?? prior;
  const withPrior = (node: ActClaim): ActClaim => ({
    ...node,
    act: node.act === undefined ? prior : withPrior(node.act),
  });
  return withPrior(actor);
}

/** The tighter of two optional rate limits, member by member. */
export function tighterRateLimit(
  a: RateLimit | null | undefined,
  b: RateLimit | null | undefined,
): RateLimit | undefined {
  if (!a) return b ?? undefined;
  if (!b) return a;
  return { per_second: Math.min(a.per_second, b.per_second), burst: Math.min(a.burst, b.burst) };
}

/**
 * Largest size of a minted access token, in bytes: the gateway verifier's default `maxTokenBytes`.
 * A larger token is refused before the approval's budget is taken.
 */
export const MAX_ACCESS_TOKEN_BYTES = 8192;

/**
 * Most bytes of the approval's task a token carries in its `agent_task` details, measured as
 * JSON-encoded UTF-8 (what the token holds). The approval keeps the whole text.
 */
export const MAX_TOKEN_TASK_BYTES = 512;

/**
 * The task text a token carries: whole code points while their JSON-encoded UTF-8 size fits
 * `maxBytes` (an escaped control character counts as the six bytes it takes).
 */
export function taskClaim(
  task: string,
  maxBytes = MAX_TOKEN_TASK_BYTES,
): { task: string; truncated: boolean } {
  let size = 0;
  let end = 0;
  for (const codePoint of task) {
    const bytes = Buffer.byteLength(JSON.stringify(codePoint)) - 2;
    if (size + bytes > maxBytes) return { task: task.slice(0, end), truncated: true };
    size += bytes;
    end += codePoint.length;
  }
  return { task, truncated: false };
}

/** What an access token is made of (RFC 9068, plus Countersign's claims). */
export interface AccessTokenContent {
  readonly issuer: string;
  readonly subject: string;
  readonly resource: string;
  readonly clientId: string;
  readonly scopes: readonly string[];
  /** Seconds since the epoch. */
  readonly iat: number;
  readonly ttlSeconds: number;
  readonly jti: string;
  /** `tools`, `resources`, `prompts`: the MCP names the approval allows (null: every one its scopes allow). */
  /** `call_tool`, `call_arguments_digest`: the one `tools/call` the approval binds (null: none). */
  readonly approval: Pick<
    Approval,
    "id" | "task" | "tools" | "resources" | "prompts" | "call_tool" | "call_arguments_digest"
  >;
  readonly act: ActClaim | undefined;
  readonly rateLimit: RateLimit | undefined;
  /** The DPoP key thumbprint the token is bound to (`cnf.jkt`). */
  readonly jkt: string | undefined;
}

/**
 * The access token's claims set, in the reference's order. The `agent_task` entry names the approval's
 * MCP `tools`, `resources` and `prompts` when it names them (an MCP gateway allows those alone); their
 * size is bounded when the approval is requested (`MAX_TARGETS_BYTES` in sts/src/approvals/schemas.ts).
 * A call approval adds `call: {tool, arguments_digest}` (at most 256 + 43 characters): the gateway
 * lets exactly that `tools/call` through, once.
 */
export function accessTokenClaims(content: AccessTokenContent): Record<string, unknown> {
  const task = taskClaim(content.approval.task);
  return {
    iss: content.issuer,
    sub: content.subject,
    aud: content.resource,
    client_id: content.clientId,
    scope: content.scopes.join(" "),
    iat: content.iat,
    exp: content.iat + content.ttlSeconds,
    jti: content.jti,
    approval_id: content.approval.id,
    authorization_details: [
      {
        type: "agent_task",
        approval_id: content.approval.id,
        task: task.task,
        ...(task.truncated ? { task_truncated: true } : {}),
        ...(content.approval.tools ? { tools: content.approval.tools } : {}),
        ...(content.approval.resources ? { resources: content.approval.resources } : {}),
        ...(content.approval.prompts ? { prompts: content.approval.prompts } : {}),
        ...(content.approval.call_tool !== null && content.approval.call_arguments_digest !== null
          ? {
              call: {
                tool: content.approval.call_tool,
                arguments_digest: content.approval.call_arguments_digest,
              },
            }
          : {}),
      },
    ],
    ...(content.act ? { act: content.act } : {}),
    ...(content.rateLimit ? { rate_limit: content.rateLimit } : {}),
    ...(content.jkt ? { cnf: { jkt: content.jkt } } : {}),
  };
}

/** Why an approval cannot mint a token now (or, for `terms_changed`, not on the terms decided). */
export type ApprovalRefusalOutcome =
  | "not_found"
  | "pending"
  | "denied"
  | "revoked"
  | "expired"
  | "used_up"
  | "terms_changed";

/**
 * The refusal an unusable approval means: the one mapping from outcome to reason code and text, used
 * both by the check before issuance (approval_checks.ts) and for what `countersign_issue` answers
 * instead of a token.
 */
export function issueRefusal(outcome: ApprovalRefusalOutcome) {
  switch (outcome) {
    case "not_found":
      return refuse("approval_not_found", "no such approval for this client");
    case "pending":
      return refuse("approval_pending", "the approval is still pending a human decision");
    case "denied":
      return refuse("approval_denied", "the approval was denied");
    case "revoked":
      return refuse("approval_revoked", "the approval was revoked");
    case "expired":
      return refuse("approval_expired", "the approval has expired");
    case "used_up":
      return refuse("approval_used_up", "the approval's token budget is used up");
    case "terms_changed":
      // Still usable, but not on the terms this token was decided on: decide again on the new terms.
      return refuse("approval_changed", "the approval changed during the exchange, retry");
  }
}

/**
 * The scopes an MCP client's request without an approval id asks for (client_credentials or an
 * ID-JAG): those named, or the resource's `default_scopes` when none are; each one of the resource's
 * scopes. Sorted and without repeats, so the same request always has the same key.
 */
export function requestedResourceScopes(
  requested: readonly string[],
  resource: { readonly scopes: readonly string[]; readonly default_scopes?: readonly string[] | undefined },
): string[] {
  const scopes = requested.length > 0 ? requested : (resource.default_scopes ?? []);
  if (scopes.length === 0) {
    throw refuse("scope_missing", "name a scope: the resource has no default_scopes");
  }
  const unknown = scopes.filter((scope) => !resource.scopes.includes(scope));
  if (unknown.length > 0) {
    throw refuse("scope_unknown", `not a scope of the resource: ${unknown.join(" ")}`);
  }
  return [...new Set(scopes)].sort();
}

/** What an MCP client's request without an approval id finds among the approvals of its key. */
export type StandingApprovalMatch =
  | { readonly kind: "approved"; readonly approval: Approval; readonly scopes: readonly string[] }
  | { readonly kind: "pending"; readonly approval: Approval }
  | { readonly kind: "refused"; readonly approval: Approval }
  | { readonly kind: "none" };

/**
 * Picks, among `candidates` (the client's approvals for the resource and subject: approved ones that
 * are unexpired with budget left, pending ones, and those denied or revoked within the cool-down; newest
 * first), what answers a request for `scopes`:
 *
 * 1. an approved approval whose scope holds every scope asked for, or the one recorded for this very
 *    request (its `requested_scope` is the request's), whose approver may have narrowed it: the token
 *    gets the asked scopes within it;
 * 2. else the pending approval recorded for this request;
 * 3. else an approval recorded for this request, or holding every scope asked for, that a human denied
 *    or revoked less than `cooldownSeconds` ago.
 */
export function matchStandingApproval(
  candidates: readonly Approval[],
  scopes: readonly string[],
  nowMs: number,
  cooldownSeconds: number,
): StandingApprovalMatch {
  const key = scopes.join(" ");
  const holds = (approval: Approval) => {
    const granted = new Set(parseScope(approval.scope));
    return scopes.every((scope) => granted.has(scope));
  };
  const live = (approval: Approval) => approval.expires_at.getTime() > nowMs;
  for (const approval of candidates) {
    if (approval.status !== "approved" || !live(approval)) continue;
    if (approval.tokens_issued >= approval.max_tokens) continue;
    if (holds(approval)) return { kind: "approved", approval, scopes };
    if (approval.requested_scope === key) {
      const granted = new Set(parseScope(approval.scope));
      const within = scopes.filter((scope) => granted.has(scope));
      if (within.length > 0) return { kind: "approved", approval, scopes: within };
    }
  }
  const pending = candidates.find(
    (approval) => approval.status === "pending" && live(approval) && approval.requested_scope === key,
  );
  if (pending) return { kind: "pending", approval: pending };
  const refused = candidates.find(
    (approval) =>
      (approval.status === "denied" || approval.status === "revoked") &&
      ((approval.revoked_at ?? approval.decided_at)?.getTime() ?? 0) > nowMs - cooldownSeconds * 1000 &&
      (approval.requested_scope === key || holds(approval)),
  );
  if (refused) return { kind: "refused", approval: refused };
  return { kind: "none" };
}
