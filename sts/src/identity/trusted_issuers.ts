import {
  createLocalJWKSet,
  type createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import type { TrustedIssuerConfig } from "../config/schema.js";
import { hasControlCharacter, isStorableText } from "../db/text.js";
import type { Logger } from "../ops/logger.js";
import type { DevIssuer } from "./dev_issuer.js";
import { createBoundedRemoteJWKSet } from "./remote_jwks.js";

/** What an identity token is presented as. */
export type TokenUsage = "subject" | "actor" | "approver";

/** Stable reason codes for identity-token refusals. */
export type IdentityTokenReason =
  | "token_malformed"
  | "token_too_large"
  | "issuer_untrusted"
  | "usage_not_allowed"
  | "algorithm_not_allowed"
  | "signature_invalid"
  | "audience_mismatch"
  | "token_expired"
  | "token_not_yet_valid"
  | "claim_missing"
  | "approver_claim_missing"
  | "jwks_unavailable";

/** A refused identity token. `reason` is stable; the message is for humans and never echoes the token. */
export class IdentityTokenError extends Error {
  static readonly code = "ERR_IDENTITY_TOKEN";
  readonly code = IdentityTokenError.code;
  constructor(
    readonly reason: IdentityTokenReason,
    message: string,
  ) {
    super(message);
    this.name = "IdentityTokenError";
  }
}

/** A verified identity token. */
export interface VerifiedIdentity {
  readonly issuer: string;
  readonly subject: string;
  readonly claims: JWTPayload;
}

/** Verifies subject, actor and approver JWTs from the configured trusted issuers (CONTRACT §1). */
export interface TrustedIssuers {
  /** @throws {IdentityTokenError} */
  verify(token: string, usage: TokenUsage): Promise<VerifiedIdentity>;
  /** True when `iss` is one of the trusted issuers (whatever the usage). */
  isTrusted(iss: string): boolean;
}

/** Largest identity token accepted, in bytes. */
export const MAX_IDENTITY_TOKEN_BYTES = 16 * 1024;
const DEFAULT_ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"];
/** Clock skew tolerated on `exp`/`nbf`/`iat`, in seconds. */
const CLOCK_TOLERANCE_SECONDS = 30;

interface IssuerEntry {
  config: TrustedIssuerConfig;
  keys: ReturnType<typeof createRemoteJWKSet> | ReturnType<typeof createLocalJWKSet>;
  /** Dev tokens also name their usage in a `usage` claim. */
  requireUsageClaim: boolean;
}

function claimContains(value: unknown, expected: string): boolean {
  if (typeof value === "string") return value === expected || value.split(" ").includes(expected);
  return Array.isArray(value) && value.includes(expected);
}

/**
 * Builds the verifier. Remote JWKS are fetched lazily, cached and refetched on an unknown `kid` (with
 * jose's cooldown), so issuer key rotation needs no restart.
 */
export function createTrustedIssuers(
  issuers: readonly TrustedIssuerConfig[],
  devIssuer?: DevIssuer,
  logger?: Logger,
): TrustedIssuers {
  const entries = new Map<string, IssuerEntry>();
  for (const config of issuers) {
    const keys = config.jwks_uri
      ? createBoundedRemoteJWKSet(new URL(config.jwks_uri), {
          timeoutDuration: 3000,
          cooldownDuration: 30_000,
          cacheMaxAge: 600_000,
          logger,
        })
      : createLocalJWKSet(config.jwks as unknown as JSONWebKeySet);
    entries.set(config.issuer, { config, keys, requireUsageClaim: false });
  }
  if (devIssuer) {
    entries.set(devIssuer.issuer, {
      config: {
        issuer: devIssuer.issuer,
        audience: devIssuer.audience,
        usage: ["subject", "actor", "approver"],
        approver_claim: { name: "roles", value: "approver" },
        algorithms: ["ES256"],
      },
      keys: createLocalJWKSet({ keys: [devIssuer.publicJwk] } as JSONWebKeySet),
      requireUsageClaim: true,
    });
  }

  return {
    isTrusted: (iss) => entries.has(iss),
    async verify(token, usage) {
      if (token.length > MAX_IDENTITY_TOKEN_BYTES) {
        throw new IdentityTokenError(
          "token_too_large",
          `the ${usage} token exceeds ${MAX_IDENTITY_TOKEN_BYTES} bytes`,
        );
      }
      let iss: unknown;
      try {
        decodeProtectedHeader(token);
        iss = decodeJwt(token).iss;
      } catch {
        throw new IdentityTokenError("token_malformed", `the ${usage} token is not a JWT`);
      }
      const entry = typeof iss === "string" ? entries.get(iss) : undefined;
      if (!entry)
        throw new IdentityTokenError("issuer_untrusted", `the ${usage} token's issuer is not trusted`);
      const { config } = entry;
      if (!config.usage.includes(usage)) {
        throw new IdentityTokenError("usage_not_allowed", `the issuer is not trusted for ${usage} tokens`);
      }
      let claims: JWTPayload;
      try {
        ({ payload: claims } = await jwtVerify(token, entry.keys, {
          issuer: config.issuer,
          audience: config.audience,
          algorithms: config.algorithms ?? DEFAULT_ALGORITHMS,
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
          requiredClaims: ["exp", "sub"],
        }));
      } catch (error) {
        throw toIdentityError(error, usage);
      }
      if (entry.requireUsageClaim && !claimContains(claims.usage, usage)) {
        throw new IdentityTokenError("usage_not_allowed", `the token was not issued for ${usage} use`);
      }
      if (usage === "approver" && config.approver_claim) {
        const { name, value } = config.approver_claim;
        if (!claimContains(claims[name], value)) {
          throw new IdentityTokenError(
            "approver_claim_missing",
            `the token's ${name} claim does not include ${value}`,
          );
        }
      }
      if (!isUsableSubject(claims.sub)) {
        throw new IdentityTokenError("claim_missing", `the ${usage} token has no usable sub`);
      }
      return { issuer: config.issuer, subject: claims.sub, claims };
    },
  };
}

/**
 * A `sub` the STS can carry: 1 to 255 UTF-16 units of well-formed Unicode without control characters
 * (C0, DEL, C1 are never part of an identifier, and NUL cannot even be stored in Postgres text; a lone
 * surrogate is not Unicode and cannot be encoded as UTF-8).
 */
export function isUsableSubject(sub: unknown): sub is string {
  return (
    typeof sub === "string" &&
    sub.length > 0 &&
    sub.length <= 255 &&
    isStorableText(sub) &&
    !hasControlCharacter(sub)
  );
}

function toIdentityError(error: unknown, usage: TokenUsage): IdentityTokenError {
  if (error instanceof joseErrors.JWTExpired)
    return new IdentityTokenError("token_expired", `the ${usage} token has expired`);
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "aud")
      return new IdentityTokenError("audience_mismatch", `the ${usage} token's audience is not accepted`);
    if (error.claim === "nbf" || error.claim === "iat") {
      return new IdentityTokenError("token_not_yet_valid", `the ${usage} token is not yet valid`);
    }
    return new IdentityTokenError(
      "claim_missing",
      `the ${usage} token's ${error.claim} claim is missing or invalid`,
    );
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return new IdentityTokenError("algorithm_not_allowed", `the ${usage} token's algorithm is not allowed`);
  }
  if (
    error instanceof joseErrors.JWKSTimeout ||
    (error instanceof Error && /fetch|ECONN|network/i.test(error.message))
  ) {
    return new IdentityTokenError(
      "jwks_unavailable",
      `the ${usage} token's issuer keys could not be fetched`,
    );
  }
  if (
    error instanceof joseErrors.JWSSignatureVerificationFailed ||
    error instanceof joseErrors.JWKSNoMatchingKey
  ) {
    return new IdentityTokenError("signature_invalid", `the ${usage} token's signature is invalid`);
  }
  if (error instanceof joseErrors.JOSEError) {
    return new IdentityTokenError("token_malformed", `the ${usage} token is invalid (${error.code})`);
  }
  return new IdentityTokenError("jwks_unavailable", `the ${usage} token could not be verified`);
}
