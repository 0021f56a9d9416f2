import type { JWTPayload } from "jose";
import type { ApprovalDecisionInput } from "../approvals/policy.js";
import type { ResourceConfig } from "../config/schema.js";
import type { ExchangeDecisionInput } from "../exchange/guards.js";
import { parseScope } from "../oauth/scope.js";
import type { CedarEntity, CedarValue, EntityRef } from "./cedar_wasm.js";
import { approveContextJson, ENTITY, exchangeContextJson, type PolicyAction, timeContext } from "./schema.js";

/** Most members read from a set-valued claim (`roles`, `groups`); the rest are ignored. */
const MAX_CLAIM_SET = 64;
/** Longest claim string passed to policies, in characters; longer ones are ignored. */
const MAX_CLAIM_STRING = 256;

/** A Cedar request: principal, action, resource, context and the entities they name. */
export interface CedarRequest {
  readonly principal: EntityRef;
  readonly action: EntityRef;
  readonly resource: EntityRef;
  readonly context: Record<string, CedarValue>;
  readonly entities: readonly CedarEntity[];
}

function action(id: PolicyAction): EntityRef {
  return { type: ENTITY.action, id };
}

/** The `Resource` entity: its scopes and, as Cedar tags, its configured `tags`. */
export function resourceEntity(id: string, resource: ResourceConfig | undefined): CedarEntity {
  return {
    uid: { type: ENTITY.resource, id },
    attrs: { scopes: [...(resource?.scopes ?? [])] },
    parents: [],
    tags: { ...(resource?.tags ?? {}) },
  };
}

function claimString(value: unknown): string | undefined {
  return typeof value === "string" && value.length <= MAX_CLAIM_STRING ? value : undefined;
}

/** A set-valued claim: an array of strings, or a space-separated string (like `scope`). */
function claimSet(value: unknown): string[] {
  const items = typeof value === "string" ? value.split(" ") : Array.isArray(value) ? value : [];
  const strings = items.filter(
    (item): item is string => typeof item === "string" && item.length > 0 && item.length <= MAX_CLAIM_STRING,
  );
  return [...new Set(strings)].slice(0, MAX_CLAIM_SET);
}

/** The `Approver` entity from a verified approver token's claims. */
export function approverEntity(subject: string, issuer: string, claims: JWTPayload): CedarEntity {
  const attrs: Record<string, CedarValue> = {
    issuer,
    roles: claimSet(claims.roles),
    groups: claimSet(claims.groups),
  };
  const department = claimString(claims.department);
  if (department !== undefined) attrs.department = department;
  const email = claimString(claims.email);
  if (email !== undefined) attrs.email = email;
  return { uid: { type: ENTITY.approver, id: subject }, attrs, parents: [] };
}

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * The request for `Action::"exchange"`: the agent asks for a token for the resource.
 * @param now the policy clock's time (time-of-day members and `now`)
 * @param recentExchanges tokens issued to this agent in the last 60 s
 */
export function exchangeRequest(
  input: ExchangeDecisionInput,
  resource: ResourceConfig | undefined,
  now: Date,
  recentExchanges: number,
): CedarRequest {
  const { approval, subject } = input;
  const time = timeContext(now);
  const age =
    subject.issuedAt === undefined ? undefined : Math.max(0, time.now - Math.floor(subject.issuedAt));
  const context = exchangeContextJson({
    ...time,
    scopes: [...input.scopes],
    token_ttl_seconds: Math.floor(input.ttlSeconds),
    approval_id: approval.id,
    task: approval.task,
    approval_tokens_left: Math.max(0, approval.max_tokens - approval.tokens_issued),
    approval_max_tokens: approval.max_tokens,
    approval_scopes: parseScope(approval.scope),
    subject: subject.sub,
    subject_token_age_seconds: age,
    chained: subject.bounds !== undefined,
    actor: input.actor?.sub,
    recent_exchanges_per_minute: recentExchanges,
  });
  return {
    principal: { type: ENTITY.agent, id: input.clientId },
    action: action("exchange"),
    resource: { type: ENTITY.resource, id: input.resource },
    context,
    entities: [
      { uid: { type: ENTITY.agent, id: input.clientId }, attrs: {}, parents: [] },
      { uid: { type: ENTITY.subject, id: subject.sub }, attrs: { issuer: subject.issuer }, parents: [] },
      resourceEntity(input.resource, resource),
    ],
  };
}

/**
 * The request for `Action::"approve"`, `"deny"` or `"revoke"`: the approver decides the approval, on
 * these terms (for deny and revoke, its current ones).
 * @param now the policy clock's time
 */
export function approveRequest(
  input: ApprovalDecisionInput,
  resource: ResourceConfig | undefined,
  now: Date,
): CedarRequest {
  const { approval, approver, terms } = input;
  const createdAt = Date.parse(approval.created_at);
  const expiresAt = Date.parse(terms.expires_at);
  const context = approveContextJson({
    ...timeContext(now),
    approval_id: approval.id,
    task: approval.task,
    client_id: approval.client_id,
    subject: approval.subject ?? undefined,
    requested_scopes: parseScope(approval.requested_scope),
    scopes: parseScope(terms.scope),
    requested_max_tokens: approval.max_tokens,
    max_tokens: terms.max_tokens,
    ttl_seconds: Math.max(0, seconds(expiresAt - createdAt)),
    expires_in_seconds: Math.max(0, seconds(expiresAt - now.getTime())),
    has_rate_limit: terms.rate_limit !== null,
    tools: terms.tools ?? undefined,
    resources: terms.resources ?? undefined,
    prompts: terms.prompts ?? undefined,
  });
  return {
    principal: { type: ENTITY.approver, id: approver.subject },
    action: action(input.action),
    resource: { type: ENTITY.resource, id: approval.resource },
    context,
    entities: [
      approverEntity(approver.subject, approver.issuer, approver.claims),
      { uid: { type: ENTITY.agent, id: approval.client_id }, attrs: {}, parents: [] },
      resourceEntity(approval.resource, resource),
    ],
  };
}
