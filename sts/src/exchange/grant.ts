import { errors, type TokenEndpointGrantContext } from "oidc-provider";
import type pg from "pg";
import { parseScope } from "../approvals/model.js";
import { recordAudit } from "../audit/audit_log.js";
import type { ResourceConfig } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { Approval } from "../db/schema.js";
import type { AccessTokenSigner } from "../keys/access_token_signer.js";
import { retryAfterSeconds } from "../limits/issuance_limiter.js";
import { TOKEN_EXCHANGE_GRANT } from "../oidc/clients.js";
import { assertDpopNotReplayed, validateDpopProof } from "../oidc/dpop.js";
import type { GrantRegistration } from "../oidc/provider.js";
import type { StsServices } from "../services.js";
import { createApprovalCache } from "./approval_cache.js";
import { assertApprovalUsable } from "./approval_checks.js";
import type { ExchangeGuards } from "./guards.js";
import { createIssuanceStore } from "./issuance_store.js";
import { newJti } from "./jti.js";
import { parseTokenExchangeRequest, TOKEN_EXCHANGE_PARAMETERS, TOKEN_TYPE } from "./parameters.js";
import { isRefusal, refusal, unavailable } from "./refusal.js";
import { MAX_ACCESS_TOKEN_BYTES, taskClaim } from "./task_claim.js";
import { type ActClaim, actDepth, validateActorToken, validateSubjectToken } from "./token_validators.js";
import { createVerifiedTokenCache } from "./verified_token_cache.js";

/**
 * The token's RFC 9396 `agent_task` authorization details: the approval and its task, the task bounded
 * in size (`task_truncated` when shortened; the approval holds the whole text).
 */
function agentTaskDetail(approvalId: string, task: string) {
  const claim = taskClaim(task);
  return {
    type: "agent_task",
    approval_id: approvalId,
    task: claim.task,
    ...(claim.truncated ? { task_truncated: true } : {}),
  };
}

/** Tighter of two optional rate limits, member by member. */
function tighterRateLimit(
  a: { per_second: number; burst: number } | null | undefined,
  b: { per_second: number; burst: number } | null | undefined,
): { per_second: number; burst: number } | undefined {
  if (!a) return b ?? undefined;
  if (!b) return a;
  return { per_second: Math.min(a.per_second, b.per_second), burst: Math.min(a.burst, b.burst) };
}

/** Options of {@link tokenExchangeGrant}. */
export interface TokenExchangeGrantOptions {
  /**
   * The pg pool when the database is a real Postgres (the same one `services.db` runs on): the
   * exchange's statements then run as named prepared statements. Without it, through Kysely.
   */
  readonly pool?: pg.Pool | undefined;
}

/**
 * The RFC 8693 token exchange grant (CONTRACT §4). It orchestrates and holds no crypto: validate the
 * request, the subject and actor tokens, the approval, scope and policy, then take the budget and the
 * issued-token row in one transaction, and answer with an RFC 9068 JWT access token.
 */
export function tokenExchangeGrant(
  services: StsServices,
  signer: () => AccessTokenSigner,
  guards: ExchangeGuards = {},
  options: TokenExchangeGrantOptions = {},
): GrantRegistration {
  const { config, db, logger, metrics } = services;
  const store = createIssuanceStore(db, options.pool, {
    onBatch: (size) => metrics.issueBatchSize.observe(size),
  });
  const resources = new Map<string, ResourceConfig>(
    config.resources.map((resource) => [resource.id, resource]),
  );
  const verifiedTokens = createVerifiedTokenCache();
  // A policy that reads the live budget must see a fresh approval at every exchange.
  const approvals = guards.policy?.readsApprovalBudget === false ? createApprovalCache() : undefined;
  const readApproval = (id: string) =>
    approvals ? approvals.get(id, () => store.findApproval(id)) : store.findApproval(id);

  async function exchange(ctx: TokenEndpointGrantContext): Promise<void> {
    const clientId = ctx.oidc.client.clientId;
    const request = parseTokenExchangeRequest(ctx.oidc.params as Record<string, unknown>);
    const resource = resources.get(request.target);
    if (!resource)
      throw refusal(errors.InvalidTarget, "resource_unknown", "the requested resource is not configured");

    // RFC 9449 §5: a DPoP proof at the token endpoint binds the new token to the proof's key.
    const dPoP = await validateDpopProof(ctx.oidc.provider, ctx);
    const subject = await validateSubjectToken(
      services,
      request.subjectToken,
      request.subjectTokenType,
      verifiedTokens,
    );
    const actor = request.actorToken
      ? await validateActorToken(services, request.actorToken, verifiedTokens)
      : undefined;

    const approval = assertApprovalUsable(await readApproval(request.approvalId), clientId);
    if (approval.resource !== resource.id) {
      throw refusal(errors.InvalidTarget, "resource_not_approved", "the approval is for another resource");
    }
    // The binding is (issuer, sub); a token this STS issued was matched when it was first minted under
    // this same approval (checked below), so its own issuer is not compared.
    if (
      approval.subject !== null &&
      (approval.subject !== subject.sub ||
        (approval.subject_issuer !== null && !subject.bounds && approval.subject_issuer !== subject.issuer))
    ) {
      throw refusal(
        errors.InvalidGrant,
        "subject_mismatch",
        "the subject token's subject is not the approval's subject",
      );
    }

    // A token this STS issued may only be exchanged for something narrower (same approval, client, resource).
    const bounds = subject.bounds;
    if (bounds) {
      if (bounds.approvalId !== approval.id || bounds.clientId !== clientId) {
        throw refusal(
          errors.InvalidGrant,
          "subject_token_other_approval",
          "the subject token belongs to another approval",
        );
      }
      if (bounds.audience !== resource.id) {
        throw refusal(
          errors.InvalidTarget,
          "subject_token_other_resource",
          "the subject token is for another resource",
        );
      }
      if (bounds.jkt !== undefined && dPoP?.thumbprint !== bounds.jkt) {
        throw refusal(
          errors.InvalidGrant,
          "subject_token_dpop_key_mismatch",
          "the subject token is DPoP-bound: send a DPoP proof signed with its key",
        );
      }
    }

    const allowed = new Set(parseScope(approval.scope).filter((scope) => resource.scopes.includes(scope)));
    if (bounds) for (const scope of [...allowed]) if (!bounds.scopes.includes(scope)) allowed.delete(scope);
    const scopes = request.scopes.length > 0 ? request.scopes : [...allowed];
    const outside = scopes.filter((scope) => !allowed.has(scope));
    if (outside.length > 0 || scopes.length === 0) {
      throw refusal(
        errors.InvalidScope,
        "scope_not_approved",
        `scope not within the approval: ${outside.join(" ") || "(none)"}`,
      );
    }

    const nowMs = Date.now();
    const iat = Math.floor(nowMs / 1000);
    const approvalLeft = Math.floor((approval.expires_at.getTime() - nowMs) / 1000);
    const caps = [
      resource.max_ttl_seconds ?? config.tokens.default_ttl_seconds,
      config.tokens.max_ttl_seconds,
      approvalLeft,
    ];
    if (bounds) caps.push(bounds.exp - iat);
    const ttlSeconds = Math.min(...caps);
    if (ttlSeconds < 1) throw refusal(errors.InvalidGrant, "approval_expired", "the approval has expired");

    if (guards.policy) {
      const decision = await guards.policy.authorizeExchange({
        clientId,
        subject,
        actor,
        approval,
        resource: resource.id,
        scopes,
        ttlSeconds,
        now: new Date(nowMs),
      });
      if (!decision.allowed) {
        throw refusal(
          errors.InvalidGrant,
          "policy_forbids",
          `forbidden by policy ${decision.policyId}: ${decision.reason}`,
        );
      }
    }
    // On real Postgres the limits are taken in the budget's database call (one round trip for both).
    const limits = guards.limiter?.prepareTake?.(clientId, approval.id);
    if (guards.limiter && limits === undefined) {
      const limit = await guards.limiter.consume(clientId, approval.id);
      if (!limit.allowed) throw rateLimited(ctx, limit.retryAfterSeconds);
    }

    // RFC 8693 §4.1: the current actor on top, the earlier chain nested inside.
    const act: ActClaim | undefined = actor
      ? { ...actor, ...(subject.act ? { act: subject.act } : {}) }
      : subject.act;
    if (actDepth(act) > config.tokens.max_delegation_depth) {
      throw refusal(
        errors.InvalidGrant,
        "delegation_too_deep",
        `the delegation chain would exceed ${config.tokens.max_delegation_depth} actors`,
      );
    }
    const rateLimit = tighterRateLimit(approval.rate_limit, resource.rate_limit);
    const jti = newJti();
    const scope = scopes.join(" ");
    const exp = iat + ttlSeconds;
    const accessToken = await signer().sign({
      iss: config.issuer,
      sub: subject.sub,
      aud: resource.id,
      client_id: clientId,
      scope,
      iat,
      exp,
      jti,
      approval_id: approval.id,
      authorization_details: [agentTaskDetail(approval.id, approval.task)],
      ...(act ? { act } : {}),
      ...(rateLimit ? { rate_limit: rateLimit } : {}),
      ...(dPoP ? { cnf: { jkt: dPoP.thumbprint } } : {}),
    });
    if (accessToken.length > MAX_ACCESS_TOKEN_BYTES) {
      // Before the budget: a token no gateway accepts must not cost the approval a unit.
      throw refusal(
        errors.InvalidGrant,
        "token_too_large",
        `the access token would exceed ${MAX_ACCESS_TOKEN_BYTES} bytes (long scope, subject or delegation chain)`,
      );
    }
    if (dPoP) {
      try {
        await assertDpopNotReplayed(ctx.oidc.provider, ctx, dPoP, clientId);
      } catch (error) {
        if (!(error instanceof errors.InvalidGrant)) throw error;
        throw refusal(errors.InvalidGrant, "dpop_proof_replayed", "the DPoP proof was already used");
      }
    }

    const taken = await store.issue({
      record: {
        jti,
        approvalId: approval.id,
        clientId,
        sub: subject.sub,
        aud: resource.id,
        scope,
        jkt: dPoP?.thumbprint ?? null,
        iat: new Date(iat * 1000),
        exp: new Date(exp * 1000),
        terms: approval,
      },
      auditDetail: { jti, sub: subject.sub, aud: resource.id, scope, exp, ...(act ? { act: act.sub } : {}) },
      limits,
    });
    if (!taken.ok && "limitedUntil" in taken) {
      throw rateLimited(ctx, retryAfterSeconds(taken.limitedUntil - Date.now()));
    }
    if (!taken.ok && "busy" in taken) {
      ctx.set("Retry-After", "1");
      throw unavailable(
        "issuance_busy",
        "too many of this agent's token requests are in flight, retry shortly",
      );
    }
    if (!taken.ok) {
      approvals?.forget(approval.id);
      assertApprovalUsable(taken.approval, clientId);
      if (taken.approval && sameTerms(taken.approval, approval)) {
        throw refusal(errors.InvalidGrant, "approval_used_up", "the approval's token budget is used up");
      }
      // Still usable but not on the terms this token was decided on: decide again on the new terms.
      throw unavailable("approval_changed", "the approval changed during the exchange, retry");
    }

    ctx.body = {
      access_token: accessToken,
      issued_token_type: TOKEN_TYPE.accessToken,
      token_type: dPoP ? "DPoP" : "Bearer",
      expires_in: ttlSeconds,
      scope,
    };
  }

  return {
    grantType: TOKEN_EXCHANGE_GRANT,
    parameters: [...TOKEN_EXCHANGE_PARAMETERS],
    allowedDuplicateParameters: ["resource", "audience"],
    async handler(ctx) {
      const clientId = ctx.oidc.client.clientId;
      try {
        await exchange(ctx);
        metrics.tokenRequests.inc({ grant_type: "token_exchange", error: "none" });
      } catch (caught) {
        const error =
          !isRefusal(caught) && isDatabaseUnavailable(caught) ? unavailable("database_unavailable") : caught;
        if (!(error instanceof errors.OIDCProviderError)) {
          logger.error({ err: error }, "token exchange failed");
          metrics.tokenRequests.inc({ grant_type: "token_exchange", error: "server_error" });
          throw error;
        }
        // Refusals from oidc-provider's own checks (e.g. DPoP) carry no reason: their error code is it.
        const reason = isRefusal(error) ? error.reason : error.error;
        metrics.tokenRequests.inc({ grant_type: "token_exchange", error: error.error });
        logger.info({ client_id: clientId, reason, error: error.error }, "token exchange refused");
        if (reason !== "database_unavailable") {
          const approvalId = safeApprovalId(ctx.oidc.params as Record<string, unknown>);
          await recordAudit(db, {
            event: "token_exchange",
            outcome: "refused",
            reason,
            approval_id: approvalId,
            client_id: clientId,
            actor: clientId,
            detail: { error: error.error, description: error.error_description ?? null },
          }).catch((auditError: unknown) =>
            logger.warn({ err: { message: (auditError as Error).message } }, "audit write failed"),
          );
        }
        throw error;
      }
    },
  };
}

/** The 429 `slow_down` refusal, with `Retry-After`. */
function rateLimited(ctx: TokenEndpointGrantContext, retryAfterSeconds: number): Error {
  ctx.set("Retry-After", String(retryAfterSeconds));
  const error = refusal(
    errors.SlowDown,
    "rate_limited",
    "too many token requests; retry after the indicated delay",
  );
  Object.assign(error, { status: 429, statusCode: 429 });
  return error;
}

/** Whether two reads of an approval carry the same terms (what a token is decided on). */
function sameTerms(a: Approval, b: Approval): boolean {
  return (
    a.resource === b.resource &&
    a.scope === b.scope &&
    a.subject === b.subject &&
    a.expires_at.getTime() === b.expires_at.getTime() &&
    JSON.stringify(a.rate_limit) === JSON.stringify(b.rate_limit)
  );
}

/** The approval id of a refused request, for the audit row, when it parses. */
function safeApprovalId(params: Record<string, unknown>): string | null {
  try {
    return parseTokenExchangeRequest(params).approvalId;
  } catch {
    return null;
  }
}
