/**
 * Countersign gateway verifier: `import { createVerifier } from "@countersign/gateway-verifier"`
 * (`countersign/gateway-verifier` inside the Countersign repository). Depends on `jose` alone; the
 * Redis rate-limit store loads the optional peer `rate-limiter-flexible` only on first use.
 */
export { VerifierBackgroundError } from "./background_error.js";
export { type ConnectMiddlewareOptions, connectVerifier, type VerifiedRequest } from "./connect.js";
export { jwkThumbprint, normalizeHtu } from "./dpop.js";
export {
  createExtAuthzHandler,
  type ExtAuthzOptions,
  type ExtAuthzServerOptions,
  startExtAuthzServer,
} from "./envoy_ext_authz.js";
export * from "./forward_auth/index.js";
export type { RequiredScopes } from "./http_adapter.js";
export { type KoaMiddlewareOptions, koaVerifier } from "./koa.js";
export * from "./mcp/index.js";
export {
  createMemoryRateLimitStore,
  type MemoryRateLimitStore,
  type MemoryRateLimitStoreOptions,
} from "./rate_limit.js";
export { REASONS, type Reason, type VerifyErrorCode, type VerifyErrorStatus } from "./reasons.js";
export {
  createRedisRateLimitStore,
  type RedisRateLimitStoreOptions,
} from "./redis_rate_limit_store.js";
export type { RevocationEntry } from "./revocation.js";
export type { VerifierSpan, VerifierSpanAttribute, VerifierTracer } from "./tracing.js";
export type {
  AccessTokenClaims,
  ActorClaim,
  DpopOptions,
  JwksOptions,
  JwsAlgorithm,
  RateDecision,
  RateLimit,
  RateLimitStore,
  RevocationOptions,
  Verifier,
  VerifierBackgroundErrorCode,
  VerifierBackgroundErrorReason,
  VerifierBackgroundErrorSource,
  VerifierOptions,
  VerifyFailure,
  VerifyRequest,
  VerifyResult,
  VerifySuccess,
} from "./types.js";
export { createVerifier } from "./verifier.js";
