import { hasControlCharacter, isStorableText } from "../db/text.js";
import { parseScope } from "../oauth/scope.js";
import { refuse } from "../oidc/refusal.js";

/** RFC 8693 §3 token type identifiers. */
export const TOKEN_TYPE = {
  accessToken: "urn:ietf:params:oauth:token-type:access_token",
  jwt: "urn:ietf:params:oauth:token-type:jwt",
  idToken: "urn:ietf:params:oauth:token-type:id_token",
} as const;

const SUBJECT_TOKEN_TYPES = new Set<string>([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt, TOKEN_TYPE.idToken]);
const ACTOR_TOKEN_TYPES = new Set<string>([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt, TOKEN_TYPE.idToken]);

/** The token endpoint parameters of this grant (registered with oidc-provider). */
export const TOKEN_EXCHANGE_PARAMETERS = [
  "subject_token",
  "subject_token_type",
  "actor_token",
  "actor_token_type",
  "requested_token_type",
  "resource",
  "audience",
  "scope",
  "authorization_details",
] as const;

/** Largest `authorization_details` accepted, in bytes. */
const MAX_AUTHORIZATION_DETAILS_BYTES = 4096;
/** Largest token accepted in `subject_token` / `actor_token`, in bytes. */
const MAX_TOKEN_BYTES = 16 * 1024;

/** A validated token exchange request. */
export interface TokenExchangeRequest {
  subjectToken: string;
  subjectTokenType: string;
  actorToken: string | undefined;
  actorTokenType: string | undefined;
  /** The one target: `resource` or `audience` (RFC 8693 §2.1). */
  target: string;
  /** Requested scopes (empty: everything the approval allows). */
  scopes: string[];
  approvalId: string;
}

type RawParams = Record<string, unknown>;

function single(params: RawParams, name: string): string | undefined {
  const value = params[name];
  if (value === undefined || value === "") return undefined;
  if (typeof value !== "string") throw refuse("parameter_repeated", `${name} must be given once`);
  return value;
}

function targets(params: RawParams, name: string): string[] {
  const value = params[name];
  if (value === undefined || value === "") return [];
  return Array.isArray(value) ? value.map(String) : [String(value)];
}

/**
 * Validates the shape of a token exchange request (RFC 8693 §2.1). Semantic checks (issuers, approval,
 * scopes against the approval) happen later; this only refuses malformed input.
 */
export function parseTokenExchangeRequest(params: RawParams): TokenExchangeRequest {
  const subjectToken = single(params, "subject_token");
  const subjectTokenType = single(params, "subject_token_type");
  if (!subjectToken) throw refuse("parameter_missing", "missing required parameter 'subject_token'");
  if (!subjectTokenType) throw refuse("parameter_missing", "missing required parameter 'subject_token_type'");
  if (!SUBJECT_TOKEN_TYPES.has(subjectTokenType)) {
    throw refuse("token_type_unsupported", "unsupported subject_token_type");
  }
  if (subjectToken.length > MAX_TOKEN_BYTES)
    throw refuse("parameter_too_large", "subject_token is too large");

  const actorToken = single(params, "actor_token");
  const actorTokenType = single(params, "actor_token_type");
  if ((actorToken === undefined) !== (actorTokenType === undefined)) {
    // RFC 8693 §2.1: actor_token_type is required when actor_token is present, and must not be sent without it.
    throw refuse("actor_token_type_missing", "actor_token and actor_token_type must be given together");
  }
  if (actorTokenType !== undefined && !ACTOR_TOKEN_TYPES.has(actorTokenType)) {
    throw refuse("token_type_unsupported", "unsupported actor_token_type");
  }
  if (actorToken !== undefined && actorToken.length > MAX_TOKEN_BYTES) {
    throw refuse("parameter_too_large", "actor_token is too large");
  }

  const requestedTokenType = single(params, "requested_token_type");
  if (requestedTokenType !== undefined && requestedTokenType !== TOKEN_TYPE.accessToken) {
    throw refuse("token_type_unsupported", "only access tokens can be requested (requested_token_type)");
  }

  // The same value given as both `resource` and `audience` is one target.
  const allTargets = [...new Set([...targets(params, "resource"), ...targets(params, "audience")])];
  if (allTargets.length !== 1) {
    throw refuse(
      "target_invalid",
      allTargets.length === 0
        ? "exactly one resource or audience is required"
        : "exactly one target is allowed",
    );
  }
  const target = allTargets[0] as string;

  const scope = single(params, "scope");
  const scopes = scope === undefined ? [] : parseScope(scope);

  const approvalId = parseAuthorizationDetails(single(params, "authorization_details"));
  return { subjectToken, subjectTokenType, actorToken, actorTokenType, target, scopes, approvalId };
}

/** `authorization_details` (RFC 9396): a JSON array holding exactly one `agent_task` with an `approval_id`. */
function parseAuthorizationDetails(raw: string | undefined): string {
  if (raw === undefined) {
    throw refuse(
      "authorization_details_invalid",
      "authorization_details with an agent_task approval_id is required",
    );
  }
  if (raw.length > MAX_AUTHORIZATION_DETAILS_BYTES)
    throw refuse("parameter_too_large", "authorization_details is too large");
  let details: unknown;
  try {
    details = JSON.parse(raw);
  } catch {
    throw refuse("authorization_details_invalid", "authorization_details is not valid JSON");
  }
  if (!Array.isArray(details) || details.length === 0) {
    throw refuse("authorization_details_invalid", "authorization_details must be a non-empty JSON array");
  }
  const tasks = details.filter(
    (detail): detail is Record<string, unknown> =>
      typeof detail === "object" &&
      detail !== null &&
      (detail as Record<string, unknown>).type === "agent_task",
  );
  if (tasks.length !== 1 || details.length !== 1) {
    throw refuse("authorization_details_invalid", "authorization_details must hold exactly one agent_task");
  }
  const approvalId = (tasks[0] as Record<string, unknown>).approval_id;
  if (
    typeof approvalId !== "string" ||
    approvalId.length === 0 ||
    approvalId.length > 64 ||
    !isStorableText(approvalId) ||
    hasControlCharacter(approvalId)
  ) {
    throw refuse("authorization_details_invalid", "the agent_task must carry an approval_id");
  }
  return approvalId;
}
