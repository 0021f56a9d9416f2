import type { Kysely } from "kysely";
import Provider, {
  type Configuration,
  errors,
  type KoaContextWithOIDC,
  type ResourceServer,
  type TokenEndpointGrantContext,
} from "oidc-provider";
import type { Config } from "../config/load.js";
import type { Database } from "../db/schema.js";
import type { SigningKeyMaterial } from "../keys/signing_keys.js";
import type { Logger } from "../ops/logger.js";
import type { Metrics } from "../ops/metrics.js";
import { observeTokenEndpoint } from "../ops/token_endpoint.js";
import { PostgresAdapter } from "./adapter.js";
import { builtInClientCredentials } from "./builtin_client_credentials.js";
import { JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT, toClientMetadata } from "./clients.js";
import { errorMembersOf } from "./refusal.js";

/** The token endpoint's path (oidc-provider's default route). */
export const TOKEN_ENDPOINT_PATH = "/token";

/** The scope of the approval API's own credential. */
export const APPROVALS_SCOPE = "approvals:request";

/** The approval API's resource indicator: `<issuer>/approvals`. */
export function approvalsResource(issuer: string): string {
  return `${issuer}/approvals`;
}

/**
 * The per-agent issuance limit of oidc-provider's built-in `client_credentials` grant, as the provider
 * calls it. Declared here, implemented by `limits/client_credentials_limiter.ts` (which builds its
 * refusals from `refusal.ts`: the limits depend on oidc, not the other way).
 */
export interface ClientCredentialsLimit {
  /**
   * Takes one point from `clientId`'s window: admitted, or refused with the seconds to wait.
   * @throws a 503 `temporarily_unavailable` refusal when the counter store fails (fail closed).
   */
  consume(clientId: string): Promise<{ allowed: true } | { allowed: false; retryAfterSeconds: number }>;
}

/** What {@link createProvider} needs. */
export interface ProviderDependencies {
  config: Config;
  db: Kysely<Database>;
  keys: readonly SigningKeyMaterial[];
  logger: Logger;
  /** Where the token endpoint's outcomes are counted (`countersign_token_requests_total`). */
  metrics: Metrics;
  /** Key for oidc-provider's cookie signing (derived from the key-encryption key). */
  cookieSecret: Buffer;
  /** Extension grants to register (e.g. RFC 8693 token exchange). */
  grants?: readonly GrantRegistration[];
  /** The per-agent issuance limit of the `client_credentials` grant. None: unlimited. */
  clientCredentialsLimiter?: ClientCredentialsLimit;
  /**
   * `client_credentials` for the resources it handles (MCP servers that opted in). Every other
   * `client_credentials` request stays oidc-provider's built-in grant (the approval API credential).
   */
  clientCredentialsForResources?: ResourceGrant;
}

/** A grant for the token requests whose `resource` it handles. */
export interface ResourceGrant {
  /** Whether a request with this `resource` parameter (a string, or an array when repeated) is its. */
  readonly handles: (resource: unknown) => boolean;
  readonly handler: (ctx: TokenEndpointGrantContext) => Promise<void>;
}

/** An extension grant: one file per grant exports these (STYLE §1). */
export interface GrantRegistration {
  readonly grantType: string;
  readonly handler: (ctx: TokenEndpointGrantContext) => Promise<void>;
  readonly parameters: readonly string[];
  /** Parameters that may repeat (RFC 8693 allows several `resource`/`audience`; we then refuse them). */
  readonly allowedDuplicateParameters?: readonly string[];
}

/**
 * Builds panva's oidc-provider for Countersign: clients from the config file, a Postgres adapter,
 * the signing keys from the database, and the `client_credentials` grant issuing RFC 9068 JWT access
 * tokens for the approval API only. Other grants are registered on the returned provider.
 */
export function createProvider({
  config,
  db,
  keys,
  logger,
  metrics,
  cookieSecret,
  grants = [],
  clientCredentialsLimiter,
  clientCredentialsForResources,
}: ProviderDependencies): Provider {
  const current = keys.find((key) => key.status === "current" && key.alg === config.tokens.signing_alg);
  if (!current) throw new Error(`no current ${config.tokens.signing_alg} signing key`);
  const approvals = approvalsResource(config.issuer);

  const approvalsServer: ResourceServer = {
    audience: approvals,
    scope: APPROVALS_SCOPE,
    accessTokenTTL: config.tokens.default_ttl_seconds,
    accessTokenFormat: "jwt",
    jwt: { sign: { alg: current.alg as "ES256", kid: current.kid } },
  };

  const configuration: Configuration = {
    adapter: (model: string) => new PostgresAdapter(db, model),
    clients: config.clients.map((client) =>
      toClientMetadata(client, ["client_credentials", ...grants.map((grant) => grant.grantType)]),
    ),
    jwks: { keys: keys.map((key) => key.privateJwk) } as Configuration["jwks"],
    clientAuthMethods: ["client_secret_basic", "client_secret_post", "private_key_jwt"],
    responseTypes: [],
    clientDefaults: {
      id_token_signed_response_alg: current.alg as "ES256",
      grant_types: ["client_credentials"],
      response_types: [],
    },
    scopes: [APPROVALS_SCOPE],
    claims: {},
    cookies: {
      keys: [cookieSecret.toString("base64url")],
    },
    features: {
      devInteractions: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      userinfo: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // RFC 8707: client_credentials without `resource` targets the approval API (docs/reference.md#agent-credentials-client_credentials).
        defaultResource: (ctx: KoaContextWithOIDC) => {
          const params = ctx.oidc.params ?? {};
          if (params.grant_type === "client_credentials") return approvals;
          if (params.grant_type === TOKEN_EXCHANGE_GRANT) {
            // RFC 8693 §2.1: `audience` names the target as well as `resource` does.
            if (typeof params.audience === "string" && params.audience) return params.audience;
            throw new errors.InvalidTarget("exactly one resource or audience is required");
          }
          return undefined;
        },
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx: KoaContextWithOIDC, resourceIndicator: string) => {
          // Agents never obtain tokens for an API by client_credentials: only through an approval.
          if (resourceIndicator === approvals && ctx.oidc.params?.grant_type === "client_credentials") {
            return approvalsServer;
          }
          throw new errors.InvalidTarget("the resource is not available through this grant");
        },
      },
    },
    enabledJWA: {
      clientAuthSigningAlgValues: ["ES256", "ES384", "PS256", "RS256", "EdDSA"],
    },
    ttl: {
      ClientCredentials: config.tokens.default_ttl_seconds,
    },
    // Called once per token, just before it is signed: after client authentication and every check of
    // the request, so the limit counts tokens an authenticated agent would get, and nobody else can
    // spend its bucket. oidc-provider has no earlier hook inside its built-in client_credentials grant.
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== "ClientCredentials" || !clientCredentialsLimiter) return undefined;
      const clientId = token.clientId as string;
      const limit = await clientCredentialsLimiter.consume(clientId);
      if (limit.allowed) return undefined;
      logger.info(
        { client_id: clientId, grant_type: "client_credentials", reason: "rate_limited", error: "slow_down" },
        "client_credentials refused",
      );
      // The same 429 the token exchange answers (RFC 9110 §10.2.3 Retry-After, in seconds).
      ctx.set("Retry-After", String(limit.retryAfterSeconds));
      throw Object.assign(new errors.SlowDown("too many token requests; retry after the indicated delay"), {
        error_description: "too many token requests; retry after the indicated delay",
        status: 429,
        statusCode: 429,
      });
    },
    // No client is a browser application (agents hold secrets or private keys), so no origin may
    // call the token endpoint cross-site: a request with an Origin header is refused for every client.
    clientBasedCORS: () => false,
    renderError: (ctx, out) => {
      ctx.type = "json";
      ctx.body = out;
    },
  };

  const provider = new Provider(config.issuer, configuration);
  // Every POST /token: counted once, traced, a failed client authentication logged.
  observeTokenEndpoint(provider, {
    metrics,
    logger,
    path: TOKEN_ENDPOINT_PATH,
    grantTypes: new Map([
      ["client_credentials", "client_credentials"],
      [TOKEN_EXCHANGE_GRANT, "token_exchange"],
      [JWT_BEARER_GRANT, "jwt_bearer"],
    ]),
    trustIncomingContext: config.tracing.trust_incoming_context,
  });
  for (const grant of grants) {
    provider.registerGrantType(
      grant.grantType,
      grant.handler,
      [...grant.parameters],
      grant.allowedDuplicateParameters ? [...grant.allowedDuplicateParameters] : undefined,
    );
  }
  if (clientCredentialsForResources) {
    // oidc-provider registers its built-in grants in the constructor, only for names without a handler
    // yet; registerGrantType() replaces a handler. Client authentication, the allowed-grant-type and
    // repeated-parameter checks run before any handler, so they stay oidc-provider's for both paths.
    const builtIn = builtInClientCredentials(provider);
    provider.registerGrantType(
      "client_credentials",
      (ctx: TokenEndpointGrantContext) =>
        clientCredentialsForResources.handles(ctx.oidc.params?.resource)
          ? clientCredentialsForResources.handler(ctx)
          : builtIn(ctx),
      ["scope", "resource"],
      ["resource"],
    );
  }
  // oidc-provider answers a /token preflight, and a request whose client it could not load, with
  // Access-Control-Allow-Origin echoing the Origin (or `*`) before clientBasedCORS is consulted. The
  // token endpoint answers no CORS headers at all; discovery and /jwks stay readable cross-origin.
  provider.use(async (ctx, next) => {
    try {
      await next();
      // Members oidc-provider does not render (e.g. `approval_id` of authorization_pending).
      const members = errorMembersOf(ctx);
      if (members && ctx.path === TOKEN_ENDPOINT_PATH && ctx.status >= 400 && isErrorBody(ctx.body)) {
        ctx.body = { ...ctx.body, ...members };
      }
    } finally {
      if (ctx.path === TOKEN_ENDPOINT_PATH) {
        for (const header of Object.keys(ctx.response.headers)) {
          if (header.toLowerCase().startsWith("access-control-")) ctx.remove(header);
        }
      }
    }
  });
  provider.on("server_error", (_ctx, error) => {
    logger.error({ err: { name: error.name, message: error.message } }, "oidc-provider server error");
  });
  return provider;
}

/** An OAuth error answer: a JSON object with an `error` member. */
function isErrorBody(body: unknown): body is Record<string, unknown> {
  return typeof body === "object" && body !== null && typeof (body as { error?: unknown }).error === "string";
}
