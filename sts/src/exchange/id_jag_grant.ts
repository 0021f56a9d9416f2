import type { TokenEndpointGrantContext } from "oidc-provider";
import type { ResourceConfig } from "../config/schema.js";
import { CLOCK_TOLERANCE_SECONDS } from "../identity/trusted_issuers.js";
import type { ClientCredentialsLimiter } from "../limits/client_credentials_limiter.js";
import { parseScope } from "../oauth/scope.js";
import { JWT_BEARER_GRANT } from "../oidc/clients.js";
import { validateDpopProof } from "../oidc/dpop.js";
import type { GrantRegistration } from "../oidc/provider.js";
import { isRefusal, refuse } from "../oidc/refusal.js";
import type { StsServices } from "../services.js";
import type { AssertionReplayStore } from "./assertion_replay.js";
import { refused } from "./grant.js";
import { type IdJag, verifyIdJag } from "./id_jag_assertion.js";
import { type Minter, mintStanding, rateLimited } from "./mint.js";
import { requestedResourceScopes } from "./rules.js";
import { answerStanding } from "./standing_answer.js";
import type { StandingRequests } from "./standing_requests.js";

/** The token endpoint parameters of this grant (registered with oidc-provider). */
export const JWT_BEARER_PARAMETERS = ["assertion", "scope", "resource"] as const;

/** What the ID-JAG grant needs, handed over by the composition root (app.ts). */
export interface IdJagGrantDependencies
  extends Pick<StsServices, "config" | "db" | "logger" | "trustedIssuers"> {
  /** Finds the approval of a request, or records a pending one. */
  readonly requests: StandingRequests;
  /** The steps shared by every grant that mints under an approval. */
  readonly minter: Minter;
  /** The `jti`s of redeemed assertions. */
  readonly replay: AssertionReplayStore;
  /**
   * `issuance_limits.client_credentials`, the bucket MCP `client_credentials` draws on too: one point per
   * request, before the assertion's signature or any database work, so a client re-presenting a pending
   * ID-JAG in a loop costs neither.
   */
  readonly limiter: ClientCredentialsLimiter | undefined;
}

/** The one `resource` the request names, if any (RFC 8707 §2: it may repeat; this grant takes one). */
function requestedResource(params: Record<string, unknown>): string | undefined {
  const value = params.resource;
  if (value === undefined || value === "") return undefined;
  if (Array.isArray(value)) {
    const distinct = [...new Set(value.map(String))];
    if (distinct.length !== 1) throw refuse("target_invalid", "exactly one resource is allowed");
    return distinct[0];
  }
  return String(value);
}

/**
 * The target: the request's `resource`, which must be one the assertion names when it names any, or
 * else the assertion's one `resource`.
 */
function targetOf(requested: string | undefined, assertion: IdJag): string {
  if (requested !== undefined) {
    if (assertion.resources.length > 0 && !assertion.resources.includes(requested)) {
      throw refuse("id_jag_resource_mismatch", "the assertion does not name the requested resource");
    }
    return requested;
  }
  if (assertion.resources.length === 1) return assertion.resources[0] as string;
  if (assertion.resources.length === 0) {
    throw refuse("target_invalid", "name the resource: neither the request nor the assertion does");
  }
  throw refuse(
    "id_jag_resource_mismatch",
    "the assertion names several resources: name one of them in the request's resource parameter",
  );
}

/**
 * The scopes asked for: the request's `scope`, within the assertion's `scope` when it has one (RFC 6749
 * §3.3: the IdP granted no more); else the assertion's; else the resource's `default_scopes`.
 */
function scopesOf(params: Record<string, unknown>, assertion: IdJag, resource: ResourceConfig): string[] {
  const requested = typeof params.scope === "string" ? parseScope(params.scope) : [];
  if (requested.length > 0 && assertion.scopes !== undefined) {
    const granted = new Set(assertion.scopes);
    const outside = requested.filter((scope) => !granted.has(scope));
    if (outside.length > 0) {
      throw refuse("id_jag_scope_exceeded", `scope not within the assertion's scope: ${outside.join(" ")}`);
    }
  }
  return requestedResourceScopes(requested.length > 0 ? requested : (assertion.scopes ?? []), resource);
}

/**
 * The RFC 7523 `jwt-bearer` grant redeeming an Identity Assertion JWT Authorization Grant (ID-JAG,
 * draft-ietf-oauth-identity-assertion-authz-grant; MCP enterprise-managed authorization). The token is
 * for the user the IdP asserts (`sub`, from `iss`), acting through the authenticated client, and is
 * issued only under an approved approval of that client for the resource and scopes whose subject is
 * that (issuer, sub). In order:
 *
 * 0. the client's `issuance_limits.client_credentials` bucket (before any signature or database work);
 * 1. the `assertion` parameter (one, at most 16 KiB);
 * 2. the assertion (id_jag_assertion.ts): `typ`, trusted `id_jag` issuer, signature, `aud` = this
 *    STS's issuer, lifetime, `jti`, `client_id` = the authenticated client;
 * 3. the resource (the request's and/or the assertion's, configured) and scopes (rules.ts);
 * 4. the DPoP proof, if any;
 * 5. the approval (standing_requests.ts): approved → mint; pending → `authorization_pending` naming it;
 *    denied or revoked within `mcp.request_cooldown_seconds` → `access_denied`; none → one is recorded
 *    for a human (within `approvals.max_pending_per_agent`) and the answer is `authorization_pending`;
 * 6. the assertion's `jti` is spent (once per (iss, jti), shared by every instance; until the
 *    assertion expires), then lifetime and the steps every minting grant shares (mint.ts). A refusal
 *    there gives the `jti` back, so only an issued token spends an assertion.
 *
 * No refresh token is issued (the draft's §4.4.2: the client presents a new ID-JAG). Client
 * authentication and the client's allowed grant types are oidc-provider's, checked before this runs.
 */
export function idJagGrant(deps: IdJagGrantDependencies): GrantRegistration {
  const { config, trustedIssuers, requests, minter, replay, logger, limiter } = deps;
  const resources = new Map<string, ResourceConfig>(
    config.resources.map((resource) => [resource.id, resource]),
  );

  async function redeem(ctx: TokenEndpointGrantContext): Promise<void> {
    const clientId = ctx.oidc.client.clientId;
    if (limiter) {
      const limit = await limiter.consume(clientId);
      if (!limit.allowed) throw rateLimited(ctx, limit.retryAfterSeconds);
    }
    const params = ctx.oidc.params as Record<string, unknown>;
    const raw = params.assertion;
    if (raw === undefined || raw === "") {
      throw refuse("parameter_missing", "missing required parameter 'assertion'");
    }
    if (typeof raw !== "string") throw refuse("parameter_repeated", "assertion must be given once");
    const assertion = await verifyIdJag(trustedIssuers, raw, clientId);

    const target = targetOf(requestedResource(params), assertion);
    const resource = resources.get(target);
    if (!resource) throw refuse("resource_unknown", "the requested resource is not configured");
    const scopes = scopesOf(params, assertion, resource);
    const dPoP = await validateDpopProof(ctx.oidc.provider, ctx);

    const scope = scopes.join(" ");
    const outcome = await requests.resolve(
      {
        clientId,
        resource: resource.id,
        scopes,
        subject: { sub: assertion.subject, issuer: assertion.issuer },
      },
      `MCP client ${clientId} asks for a token for user ${assertion.subject} of ${assertion.issuer} (enterprise-managed authorization, ID-JAG) for ${resource.id} with scope ${scope}.`,
    );
    const { approval, scopes: granted } = answerStanding(outcome, ctx);

    // RFC 7523 §3 item 7: one token per assertion. Kept while the verifier would still accept it.
    if (!(await replay.spend(assertion.issuer, assertion.jti, assertion.exp + CLOCK_TOLERANCE_SECONDS))) {
      throw refuse("id_jag_replayed", "a token was already issued for this assertion (jti)");
    }
    try {
      ctx.body = await mintStanding(minter, config.tokens, {
        ctx,
        clientId,
        approval,
        resource,
        scopes: granted,
        subject: { sub: assertion.subject, issuer: assertion.issuer, issuedAt: assertion.iat },
        dPoP,
      });
    } catch (error) {
      // A refusal happens before the token is recorded: the assertion stays usable. Anything else
      // (e.g. the database failing mid-way) leaves it spent: fail closed.
      if (isRefusal(error)) {
        await replay
          .release(assertion.issuer, assertion.jti)
          .catch((releaseError: unknown) =>
            logger.warn({ err: { message: (releaseError as Error).message } }, "assertion release failed"),
          );
      }
      throw error;
    }
  }

  return {
    grantType: JWT_BEARER_GRANT,
    parameters: [...JWT_BEARER_PARAMETERS],
    allowedDuplicateParameters: ["resource"],
    async handler(ctx) {
      try {
        await redeem(ctx);
      } catch (caught) {
        throw await refused(ctx, caught, deps, "jwt_bearer");
      }
    },
  };
}
