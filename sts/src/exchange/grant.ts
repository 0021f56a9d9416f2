import { errors, type TokenEndpointGrantContext } from "oidc-provider";
import { recordRefusal } from "../audit/refusals.js";
import type { ResourceConfig } from "../config/schema.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { Approval } from "../db/schema.js";
import { TOKEN_EXCHANGE_GRANT } from "../oidc/clients.js";
import { validateDpopProof } from "../oidc/dpop.js";
import type { GrantRegistration } from "../oidc/provider.js";
import { isRefusal, refuse, setErrorMembers, unavailable } from "../oidc/refusal.js";
import type { StsServices } from "../services.js";
import type { ApprovalCache } from "./approval_cache.js";
import { assertApprovalUsable } from "./approval_checks.js";
import type { IssuanceStore } from "./issuance_store.js";
import type { Minter } from "./mint.js";
import { parseTokenExchangeRequest, TOKEN_EXCHANGE_PARAMETERS } from "./parameters.js";
import {
  assertApprovedResource,
  assertNarrowing,
  assertSubjectBinding,
  grantedScopes,
  tokenLifetime,
} from "./rules.js";
import { validateActorToken, validateSubjectToken } from "./token_validators.js";
import type { VerifiedTokenCache } from "./verified_token_cache.js";

/** What the token exchange grant needs, handed over by the composition root (app.ts). */
export interface TokenExchangeGrantDependencies
  extends Pick<StsServices, "config" | "db" | "logger" | "trustedIssuers" | "ownTokens"> {
  /** Where approvals are read and budgets taken. */
  readonly store: IssuanceStore;
  /** Recently read approved approvals (absent when a policy reads the live budget). */
  readonly approvals: ApprovalCache | undefined;
  /** Recently verified subject and actor tokens. */
  readonly verifiedTokens: VerifiedTokenCache;
  /** The steps shared by every grant that mints under an approval. */
  readonly minter: Minter;
}

/**
 * The RFC 8693 token exchange grant. Its handler reads as the order of checks in docs/reference.md:
 *
 * 1. the request's shape (parameters.ts) and its one target resource;
 * 2. the DPoP proof, if any (RFC 9449 §5: it binds the new token);
 * 3. the subject token, then the actor token (token_validators.ts);
 * 4. the approval: usable by this client, for this resource, bound to this subject;
 * 5. a chained subject token may only narrow (rules.ts);
 * 6. scopes and lifetime (rules.ts);
 * 7. the steps every minting grant shares (mint.ts): policy, limits, `act`, claims, signature, budget.
 *
 * It holds no crypto and no SQL. Every refusal carries a reason of sts/src/reasons.ts and is audited.
 */
export function tokenExchangeGrant(deps: TokenExchangeGrantDependencies): GrantRegistration {
  const { config, db, logger, store, approvals, verifiedTokens, minter } = deps;
  const resources = new Map<string, ResourceConfig>(
    config.resources.map((resource) => [resource.id, resource]),
  );
  const readApproval = (id: string): Promise<Approval | undefined> =>
    approvals ? approvals.get(id, () => store.findApproval(id)) : store.findApproval(id);

  function targetResource(target: string): ResourceConfig {
    const resource = resources.get(target);
    if (!resource) throw refuse("resource_unknown", "the requested resource is not configured");
    return resource;
  }

  async function exchange(ctx: TokenEndpointGrantContext): Promise<void> {
    const clientId = ctx.oidc.client.clientId;
    const request = parseTokenExchangeRequest(ctx.oidc.params as Record<string, unknown>);
    const resource = targetResource(request.target);
    const dPoP = await validateDpopProof(ctx.oidc.provider, ctx);
    const subject = await validateSubjectToken(
      deps,
      request.subjectToken,
      request.subjectTokenType,
      verifiedTokens,
    );
    const actor = request.actorToken
      ? await validateActorToken(deps, request.actorToken, verifiedTokens)
      : undefined;

    const approval = assertApprovalUsable(await readApproval(request.approvalId), clientId);
    assertApprovedResource(approval, resource.id);
    assertSubjectBinding(approval, subject);
    assertNarrowing(subject.bounds, {
      approvalId: approval.id,
      clientId,
      resourceId: resource.id,
      dpopThumbprint: dPoP?.thumbprint,
    });

    const nowMs = Date.now();
    const scopes = grantedScopes({
      approvalScope: approval.scope,
      resourceScopes: resource.scopes,
      bounds: subject.bounds,
      requested: request.scopes,
    });
    const ttlSeconds = tokenLifetime({
      resourceMaxTtlSeconds: resource.max_ttl_seconds,
      defaultTtlSeconds: config.tokens.default_ttl_seconds,
      maxTtlSeconds: config.tokens.max_ttl_seconds,
      approvalExpiresAt: approval.expires_at,
      boundsExp: subject.bounds?.exp,
      nowMs,
    });
    ctx.body = await minter.mint({
      ctx,
      clientId,
      approval,
      subject,
      actor,
      resource,
      scopes,
      ttlSeconds,
      nowMs,
      dPoP,
    });
  }

  return {
    grantType: TOKEN_EXCHANGE_GRANT,
    parameters: [...TOKEN_EXCHANGE_PARAMETERS],
    allowedDuplicateParameters: ["resource", "audience"],
    async handler(ctx) {
      try {
        await exchange(ctx);
      } catch (caught) {
        throw await refused(ctx, caught, { config, db, logger });
      }
    },
  };
}

/**
 * Accounts for a refused token request: a database fault becomes 503 (fail closed); every refusal is
 * logged with its reason and (unless the database is what failed) audited — counted in one row per
 * (client, reason, approval) and window ({@link recordRefusal}), under the named approval only when it
 * is the caller's own, with a bounded detail. Returns the error to throw. Errors that are no refusal at
 * all are logged as failures and passed on. Counting is not done here: every token request is counted
 * once, from oidc-provider's events (ops/token_endpoint.ts).
 */
export async function refused(
  ctx: TokenEndpointGrantContext,
  caught: unknown,
  { db, logger }: Pick<StsServices, "config" | "db" | "logger">,
  grantType = "token_exchange",
): Promise<unknown> {
  const clientId = ctx.oidc.client?.clientId ?? null;
  const error =
    !isRefusal(caught) && isDatabaseUnavailable(caught) ? unavailable("database_unavailable") : caught;
  if (!(error instanceof errors.OIDCProviderError)) {
    logger.error({ err: error }, `${grantType.replaceAll("_", " ")} failed`);
    return error;
  }
  // Refusals from oidc-provider's own checks (e.g. DPoP) carry no reason of ours: their error code is it.
  const reason = isRefusal(error) ? error.reason : error.error;
  logger.info(
    { client_id: clientId, reason, error: error.error },
    `${grantType.replaceAll("_", " ")} refused`,
  );
  if (reason !== "database_unavailable") {
    await recordRefusal(db, {
      event: grantType,
      reason,
      clientId,
      claimedApprovalId:
        (isRefusal(error) ? error.approvalId : undefined) ??
        safeApprovalId(ctx.oidc.params as Record<string, unknown>),
      detail: { error: error.error, description: error.error_description ?? null },
    }).catch((auditError: unknown) =>
      logger.warn({ err: { message: (auditError as Error).message } }, "audit write failed"),
    );
  }
  if (isRefusal(error) && error.approvalId !== undefined) {
    setErrorMembers(ctx, { approval_id: error.approvalId });
  }
  return error;
}

/** The approval id a refused request named, when it parses (whose it is, the audit write checks). */
function safeApprovalId(params: Record<string, unknown>): string | null {
  try {
    return parseTokenExchangeRequest(params).approvalId;
  } catch {
    return null;
  }
}
