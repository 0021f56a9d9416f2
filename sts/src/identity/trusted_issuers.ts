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
import {
  DEFAULT_APPROVER_MAX_AGE_SECONDS,
  DEFAULT_ID_JAG_MAX_AGE_SECONDS,
  type TOKEN_USAGES,
  type TrustedIssuerConfig,
} from "../config/schema.js";
import { hasControlCharacter, isStorableText } from "../db/text.js";
import { exactSignatureLength } from "../oauth/exact_signature_length.js";
import type { Logger } from "../ops/logger.js";
import type { DevIssuer } from "./dev_issuer.js";
import { createBoundedRemoteJWKSet } from "./remote_jwks.js";

/** What an identity token is presented as (`id_jag`: an ID-JAG redeemed with the jwt-bearer grant). */
export type TokenUsage = (typeof TOKEN_USAGES)[number];

/** Stable reason codes for identity-token refusals. */
export type IdentityTokenReason =
  | "token_malformed"
  | "token_too_large"
  | "issuer_untrusted"
  | "usage_not_allowed"
  | "algorithm_not_allowed"
  | "signature_invalid"
  | "audience_mismatch"
  | "audience_ambiguous"
  | "token_expired"
  | "token_not_yet_valid"
  | "token_too_old"
  | "auth_time_missing"
  | "claim_missing"
  | "approver_claim_missing"
  | "issuer_keys_unavailable";

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
  /**
   * What the entry that accepted the token trusts its tokens for. An `act` claim inside a subject token
   * counts only when this includes `actor`.
   */
  readonly usages: readonly TokenUsage[];
  /**
   * Epoch seconds after which this verification must not be reused even though `exp` has not passed
   * (the entry's `max_token_age_seconds` or `approver_max_age_seconds`). Undefined: only `exp` bounds it.
   */
  readonly acceptUntil?: number | undefined;
  /**
   * The most seconds the accepting entry allows between a token's `iat` and now (its
   * `max_token_age_seconds`; for `id_jag`, its default). Undefined: no bound.
   */
  readonly maxAgeSeconds?: number | undefined;
}

/** Verifies subject, actor and approver JWTs from the configured trusted issuers (docs/reference.md). */
export interface TrustedIssuers {
  /** @throws {IdentityTokenError} */
  verify(token: string, usage: TokenUsage): Promise<VerifiedIdentity>;
  /** True when `iss` is one of the trusted issuers (whatever the usage). */
  isTrusted(iss: string): boolean;
  /** The distinct issuers trusted for `usage` (the development issuer included in dev mode). */
  issuersFor(usage: TokenUsage): readonly string[];
}

/** Largest identity token accepted, in bytes. */
export const MAX_IDENTITY_TOKEN_BYTES = 16 * 1024;
const DEFAULT_ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"];
/** Clock skew tolerated on `exp`/`nbf`/`iat`/`auth_time`, in seconds. */
export const CLOCK_TOLERANCE_SECONDS = 30;

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

/** The audiences a token names (`aud` is a string or an array of strings, RFC 7519 §4.1.3). */
function audiencesOf(aud: unknown): readonly string[] {
  if (typeof aud === "string") return [aud];
  return Array.isArray(aud) ? aud.filter((value): value is string => typeof value === "string") : [];
}

function isNumericDate(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * Builds the verifier. Remote JWKS are fetched lazily, cached and refetched on an unknown `kid` (with
 * jose's cooldown), so issuer key rotation needs no restart. Entries sharing a `jwks_uri` share one
 * cached key set.
 * @param now - seconds since the epoch; tests freeze it. Default: the system clock.
 */
export function createTrustedIssuers(
  issuers: readonly TrustedIssuerConfig[],
  devIssuer?: DevIssuer,
  logger?: Logger,
  now: () => number = () => Date.now() / 1000,
): TrustedIssuers {
  const byIssuer = new Map<string, IssuerEntry[]>();
  const remoteKeys = new Map<string, ReturnType<typeof createBoundedRemoteJWKSet>>();
  const add = (entry: IssuerEntry) => {
    const list = byIssuer.get(entry.config.issuer) ?? [];
    list.push(entry);
    byIssuer.set(entry.config.issuer, list);
  };
  for (const config of issuers) {
    let keys: IssuerEntry["keys"];
    if (config.jwks_uri) {
      let remote = remoteKeys.get(config.jwks_uri);
      if (!remote) {
        remote = createBoundedRemoteJWKSet(new URL(config.jwks_uri), {
          timeoutDuration: 3000,
          cooldownDuration: 30_000,
          cacheMaxAge: 600_000,
          logger,
        });
        remoteKeys.set(config.jwks_uri, remote);
      }
      keys = remote;
    } else {
      keys = createLocalJWKSet(config.jwks as unknown as JSONWebKeySet);
    }
    add({ config, keys, requireUsageClaim: false });
  }
  if (devIssuer) {
    // The development issuer alone is trusted for every usage: each of its tokens names its one usage
    // in a `usage` claim, so a subject token it printed is still never an approver credential.
    add({
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
  const issuersFor = (usage: TokenUsage) =>
    [...byIssuer]
      .filter(([, entries]) => entries.some((entry) => entry.config.usage.includes(usage)))
      .map(([issuer]) => issuer);

  /** The one entry of the token's issuer whose audience the token carries. */
  function entryFor(token: string, usage: TokenUsage): IssuerEntry {
    let payload: JWTPayload;
    try {
      decodeProtectedHeader(token);
      payload = decodeJwt(token);
    } catch {
      throw new IdentityTokenError("token_malformed", `the ${usage} token is not a JWT`);
    }
    const candidates = typeof payload.iss === "string" ? byIssuer.get(payload.iss) : undefined;
    if (!candidates)
      throw new IdentityTokenError("issuer_untrusted", `the ${usage} token's issuer is not trusted`);
    const audiences = audiencesOf(payload.aud);
    const matching = candidates.filter((entry) => audiences.includes(entry.config.audience));
    if (matching.length === 0) {
      throw new IdentityTokenError("audience_mismatch", `the ${usage} token's audience is not accepted`);
    }
    if (matching.length > 1) {
      throw new IdentityTokenError(
        "audience_ambiguous",
        `the ${usage} token carries the audiences of several trusted-issuer entries; it must carry exactly one`,
      );
    }
    const entry = matching[0] as IssuerEntry;
    if (!entry.config.usage.includes(usage)) {
      throw new IdentityTokenError(
        "usage_not_allowed",
        `tokens with this issuer and audience are not trusted for ${usage} use`,
      );
    }
    return entry;
  }

  return {
    isTrusted: (iss) => byIssuer.has(iss),
    issuersFor,
    async verify(token, usage) {
      if (token.length > MAX_IDENTITY_TOKEN_BYTES) {
        throw new IdentityTokenError(
          "token_too_large",
          `the ${usage} token exceeds ${MAX_IDENTITY_TOKEN_BYTES} bytes`,
        );
      }
      const entry = entryFor(token, usage);
      const { config } = entry;
      let claims: JWTPayload;
      try {
        ({ payload: claims } = await jwtVerify(token, exactSignatureLength(entry.keys), {
          issuer: config.issuer,
          audience: config.audience,
          algorithms: config.algorithms ?? DEFAULT_ALGORITHMS,
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
          requiredClaims: ["exp", "sub"],
          currentDate: new Date(now() * 1000),
        }));
      } catch (error) {
        throw toIdentityError(error, usage);
      }
      if (entry.requireUsageClaim && !claimContains(claims.usage, usage)) {
        throw new IdentityTokenError("usage_not_allowed", `the token was not issued for ${usage} use`);
      }
      const acceptUntil = checkAge(claims, config, usage, now());
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
      return {
        issuer: config.issuer,
        subject: claims.sub,
        claims,
        usages: config.usage,
        acceptUntil,
        maxAgeSeconds: maxTokenAge(config, usage),
      };
    },
  };
}

/** The entry's bound on a token's age: `max_token_age_seconds`, which `id_jag` entries always have. */
function maxTokenAge(config: TrustedIssuerConfig, usage: TokenUsage): number | undefined {
  return config.max_token_age_seconds ?? (usage === "id_jag" ? DEFAULT_ID_JAG_MAX_AGE_SECONDS : undefined);
}

/**
 * The time checks jose leaves to the caller: `iat` and `auth_time` may not lie in the future; an
 * entry's `max_token_age_seconds` bounds `iat` (and then requires it); approver tokens are bounded by
 * `approver_max_age_seconds` on `iat` and `auth_time` (OIDC Core §2), and need `auth_time` when the
 * entry says so.
 * @returns epoch seconds after which the token is too old, when an age bound applies.
 */
function checkAge(
  claims: JWTPayload,
  config: TrustedIssuerConfig,
  usage: TokenUsage,
  nowSeconds: number,
): number | undefined {
  const { iat } = claims;
  const authTime = claims.auth_time;
  if (iat !== undefined && !isNumericDate(iat)) {
    throw new IdentityTokenError("claim_missing", `the ${usage} token's iat claim is invalid`);
  }
  if (authTime !== undefined && !isNumericDate(authTime)) {
    throw new IdentityTokenError("claim_missing", `the ${usage} token's auth_time claim is invalid`);
  }
  for (const [name, value] of [
    ["iat", iat],
    ["auth_time", authTime],
  ] as const) {
    if (value !== undefined && value > nowSeconds + CLOCK_TOLERANCE_SECONDS) {
      throw new IdentityTokenError(
        "token_not_yet_valid",
        `the ${usage} token's ${name} lies in the future: check the issuer's clock`,
      );
    }
  }
  const bounds: number[] = [];
  const ageBound = maxTokenAge(config, usage);
  if (ageBound !== undefined) {
    if (iat === undefined) {
      throw new IdentityTokenError(
        "claim_missing",
        usage === "id_jag"
          ? "the id_jag token has no iat claim"
          : `the ${usage} token has no iat claim, and its issuer entry sets max_token_age_seconds`,
      );
    }
    bounds.push(iat + ageBound);
  }
  if (usage === "approver") {
    const maxAge = config.approver_max_age_seconds ?? DEFAULT_APPROVER_MAX_AGE_SECONDS;
    if (iat === undefined) {
      throw new IdentityTokenError(
        "claim_missing",
        "the approver token has no iat claim: its age is unknown",
      );
    }
    if (authTime === undefined && config.require_auth_time === true) {
      throw new IdentityTokenError(
        "auth_time_missing",
        "the approver token has no auth_time claim, which this issuer entry requires",
      );
    }
    bounds.push(iat + maxAge);
    if (authTime !== undefined) bounds.push(authTime + maxAge);
    const until = Math.min(...bounds);
    if (nowSeconds > until + CLOCK_TOLERANCE_SECONDS) {
      const which =
        authTime !== undefined && authTime + maxAge === until ? "sign-in (auth_time)" : "token (iat)";
      throw new IdentityTokenError(
        "token_too_old",
        `the approver's ${which} is older than ${maxAge} seconds: sign in again to decide approvals`,
      );
    }
    return until + CLOCK_TOLERANCE_SECONDS;
  }
  if (bounds.length === 0) return undefined;
  const until = Math.min(...bounds);
  if (nowSeconds > until + CLOCK_TOLERANCE_SECONDS) {
    throw new IdentityTokenError(
      "token_too_old",
      `the ${usage} token was issued more than ${ageBound} seconds ago`,
    );
  }
  return until + CLOCK_TOLERANCE_SECONDS;
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
      "issuer_keys_unavailable",
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
  return new IdentityTokenError("issuer_keys_unavailable", `the ${usage} token could not be verified`);
}
