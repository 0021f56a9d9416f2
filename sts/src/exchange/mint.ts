import type { TokenEndpointGrantContext } from "oidc-provider";
import { errors } from "oidc-provider";
import type { Config } from "../config/load.js";
import type { ResourceConfig } from "../config/schema.js";
import type { Approval } from "../db/schema.js";
import type { AccessTokenSigner } from "../keys/access_token_signer.js";
import { retryAfterSeconds } from "../limits/issuance_limiter.js";
import { assertDpopNotReplayed, type DpopProof } from "../oidc/dpop.js";
import { refuse } from "../oidc/refusal.js";
import type { ApprovalCache } from "./approval_cache.js";
import type { ExchangeGuards } from "./guards.js";
import type { IssuanceStore } from "./issuance_store.js";
import { newJti } from "./jti.js";
import { TOKEN_TYPE } from "./parameters.js";
import {
  accessTokenClaims,
  chainAct,
  issueRefusal,
  MAX_ACCESS_TOKEN_BYTES,
  tighterRateLimit,
  tokenLifetime,
} from "./rules.js";
import type { ActClaim, SubjectIdentity } from "./token_validators.js";

/** What {@link createMinter} needs: handed over by the composition root. */
export interface MinterDependencies {
  readonly config: Config;
  /** The current signer (it changes with key rotation). */
  readonly signer: () => AccessTokenSigner;
  readonly guards: ExchangeGuards;
  readonly store: IssuanceStore;
  /** Recently read approved approvals; a refused write forgets the approval. */
  readonly approvals: ApprovalCache | undefined;
}

/** A token request every check of its own grant has passed: what remains is shared by all grants. */
export interface MintRequest {
  readonly ctx: TokenEndpointGrantContext;
  readonly clientId: string;
  readonly approval: Approval;
  readonly subject: SubjectIdentity;
  readonly actor: ActClaim | undefined;
  readonly resource: ResourceConfig;
  readonly scopes: readonly string[];
  readonly ttlSeconds: number;
  /** When the request was decided, epoch ms: `iat` and the policy's clock. */
  readonly nowMs: number;
  readonly dPoP: DpopProof | undefined;
}

/** The token response (RFC 8693 §2.2.1). */
export interface TokenResponse {
  access_token: string;
  issued_token_type: string;
  token_type: "Bearer" | "DPoP";
  expires_in: number;
  scope: string;
}

/**
 * The steps every grant that mints under an approval shares, in order: policy → issuance limits →
 * delegation chain → claims → sign → size → DPoP replay → budget (with the `issued_tokens` and audit
 * rows, atomically) → the answer. Each refusal is a reason of sts/src/reasons.ts.
 */
export interface Minter {
  mint(request: MintRequest): Promise<TokenResponse>;
}

/**
 * A token request of a grant whose approval stands on its own (MCP `client_credentials`, ID-JAG): no
 * actor and no chained token, so nothing to narrow.
 */
export interface StandingMintRequest {
  readonly ctx: TokenEndpointGrantContext;
  readonly clientId: string;
  readonly approval: Approval;
  readonly resource: ResourceConfig;
  readonly scopes: readonly string[];
  /** Whom the token is about, and when that identity was asserted (epoch seconds), if known. */
  readonly subject: { readonly sub: string; readonly issuer: string; readonly issuedAt: number | undefined };
  readonly dPoP: DpopProof | undefined;
}

/**
 * Mints under a standing approval: the lifetime (the resource's cap, the configured default and cap,
 * the approval's expiry), then the shared steps; answers without `issued_token_type`, which only a
 * token exchange's response carries (RFC 8693 §2.2.1).
 */
export async function mintStanding(
  minter: Minter,
  tokens: Config["tokens"],
  request: StandingMintRequest,
): Promise<Omit<TokenResponse, "issued_token_type">> {
  const { resource, approval, subject } = request;
  const nowMs = Date.now();
  const ttlSeconds = tokenLifetime({
    resourceMaxTtlSeconds: resource.max_ttl_seconds,
    defaultTtlSeconds: tokens.default_ttl_seconds,
    maxTtlSeconds: tokens.max_ttl_seconds,
    approvalExpiresAt: approval.expires_at,
    boundsExp: undefined,
    nowMs,
  });
  const { issued_token_type: _issuedTokenType, ...body } = await minter.mint({
    ...request,
    subject: { ...subject, act: undefined, bounds: undefined },
    actor: undefined,
    ttlSeconds,
    nowMs,
  });
  return body;
}

/** Builds the shared minting steps. */
export function createMinter({ config, signer, guards, store, approvals }: MinterDependencies): Minter {
  /** Policy-as-code decides every token (Cedar `Action::"exchange"`). */
  async function authorize(request: MintRequest): Promise<void> {
    if (!guards.policy) return;
    const decision = await guards.policy.authorizeExchange({
      clientId: request.clientId,
      subject: request.subject,
      actor: request.actor,
      approval: request.approval,
      resource: request.resource.id,
      scopes: request.scopes,
      ttlSeconds: request.ttlSeconds,
      now: new Date(request.nowMs),
    });
    if (!decision.allowed) {
      throw refuse("policy_denied", `forbidden by policy ${decision.policyId}: ${decision.reason}`);
    }
  }

  /**
   * Issuance limits. On real Postgres the counters are taken in the budget's own database call (one
   * round trip for both), so this only prepares them; otherwise they are taken now.
   */
  async function prepareLimits(request: MintRequest) {
    const { limiter } = guards;
    if (!limiter) return undefined;
    const take = limiter.prepareTake?.(request.clientId, request.approval.id);
    if (take !== undefined) return take;
    const limit = await limiter.consume(request.clientId, request.approval.id);
    if (!limit.allowed) throw rateLimited(request.ctx, limit.retryAfterSeconds);
    return undefined;
  }

  return {
    async mint(request) {
      const { ctx, clientId, approval, subject, resource, scopes, ttlSeconds, dPoP } = request;
      await authorize(request);
      const limits = await prepareLimits(request);
      const act = chainAct(request.actor, subject.act, config.tokens.max_delegation_depth);
      const iat = Math.floor(request.nowMs / 1000);
      const jti = newJti();
      const claims = accessTokenClaims({
        issuer: config.issuer,
        subject: subject.sub,
        resource: resource.id,
        clientId,
        scopes,
        iat,
        ttlSeconds,
        jti,
        approval,
        act,
        rateLimit: tighterRateLimit(approval.rate_limit, resource.rate_limit),
        jkt: dPoP?.thumbprint,
      });
      const accessToken = await signer().sign(claims);
      if (accessToken.length > MAX_ACCESS_TOKEN_BYTES) {
        throw refuse(
          "token_too_large",
          `the access token would exceed ${MAX_ACCESS_TOKEN_BYTES} bytes (long scope, subject or delegation chain)`,
        );
      }
      if (dPoP) {
        try {
          await assertDpopNotReplayed(ctx.oidc.provider, ctx, dPoP, clientId);
        } catch (error) {
          if (!(error instanceof errors.InvalidGrant)) throw error;
          throw refuse("dpop_proof_replayed", "the DPoP proof was already used");
        }
      }

      const scope = scopes.join(" ");
      const exp = iat + ttlSeconds;
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
        auditDetail: {
          jti,
          sub: subject.sub,
          aud: resource.id,
          scope,
          exp,
          ...(act ? { act: act.sub } : {}),
        },
        limits,
      });
      if (!taken.ok) {
        if ("limitedUntil" in taken)
          throw rateLimited(ctx, retryAfterSeconds(taken.limitedUntil - Date.now()));
        if ("busy" in taken) {
          ctx.set("Retry-After", "1");
          throw refuse(
            "issuance_busy",
            "too many of this agent's token requests are in flight, retry shortly",
          );
        }
        approvals?.forget(approval.id);
        throw issueRefusal(taken.refused);
      }
      return {
        access_token: accessToken,
        issued_token_type: TOKEN_TYPE.accessToken,
        token_type: dPoP ? "DPoP" : "Bearer",
        expires_in: ttlSeconds,
        scope,
      };
    },
  };
}

/** The 429 `slow_down` refusal, with `Retry-After`. */
export function rateLimited(ctx: TokenEndpointGrantContext, retryAfter: number): Error {
  ctx.set("Retry-After", String(retryAfter));
  return refuse("rate_limited", "too many token requests; retry after the indicated delay");
}
