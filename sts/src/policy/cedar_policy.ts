import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { ApprovalDecisionInput, ApprovalDecisionResult, ApproverPolicy } from "../approvals/policy.js";
import type { ResourceConfig } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { countRecentExchanges } from "../db/exchange_counters.js";
import type { Database } from "../db/schema.js";
import type { ExchangeDecisionInput, ExchangePolicy, PolicyDecision } from "../exchange/guards.js";
import type { Logger } from "../ops/logger.js";
import { authorize, policyAst, preparse } from "./cedar_wasm.js";
import { contextMembersRead, createDecisionMemo } from "./decision_memo.js";
import { approveRequest, type CedarRequest, exchangeRequest } from "./entities.js";
import { PolicyLoadError, type PolicySet } from "./load.js";
import { DEFAULT_DENY_ID, DEFAULT_POLICY_FILE, POLICY_ERROR_ID, type PolicyAction } from "./schema.js";

/** Dependencies and options of {@link createCedarPolicy}. */
export interface CedarPolicyOptions {
  /** Loaded and validated policies (`loadPolicySet`). */
  readonly policySet: PolicySet;
  /** For `recent_exchanges_per_minute` (per-second counters in `exchange_counters`). */
  readonly db: Kysely<Database>;
  /** The configured resources: their scopes and tags become the `Resource` entity's. */
  readonly resources: readonly ResourceConfig[];
  readonly logger: Logger;
  /**
   * The clock behind the time-of-day context (`hour_utc`, `weekday_utc`, `now`). Default: the time the
   * exchange grant decided at, or the current time for approvals. Tests freeze it.
   */
  readonly clock?: () => Date;
}

/** Cedar policy-as-code for both decisions: may this agent get this token, may this approver approve. */
export interface CedarPolicy extends ExchangePolicy, ApproverPolicy {
  /** The loaded policies' ids, sorted. */
  readonly policyIds: readonly string[];
  /** The files the policies came from. */
  readonly files: readonly string[];
}

const NOUN: Record<PolicyAction, string> = {
  exchange: "this token exchange",
  approve: "this approval",
  deny: "denying this approval",
  revoke: "revoking this approval",
};

/**
 * Builds the policy engine over a loaded policy set. Decisions follow Cedar: allowed when a `permit`
 * matches and no `forbid` does. A forbid answers with the forbidding policy's `@id` (the first in
 * sorted order when several forbid) and its `@reason`; no matching permit answers `default_deny`.
 * Fail closed: any evaluation error, in any policy, refuses with `policy_error`, even when the other
 * policies would allow.
 */
export function createCedarPolicy(options: CedarPolicyOptions): CedarPolicy {
  const { policySet, db, logger, clock } = options;
  const resources = new Map(options.resources.map((resource) => [resource.id, resource]));
  const name = `countersign-${randomUUID()}`;
  const record = Object.fromEntries([...policySet.policies].map(([id, policy]) => [id, policy.text]));
  const prepared = preparse(name, policySet.schemaText, name, record);
  if (!prepared.ok) {
    throw new PolicyLoadError(
      prepared.problems.map((problem) => ({
        file: policySet.files.join(", "),
        line: undefined,
        column: undefined,
        message: problem.message,
      })),
    );
  }
  // What the policies read of the context: a policy that does not parse to an AST (it parsed above, so
  // this is not expected) counts as reading everything.
  const asts = [...policySet.policies.values()].map((policy) => policyAst(policy.text));
  const reads = asts.some((ast) => ast === undefined) ? "all" : contextMembersRead(asts);
  const canRead = (member: string) => reads === "all" || reads.has(member);
  const memo = createDecisionMemo({ reads });
  // Count recent exchanges only when some policy can read the count.
  const needsExchangeRate = canRead("recent_exchanges_per_minute");

  function decide(kind: PolicyAction, request: CedarRequest, log: Record<string, unknown>): PolicyDecision {
    const result = memo.decide(request, () => authorize({ ...request, schemaName: name, policySetId: name }));
    if (result.type === "failure" || result.errors.length > 0) {
      const failing = result.errors.map((error) => error.policyId).filter((id) => id !== undefined);
      logger.error(
        {
          ...log,
          action: kind,
          policy_errors: result.errors.map((e) => ({ policy: e.policyId, message: e.message })),
        },
        "policy evaluation failed: refusing (fail closed)",
      );
      return {
        allowed: false,
        policyId: POLICY_ERROR_ID,
        reason:
          failing.length > 0
            ? `policy ${[...new Set(failing)].sort().join(", ")} could not be evaluated; refused (fail closed)`
            : "the policies could not be evaluated; refused (fail closed)",
      };
    }
    if (result.decision === "allow") return { allowed: true };
    const forbidding = [...result.determining].sort();
    const policyId = forbidding[0];
    if (policyId === undefined) {
      logger.info({ ...log, action: kind, policy: DEFAULT_DENY_ID }, "policy refused: no permit matched");
      return { allowed: false, policyId: DEFAULT_DENY_ID, reason: `no policy permits ${NOUN[kind]}` };
    }
    logger.info({ ...log, action: kind, policy: policyId, forbidding }, "policy forbids");
    const reason = policySet.policies.get(policyId)?.reason ?? `forbids ${NOUN[kind]}`;
    return { allowed: false, policyId, reason };
  }

  return {
    policyIds: [...policySet.policies.keys()].sort(),
    files: policySet.files,
    readsApprovalBudget: canRead("approval_tokens_left"),

    async authorizeExchange(input: ExchangeDecisionInput): Promise<PolicyDecision> {
      const log = { client_id: input.clientId, approval_id: input.approval.id };
      let recent = 0;
      if (needsExchangeRate) {
        try {
          recent = await countRecentExchanges(db, input.clientId, input.now);
        } catch (error) {
          if (isDatabaseUnavailable(error)) throw error; // the grant answers 503
          logger.error({ ...log, err: { message: (error as Error).message } }, "exchange rate query failed");
          return {
            allowed: false,
            policyId: POLICY_ERROR_ID,
            reason: "the policy context could not be built; refused (fail closed)",
          };
        }
      }
      const request = exchangeRequest(input, resources.get(input.resource), clock?.() ?? input.now, recent);
      return decide("exchange", request, log);
    },

    async authorizeDecision(input: ApprovalDecisionInput): Promise<ApprovalDecisionResult> {
      const log = { approval_id: input.approval.id, actor: input.approver.subject };
      const request = approveRequest(input, resources.get(input.approval.resource), clock?.() ?? new Date());
      return decide(input.action, request, log);
    },
  };
}

/** The policy files the STS loads: the configured ones, or the shipped `policies/default.cedar`. */
export function policyFilesOf(config: { readonly policies: readonly string[] }): readonly string[] {
  return config.policies.length > 0 ? config.policies : [DEFAULT_POLICY_FILE];
}
