import { packagePath } from "../ops/package_root.js";
import type { CedarValue } from "./cedar_wasm.js";

/**
 * The Cedar schema every policy is validated against (`policies/schema.cedarschema`, documented
 * there). It is part of the STS, not of the configuration: the STS builds the entities and contexts it
 * describes, so a policy can only talk about what the STS actually supplies.
 */
export const SCHEMA_FILE = packagePath("policies/schema.cedarschema");

/** The shipped default policy, loaded when `config.policies` is empty. */
export const DEFAULT_POLICY_FILE = packagePath("policies/default.cedar");

/** Entity type names in the schema. */
export const ENTITY = {
  agent: "Agent",
  subject: "Subject",
  approver: "Approver",
  resource: "Resource",
  action: "Action",
} as const;

/** The actions policies decide. */
export type PolicyAction = "exchange" | "approve" | "deny" | "revoke";

/**
 * The policy id of a refusal caused by an evaluation error (or a wasm failure): fail closed. Reserved;
 * no policy may use it as its `@id`.
 */
export const POLICY_ERROR_ID = "policy_error";

/** The policy id of Cedar's implicit deny (no `permit` matched). Reserved. */
export const DEFAULT_DENY_ID = "default_deny";

/** An entity reference inside a context (`{"__entity": {type, id}}` in Cedar JSON). */
function entityValue(type: string, id: string): CedarValue {
  return { __entity: { type, id } };
}

/** Time members common to both contexts. */
export interface TimeContext {
  /** Hour of the day in UTC, 0–23. */
  readonly hour_utc: number;
  /** Day of the week in UTC, 0 = Sunday … 6 = Saturday. */
  readonly weekday_utc: number;
  /** Seconds since the epoch. */
  readonly now: number;
}

/** `ExchangeContext` in the schema: what an exchange policy sees besides principal and resource. */
export interface ExchangeContext extends TimeContext {
  readonly scopes: readonly string[];
  /** Seconds. */
  readonly token_ttl_seconds: number;
  readonly approval_id: string;
  readonly task: string;
  readonly approval_tokens_left: number;
  readonly approval_max_tokens: number;
  readonly approval_scopes: readonly string[];
  /** The subject's id (`sub`); rendered as `Subject::"<sub>"`. */
  readonly subject: string;
  /** Seconds since the subject token's `iat`; absent when it has none. */
  readonly subject_token_age_seconds: number | undefined;
  readonly chained: boolean;
  /** The actor token's `sub`, when there is one. */
  readonly actor: string | undefined;
  /** Tokens issued to this agent in the last 60 s, before this one. */
  readonly recent_exchanges_per_minute: number;
}

/** `ApproveContext` in the schema. */
export interface ApproveContext extends TimeContext {
  readonly approval_id: string;
  readonly task: string;
  readonly client_id: string;
  readonly subject: string | undefined;
  readonly requested_scopes: readonly string[];
  readonly scopes: readonly string[];
  readonly requested_max_tokens: number;
  readonly max_tokens: number;
  /** Seconds, from the approval's creation to the granted expiry. */
  readonly ttl_seconds: number;
  /** Seconds from now to the granted expiry. */
  readonly expires_in_seconds: number;
  readonly has_rate_limit: boolean;
  /** The MCP tools the approval names; `undefined` when it names none (every tool its scopes allow). */
  readonly tools: readonly string[] | undefined;
  /** The MCP resource URIs the approval names; `undefined` when it names none. */
  readonly resources: readonly string[] | undefined;
  /** The MCP prompts the approval names; `undefined` when it names none. */
  readonly prompts: readonly string[] | undefined;
}

/** The time members for `now`, in UTC. */
export function timeContext(now: Date): TimeContext {
  return {
    hour_utc: now.getUTCHours(),
    weekday_utc: now.getUTCDay(),
    now: Math.floor(now.getTime() / 1000),
  };
}

function withOptional(record: Record<string, CedarValue>, name: string, value: CedarValue | undefined) {
  if (value !== undefined) record[name] = value;
}

/** Renders an {@link ExchangeContext} as Cedar JSON (optional members omitted when absent). */
export function exchangeContextJson(context: ExchangeContext): Record<string, CedarValue> {
  const json: Record<string, CedarValue> = {
    scopes: [...context.scopes],
    token_ttl_seconds: context.token_ttl_seconds,
    approval_id: context.approval_id,
    task: context.task,
    approval_tokens_left: context.approval_tokens_left,
    approval_max_tokens: context.approval_max_tokens,
    approval_scopes: [...context.approval_scopes],
    subject: entityValue(ENTITY.subject, context.subject),
    chained: context.chained,
    recent_exchanges_per_minute: context.recent_exchanges_per_minute,
    hour_utc: context.hour_utc,
    weekday_utc: context.weekday_utc,
    now: context.now,
  };
  withOptional(json, "subject_token_age_seconds", context.subject_token_age_seconds);
  withOptional(json, "actor", context.actor);
  return json;
}

/** Renders an {@link ApproveContext} as Cedar JSON. */
export function approveContextJson(context: ApproveContext): Record<string, CedarValue> {
  const json: Record<string, CedarValue> = {
    approval_id: context.approval_id,
    task: context.task,
    client_id: context.client_id,
    agent: entityValue(ENTITY.agent, context.client_id),
    requested_scopes: [...context.requested_scopes],
    scopes: [...context.scopes],
    requested_max_tokens: context.requested_max_tokens,
    max_tokens: context.max_tokens,
    ttl_seconds: context.ttl_seconds,
    expires_in_seconds: context.expires_in_seconds,
    has_rate_limit: context.has_rate_limit,
    hour_utc: context.hour_utc,
    weekday_utc: context.weekday_utc,
    now: context.now,
  };
  withOptional(json, "subject", context.subject);
  withOptional(json, "tools", context.tools && [...context.tools]);
  withOptional(json, "resources", context.resources && [...context.resources]);
  withOptional(json, "prompts", context.prompts && [...context.prompts]);
  return json;
}
