import type { Kysely } from "kysely";
import type { Config } from "./config/load.js";
import type { Database } from "./db/schema.js";
import type { DevIssuer } from "./identity/dev_issuer.js";
import type { TrustedIssuers } from "./identity/trusted_issuers.js";
import type { OwnTokenVerifier } from "./keys/own_tokens.js";
import type { Logger } from "./ops/logger.js";
import type { Metrics } from "./ops/metrics.js";

/**
 * The services the composition root builds once and hands to routes and grants. Explicit
 * dependencies, no singletons: tests build as many apps as they like.
 */
export interface StsServices {
  readonly config: Config;
  readonly db: Kysely<Database>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Subject, actor and approver JWTs from trusted issuers (and the dev issuer in dev mode). */
  readonly trustedIssuers: TrustedIssuers;
  /** Access tokens this STS issued (approval API credentials, exchanged tokens). */
  readonly ownTokens: OwnTokenVerifier;
  /** The development issuer, only when `dev_mode` is true. */
  readonly devIssuer: DevIssuer | undefined;
}
