/**
 * The only module that touches `@cedar-policy/cedar-wasm`. It turns the wasm answers into small typed
 * results and never lets a wasm exception escape: a throw becomes a failure (callers fail closed).
 * Source offsets from Cedar are UTF-8 byte offsets into the text that was passed in.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";

/** A JSON value Cedar accepts as an attribute, a context member or a tag. */
export type CedarValue = cedar.CedarValueJson;

/** An entity reference: `Type::"id"`. */
export interface EntityRef {
  readonly type: string;
  readonly id: string;
}

/** An entity with its attributes (and tags), as passed to an authorization call. */
export interface CedarEntity {
  readonly uid: EntityRef;
  readonly attrs: Record<string, CedarValue>;
  readonly parents: readonly EntityRef[];
  readonly tags?: Record<string, CedarValue>;
}

/** One problem Cedar reported: its message (and help), with byte spans into the text it was given. */
export interface CedarProblem {
  readonly message: string;
  readonly help: string | null;
  /** Byte spans (`start` inclusive, `end` exclusive) into the checked text; may be empty. */
  readonly spans: readonly { start: number; end: number }[];
  /** The policy the problem is about, when Cedar names one (validation and evaluation errors). */
  readonly policyId?: string;
}

/** Success, or the problems found. */
export type CedarCheck = { ok: true } | { ok: false; problems: CedarProblem[] };

function problemOf(error: cedar.DetailedError, policyId?: string): CedarProblem {
  const label = error.sourceLocations?.find((location) => location.label)?.label;
  return {
    message: label ? `${error.message}: ${label}` : error.message,
    help: error.help,
    spans: (error.sourceLocations ?? []).map(({ start, end }) => ({ start, end })),
    ...(policyId === undefined ? {} : { policyId }),
  };
}

function thrown(error: unknown): CedarProblem {
  return {
    message: `cedar-wasm failed: ${error instanceof Error ? error.message : String(error)}`,
    help: null,
    spans: [],
  };
}

function checked(run: () => cedar.CheckParseAnswer): CedarCheck {
  try {
    const answer = run();
    return answer.type === "success"
      ? { ok: true }
      : { ok: false, problems: answer.errors.map((e) => problemOf(e)) };
  } catch (error) {
    return { ok: false, problems: [thrown(error)] };
  }
}

/** Parses a Cedar schema (human-readable `.cedarschema` text). */
export function checkSchema(schemaText: string): CedarCheck {
  return checked(() => cedar.checkParseSchema(schemaText));
}

/** A file's policies split one by one (each a slice of the file's text), and any templates found. */
export type SplitPolicies =
  | { ok: true; policies: string[]; templates: string[] }
  | { ok: false; problems: CedarProblem[] };

/** Splits policy-set text into its policies (Cedar sorts them by its own `policyN` ids). */
export function splitPolicies(policyText: string): SplitPolicies {
  try {
    const answer = cedar.policySetTextToParts(policyText);
    if (answer.type === "failure") return { ok: false, problems: answer.errors.map((e) => problemOf(e)) };
    return { ok: true, policies: answer.policies, templates: answer.policy_templates };
  } catch (error) {
    return { ok: false, problems: [thrown(error)] };
  }
}

/** The annotations (`@name("value")`) of one policy. */
export function policyAnnotations(
  policy: string,
): { ok: true; annotations: Record<string, string> } | { ok: false; problems: CedarProblem[] } {
  try {
    const answer = cedar.policyToJson(policy);
    if (answer.type === "failure") return { ok: false, problems: answer.errors.map((e) => problemOf(e)) };
    return { ok: true, annotations: { ...(answer.json.annotations ?? {}) } };
  } catch (error) {
    return { ok: false, problems: [thrown(error)] };
  }
}

/** One policy in Cedar's JSON policy format (its AST), or undefined if it does not parse. */
export function policyAst(policy: string): unknown {
  try {
    const answer = cedar.policyToJson(policy);
    return answer.type === "success" ? answer.json : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Validates policies, keyed by policy id, against a schema (strict mode). Spans are relative to each
 * policy's own text; `policyId` says which.
 */
export function validatePolicies(schemaText: string, policies: Record<string, string>): CedarCheck {
  try {
    const answer = cedar.validate({
      schema: schemaText,
      policies: { staticPolicies: policies },
      validationSettings: { mode: "strict" },
    });
    if (answer.type === "failure") return { ok: false, problems: answer.errors.map((e) => problemOf(e)) };
    if (answer.validationErrors.length === 0) return { ok: true };
    return {
      ok: false,
      problems: answer.validationErrors.map((e) => problemOf(e.error, e.policyId)),
    };
  } catch (error) {
    return { ok: false, problems: [thrown(error)] };
  }
}

/**
 * Caches a schema and a policy set inside the wasm module under the given names (per thread, for the
 * life of the process), so each decision skips parsing. Names must be unique per policy engine.
 */
export function preparse(
  schemaName: string,
  schemaText: string,
  policySetId: string,
  policies: Record<string, string>,
): CedarCheck {
  const schema = checked(() => cedar.preparseSchema(schemaName, schemaText));
  if (!schema.ok) return schema;
  return checked(() => cedar.preparsePolicySet(policySetId, { staticPolicies: policies }));
}

/** An authorization request against preparsed names ({@link preparse}). */
export interface AuthorizationRequest {
  readonly schemaName: string;
  readonly policySetId: string;
  readonly principal: EntityRef;
  readonly action: EntityRef;
  readonly resource: EntityRef;
  readonly context: Record<string, CedarValue>;
  readonly entities: readonly CedarEntity[];
}

/**
 * A decision: `allow`/`deny` with the determining policy ids (the permits that allowed, or the forbids
 * that denied; none for Cedar's default deny) and any evaluation errors; or `failure` when the request
 * could not be evaluated at all (e.g. a context that does not match the schema).
 */
export type AuthorizationResult =
  | { type: "decision"; decision: "allow" | "deny"; determining: string[]; errors: CedarProblem[] }
  | { type: "failure"; errors: CedarProblem[] };

/** Evaluates a request, validating it against the schema first. Never throws. */
export function authorize(request: AuthorizationRequest): AuthorizationResult {
  try {
    const answer = cedar.statefulIsAuthorized({
      principal: { ...request.principal },
      action: { ...request.action },
      resource: { ...request.resource },
      context: request.context,
      entities: request.entities.map((entity) => ({
        uid: { ...entity.uid },
        attrs: entity.attrs,
        parents: entity.parents.map((parent) => ({ ...parent })),
        ...(entity.tags ? { tags: entity.tags } : {}),
      })),
      preparsedSchemaName: request.schemaName,
      preparsedPolicySetId: request.policySetId,
      validateRequest: true,
    });
    if (answer.type === "failure") return { type: "failure", errors: answer.errors.map((e) => problemOf(e)) };
    const { decision, diagnostics } = answer.response;
    return {
      type: "decision",
      decision,
      determining: [...diagnostics.reason],
      errors: diagnostics.errors.map((e) => problemOf(e.error, e.policyId)),
    };
  } catch (error) {
    return { type: "failure", errors: [thrown(error)] };
  }
}
