import type { TokenEndpointGrantContext } from "oidc-provider";
import type { ResourceConfig } from "../config/schema.js";
import type { ClientCredentialsLimiter } from "../limits/client_credentials_limiter.js";
import { parseScope } from "../oauth/scope.js";
import { validateDpopProof } from "../oidc/dpop.js";
import type { ResourceGrant } from "../oidc/provider.js";
import type { StsServices } from "../services.js";
import { refused } from "./grant.js";
import { type Minter, mintStanding, rateLimited } from "./mint.js";
import { requestedResourceScopes } from "./rules.js";
import { answerStanding } from "./standing_answer.js";
import type { StandingRequests } from "./standing_requests.js";

/** What the MCP `client_credentials` grant needs, handed over by the composition root (app.ts). */
export interface McpClientCredentialsDependencies extends Pick<StsServices, "config" | "db" | "logger"> {
  /** Finds the approval of a request, or records a pending one. */
  readonly requests: StandingRequests;
  /** The steps shared by every grant that mints under an approval. */
  readonly minter: Minter;
  /** `issuance_limits.client_credentials`: one point per request, before any database work. */
  readonly limiter: ClientCredentialsLimiter | undefined;
}

/**
 * `client_credentials` with `resource` naming an MCP server that opted in (`"client_credentials": true`;
 * the MCP OAuth client credentials extension, SEP-1046). The token is for the client itself (`sub` =
 * `client_id`) and is issued only under an approved approval of that client for the resource and
 * scopes with no subject. In order:
 *
 * 1. the client's `client_credentials` issuance limit (so a looping client costs no database work);
 * 2. the scopes: those named, or the resource's `default_scopes` (rules.ts);
 * 3. the DPoP proof, if any;
 * 4. the approval (standing_requests.ts): approved → mint; pending → `authorization_pending` naming it;
 *    denied or revoked within `mcp.request_cooldown_seconds` → `access_denied`; none → one is recorded
 *    for a human and the answer is `authorization_pending` naming it;
 * 5. lifetime, then the steps every minting grant shares (mint.ts).
 *
 * Client authentication, the client's allowed grant types and repeated parameters are oidc-provider's,
 * checked before this runs. Other `client_credentials` requests stay oidc-provider's own grant.
 */
export function mcpClientCredentialsGrant(deps: McpClientCredentialsDependencies): ResourceGrant {
  const { config, requests, minter, limiter } = deps;
  const resources = new Map<string, ResourceConfig>(
    config.resources
      .filter((resource) => resource.client_credentials === true)
      .map((resource) => [resource.id, resource]),
  );

  async function issue(ctx: TokenEndpointGrantContext, resource: ResourceConfig): Promise<void> {
    const clientId = ctx.oidc.client.clientId;
    if (limiter) {
      const limit = await limiter.consume(clientId);
      if (!limit.allowed) throw rateLimited(ctx, limit.retryAfterSeconds);
    }
    const params = ctx.oidc.params as Record<string, unknown>;
    const scopes = requestedResourceScopes(
      typeof params.scope === "string" ? parseScope(params.scope) : [],
      resource,
    );
    const dPoP = await validateDpopProof(ctx.oidc.provider, ctx);
    const scope = scopes.join(" ");
    const outcome = await requests.resolve(
      { clientId, resource: resource.id, scopes, subject: null },
      `MCP client ${clientId} asks for a token of its own (client_credentials, no user) for ${resource.id} with scope ${scope}.`,
    );
    const { approval, scopes: granted } = answerStanding(outcome, ctx);
    ctx.body = await mintStanding(minter, config.tokens, {
      ctx,
      clientId,
      approval,
      resource,
      scopes: granted,
      subject: { sub: clientId, issuer: config.issuer, issuedAt: undefined },
      dPoP,
    });
  }

  return {
    handles: (resource) => typeof resource === "string" && resources.has(resource),
    async handler(ctx) {
      const resource = resources.get(String((ctx.oidc.params as Record<string, unknown>).resource));
      try {
        if (!resource) throw new TypeError("client_credentials: not an MCP resource");
        // Counted, like every token request, once from oidc-provider's events (ops/token_endpoint.ts).
        await issue(ctx, resource);
      } catch (caught) {
        throw await refused(ctx, caught, deps, "client_credentials");
      }
    },
  };
}
