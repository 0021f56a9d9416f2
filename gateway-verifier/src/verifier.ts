import { createClaimsCheck } from "./access_token_claims.js";
import { parseAuthorization } from "./authorization_header.js";
import { createBackgroundErrors, warnRevocationNotConfigured } from "./background_error.js";
import { DpopChecker } from "./dpop.js";
import { createErrorResponses } from "./error_response.js";
import { type KeySource, remoteKeySource, staticKeySource } from "./jwks.js";
import { createJwsVerify, type JwsOutcome } from "./jws_verify.js";
import { createMemoryRateLimitStore } from "./rate_limit.js";
import { waitUntilReady } from "./readiness.js";
import { createRequestChecks } from "./request_checks.js";
import { startRevocationFeed } from "./revocation.js";
import { traceVerification } from "./tracing.js";
import type { JwsAlgorithm, Verifier, VerifierOptions, VerifyRequest, VerifyResult } from "./types.js";
import { VerifiedTokenCache } from "./verified_cache.js";
import { validateOptions } from "./verifier_options.js";

/**
 * Creates a gateway verifier (its options and reason codes: gateway-verifier/README.md). Checks run in a fixed order, signature first:
 * size and shape → `alg` allow-list → key-bearing headers, `b64`, `crit` → `typ` → signature (JWKS) →
 * `iss` → `aud` → `exp`/`nbf`/`iat` → staleness → `approval_id` → `sub`/`client_id` → `act` depth →
 * revocation → required scopes → DPoP → rate and burst.
 *
 * @throws TypeError naming every invalid option.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  validateOptions(options);
  const issuer = options.issuer;
  const algorithms: readonly JwsAlgorithm[] = options.algorithms ?? ["ES256"];
  const toleranceMs = (options.clockToleranceSeconds ?? 5) * 1000;
  const maxAgeMs = (options.maxTokenAgeSeconds ?? 300) * 1000;
  const maxTokenBytes = options.maxTokenBytes ?? 8192;
  const now = options.now ?? Date.now;
  const jwksUri = options.jwksUri ?? `${issuer.replace(/\/+$/, "")}/jwks`;
  const revocationOptions = options.revocation === false ? undefined : options.revocation;

  // Background errors reach the hooks, which can never throw into the verifier.
  const backgroundErrors = createBackgroundErrors(options);
  if (options.revocation === undefined) warnRevocationNotConfigured(options, backgroundErrors);
  const report = backgroundErrors.report;

  // (d) The verified-token cache, emptied when the JWKS drops a key.
  const cache =
    options.cache === false ? undefined : new VerifiedTokenCache(options.cache?.maxEntries ?? 10_000);

  const keys: KeySource =
    options.jwks !== undefined
      ? staticKeySource(options.jwks, algorithms)
      : remoteKeySource(jwksUri, algorithms, options.jwksOptions ?? {}, () => cache?.clear(), report);

  const revocation =
    revocationOptions === undefined
      ? undefined
      : startRevocationFeed(revocationOptions, maxAgeMs + toleranceMs, now, report);

  let closed = false;
  const ownsRateStore = options.rateLimitStore === undefined;
  const rateStore = options.rateLimitStore ?? createMemoryRateLimitStore();
  const dpop = new DpopChecker(options.dpop ?? {}, toleranceMs / 1000);
  const responses = createErrorResponses(options.realm, dpop.algorithms);

  // (a) Header and signature.
  const verifyJws = createJwsVerify({
    keys,
    allowedAlgorithms: new Set(algorithms),
    maxTokenBytes,
    signatureVerification: options.signatureVerification,
  });
  // (b) Claims.
  const checkClaims = createClaimsCheck({
    issuer,
    audiences: typeof options.audience === "string" ? [options.audience] : options.audience,
    toleranceMs,
    maxAgeMs,
    maxActDepth: options.maxActDepth ?? 5,
    gatewayLimit: options.rateLimit,
  });
  // (c) Per request, cache hits included: revocation, scopes, DPoP, rate.
  const checkRequest = createRequestChecks({ revocation, dpop, rateStore, responses });

  /** After the signature: (b) claims, (d) into the cache, (c) per request. */
  function afterSignature(
    outcome: JwsOutcome,
    cacheKey: string | undefined,
    request: VerifyRequest,
    token: string,
    dpopScheme: boolean,
    nowMs: number,
  ): VerifyResult | Promise<VerifyResult> {
    // Before the claims are known only the request's scheme tells which challenge to send.
    if (typeof outcome === "string") return responses.fail(outcome, dpopScheme ? "DPoP" : "Bearer");
    const verified = checkClaims(outcome, nowMs);
    if (typeof verified === "string") return responses.fail(verified, dpopScheme ? "DPoP" : "Bearer");
    if (cacheKey !== undefined) cache?.set(cacheKey, verified);
    return checkRequest(verified, request, token, dpopScheme, nowMs);
  }

  function run(request: VerifyRequest): VerifyResult | Promise<VerifyResult> {
    // The Authorization header: scheme, token size.
    const credentials = parseAuthorization(request.authorization, maxTokenBytes);
    if ("reason" in credentials) return responses.fail(credentials.reason, credentials.scheme);
    const { token, dpop: dpopScheme } = credentials;
    const nowMs = now();
    // (d) A cached token skips (a) and (b), never (c).
    let cacheKey: string | undefined;
    if (cache !== undefined) {
      cacheKey = VerifiedTokenCache.key(token);
      const hit = cache.get(cacheKey, nowMs);
      if (hit !== undefined) return checkRequest(hit, request, token, dpopScheme, nowMs);
    }
    // (a), then the rest once the signature is known.
    const outcome = verifyJws(token);
    if (outcome instanceof Promise) {
      return outcome.then((settled) => afterSignature(settled, cacheKey, request, token, dpopScheme, nowMs));
    }
    return afterSignature(outcome, cacheKey, request, token, dpopScheme, nowMs);
  }

  return {
    verify(request) {
      return traceVerification(options.tracer, () => {
        try {
          const result = run(request);
          return result instanceof Promise
            ? result.catch(() => responses.fail("malformed_token", "Bearer"))
            : Promise.resolve(result);
        } catch {
          return Promise.resolve(responses.fail("malformed_token", "Bearer"));
        }
      });
    },
    ready() {
      return waitUntilReady({
        keys,
        jwksUri: options.jwks === undefined ? jwksUri : undefined,
        revocation,
        timeoutMs: options.readyTimeoutMs ?? 10_000,
        errors: backgroundErrors,
        closed: () => closed,
      });
    },
    close() {
      closed = true;
      keys.close();
      revocation?.close();
      if (ownsRateStore) rateStore.close?.();
    },
  };
}
