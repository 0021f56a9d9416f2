import Router from "@koa/router";
import Koa from "koa";
import type Provider from "oidc-provider";
import { approvalAuditRoutes } from "./approvals/audit_routes.js";
import { approvalRoutes } from "./approvals/routes.js";
import type { Config } from "./config/load.js";
import { consoleRoutes } from "./console/routes.js";
import { EXPIRE_BATCH_EMBEDDED } from "./db/approval_expiry.js";
import { type DatabaseHandle, openDatabase } from "./db/connect.js";
import { isDatabaseUnavailable } from "./db/errors.js";
import { migrateToLatest } from "./db/migrate.js";
import { createApprovalCache } from "./exchange/approval_cache.js";
import { createAssertionReplayStore } from "./exchange/assertion_replay.js";
import { mcpClientCredentialsGrant } from "./exchange/client_credentials_grant.js";
import { tokenExchangeGrant } from "./exchange/grant.js";
import type { ExchangeGuards } from "./exchange/guards.js";
import { idJagGrant } from "./exchange/id_jag_grant.js";
import { createIssuanceStore } from "./exchange/issuance_store.js";
import { createMinter } from "./exchange/mint.js";
import { createStandingRequests } from "./exchange/standing_requests.js";
import { createVerifiedTokenCache } from "./exchange/verified_token_cache.js";
import { type ClientErrorLog, createClientErrorLog, koaErrorListener } from "./http/client_errors.js";
import { errorHandler } from "./http/errors.js";
import { opsRoutes } from "./http/ops_routes.js";
import { loadDevIssuer } from "./identity/dev_issuer.js";
import { createTrustedIssuers } from "./identity/trusted_issuers.js";
import { dataDirKekAdvice, resolveKeyEncryptionKey } from "./keys/kek.js";
import { createKeyRing, type KeyRing, type KeySnapshot } from "./keys/key_ring.js";
import { startKeyMaintenance } from "./keys/maintenance.js";
import type { RotationResult } from "./keys/rotation.js";
import { ensureSigningKey } from "./keys/signing_keys.js";
import { createClientCredentialsLimiter } from "./limits/client_credentials_limiter.js";
import { createIssuanceLimiter } from "./limits/issuance_limiter.js";
import { sweepExpiredPayloads } from "./oidc/adapter.js";
import { createProvider } from "./oidc/provider.js";
import { openApiRoutes } from "./openapi/routes.js";
import { createLogger, flushRepeatedLines, type Logger } from "./ops/logger.js";
import { createMetrics, type Metrics } from "./ops/metrics.js";
import { type RetentionLoop, type RetentionTimers, startRetention } from "./ops/retention.js";
import { createCedarPolicy, policyFilesOf } from "./policy/cedar_policy.js";
import { loadPolicySet } from "./policy/load.js";
import { type RevocationService, startRevocationService } from "./revocations/service.js";
import type { StsServices } from "./services.js";
import {
  createWebhookDispatcher,
  type WebhookDeliveryTuning,
  type WebhookDispatcher,
} from "./webhooks/dispatcher.js";

/** A composed STS: everything wired, not yet listening. */
export interface App {
  readonly config: Config;
  readonly koa: Koa;
  readonly database: DatabaseHandle;
  readonly provider: Provider;
  /** The published signing keys; swapped after a rotation. */
  readonly keyRing: KeyRing;
  /** Rotates the signing keys now (next → current → previous) and reloads them here. */
  rotateKeys(): Promise<RotationResult | undefined>;
  readonly logger: Logger;
  /** One log line per failed client connection (reset, malformed request); the server reports here too. */
  readonly clientErrors: ClientErrorLog;
  readonly metrics: Metrics;
  readonly services: StsServices;
  /** The revocation feed, its stream and the expiry sweeper. */
  readonly revocations: RevocationService;
  /** Sends approval events to the configured webhooks (an outbox in `webhook_deliveries`). */
  readonly webhooks: WebhookDispatcher;
  /** The retention job (partitions ahead, pruning past retention); stopped by `close`. */
  readonly retention: RetentionLoop;
  /** Marks the app as draining: `/readyz` answers 503 so load balancers stop sending traffic. */
  drain(): void;
  /** Releases everything the app holds (database pool or PGlite). */
  close(): Promise<void>;
}

/** Optional overrides for {@link createApp} (tests inject a logger or a database). */
export interface AppOptions {
  logger?: Logger;
  /** An already open database; the app does not close it. */
  database?: DatabaseHandle;
  /**
   * Runtime controls for the token exchange (policy, issuance limits). Without `policy`, the Cedar
   * policies from `config.policies` (or `policies/default.cedar`) decide.
   */
  exchangeGuards?: ExchangeGuards;
  /** The clock of the Cedar policies' time-of-day context (tests freeze it). Default: real time. */
  policyClock?: () => Date;
  /** Webhook delivery tuning (tests shorten the retry delays). Default: `DEFAULT_WEBHOOK_TUNING`. */
  webhookTuning?: Partial<WebhookDeliveryTuning>;
  /**
   * The clock of the revocation stream's replay budget (replays per client address), in milliseconds
   * since the epoch (tests freeze it). Default: real time. The feed read limiter reads `Date.now()`.
   */
  revocationsClock?: () => number;
  /** The clock retention is measured from (tests move it). Default: real time. */
  retentionClock?: () => Date;
  /** The retention loop's timers (tests pass their own). Default: Node's. */
  retentionTimers?: RetentionTimers;
}

/** Route groups for metrics labels, so label cardinality stays bounded. */
function routeGroup(path: string): string {
  if (path === "/token") return "token";
  if (path.startsWith("/approvals")) return "approvals";
  if (path.startsWith("/console")) return "console";
  if (path.startsWith("/.well-known/")) return "discovery";
  if (["/jwks", "/healthz", "/readyz", "/metrics", "/revocations"].includes(path)) return path.slice(1);
  return "other";
}

/** The warning of a config without resources (it starts, but can approve and mint nothing). */
export const NO_RESOURCES =
  "the config lists no resources: every approval request is refused (invalid_target) and no token can be " +
  "minted; add resources[] (docs/reference.md), or create the config with `countersign clients add`, which " +
  "starts from the development default";

/**
 * The composition root: config → database → migrations → keys → oidc-provider → routes.
 * Factories take their dependencies explicitly; nothing is a module-level singleton.
 */
export async function createApp(config: Config, options: AppOptions = {}): Promise<App> {
  const logger =
    options.logger ?? createLogger(config.logLevel, undefined, { maxRepeats: config.logMaxRepeats });
  if (config.resources.length === 0) {
    logger.warn(
      { event: "config.no_resources", reason: "no_resources", config: config.source },
      NO_RESOURCES,
    );
  }
  // A bad policy stops the start before anything else (PolicyLoadError names file, line and column).
  const policySet = loadPolicySet(policyFilesOf(config));
  const database =
    options.database ??
    (await openDatabase({
      url: config.database.url,
      dataDir: config.database.dataDir,
      poolSize: config.database.poolSize,
    }));
  const ownsDatabase = options.database === undefined;
  // What the start has opened so far, closed in reverse order if a later step throws.
  const opened: (() => unknown)[] = [];
  if (ownsDatabase) opened.push(() => database.close());
  try {
    const applied = await migrateToLatest(database.db);
    if (applied.length > 0)
      logger.info({ migrations: applied.map((m) => m.migrationName) }, "migrations applied");

    const kek = resolveKeyEncryptionKey({
      kek: config.kek,
      dataDir: config.database.dataDir,
      // Outside dev mode only PGlite gets here (config refuses DATABASE_URL without COUNTERSIGN_KEK).
      onDataDirKey: config.dev_mode
        ? undefined
        : ({ file, generated }) =>
            logger.warn(
              { event: "kek.data_dir", reason: "kek_in_data_dir", file, generated },
              dataDirKekAdvice(file),
            ),
    });
    await ensureSigningKey(database.db, kek, config.tokens.signing_alg);
    const keyRing = await createKeyRing({
      db: database.db,
      kek,
      issuer: config.issuer,
      alg: config.tokens.signing_alg,
    });

    const metrics = createMetrics();
    const devIssuer = config.dev_mode
      ? await loadDevIssuer({ issuer: config.issuer, dataDir: config.database.dataDir })
      : undefined;
    const services: StsServices = {
      config,
      db: database.db,
      logger,
      metrics,
      trustedIssuers: createTrustedIssuers(config.trusted_issuers, devIssuer, logger),
      ownTokens: { verify: (token, verifyOptions) => keyRing.current.ownTokens.verify(token, verifyOptions) },
      devIssuer,
    };
    const cedarPolicy = createCedarPolicy({
      policySet,
      db: database.db,
      resources: config.resources,
      logger,
      ...(options.policyClock ? { clock: options.policyClock } : {}),
    });
    const issuanceLimiter = createIssuanceLimiter({
      perClient: config.issuance_limits.per_client,
      perApproval: config.issuance_limits.per_approval,
      pool: database.pool,
    });
    const clientCredentialsLimiter = createClientCredentialsLimiter({
      limit: config.issuance_limits.client_credentials,
      pool: database.pool,
    });
    const exchangeGuards: ExchangeGuards = {
      ...options.exchangeGuards,
      policy: options.exchangeGuards?.policy ?? cedarPolicy,
      limiter: options.exchangeGuards?.limiter ?? issuanceLimiter,
    };
    const revocations = await startRevocationService(
      database,
      config.revocations,
      logger,
      config.tokens.max_ttl_seconds,
      { now: options.revocationsClock },
    );
    opened.push(() => revocations.close());
    const issuanceStore = createIssuanceStore(database.db, database.pool, {
      onBatch: (size) => metrics.issueBatchSize.observe(size),
    });
    // A policy that reads the live budget must see a fresh approval at every exchange.
    const approvalCache =
      exchangeGuards.policy?.readsApprovalBudget === false ? createApprovalCache() : undefined;
    const minter = createMinter({
      config,
      signer: () => keyRing.current.signer,
      guards: exchangeGuards,
      store: issuanceStore,
      approvals: approvalCache,
    });
    const exchangeGrant = tokenExchangeGrant({
      ...services,
      store: issuanceStore,
      approvals: approvalCache,
      verifiedTokens: createVerifiedTokenCache(),
      minter,
    });
    const webhooks = createWebhookDispatcher({
      db: database.db,
      webhooks: config.webhooks,
      requestedLimit: config.approvals.webhook_requested_limit,
      logger,
      ...(options.webhookTuning ? { tuning: options.webhookTuning } : {}),
    });
    opened.push(() => webhooks.close());
    // MCP clients' requests without an approval id: found, or recorded once for a human.
    const standingRequests = createStandingRequests(database.db, {
      cooldownSeconds: config.mcp.request_cooldown_seconds,
      maxPendingPerAgent: config.approvals.max_pending_per_agent,
      onEvent: webhooks.emit,
      onEventError: (error, approvalId) =>
        logger.warn(
          { err: { message: (error as Error).message }, approval_id: approvalId },
          "approval event sink failed",
        ),
    });
    const mcpClientCredentials = mcpClientCredentialsGrant({
      ...services,
      requests: standingRequests,
      minter,
      limiter: clientCredentialsLimiter,
    });
    // The jwt-bearer grant (ID-JAG redemption) exists only once an IdP is trusted for id_jag.
    const idJag = config.trusted_issuers.some((entry) => entry.usage.includes("id_jag"))
      ? idJagGrant({
          ...services,
          requests: standingRequests,
          minter,
          replay: createAssertionReplayStore(database.db),
          limiter: clientCredentialsLimiter,
        })
      : undefined;
    const clientErrors = createClientErrorLog(logger);
    // Koa's report of an error (a socket failing under a response, an error past every handler), from
    // our app and from oidc-provider's (itself a Koa app): one JSON line, not Koa's stack on stderr.
    const onKoaError = koaErrorListener(clientErrors, logger);
    const buildProvider = (keys: KeySnapshot["keys"]) => {
      const built = createProvider({
        config,
        db: database.db,
        keys,
        logger,
        metrics,
        cookieSecret: kek.derive("countersign oidc-provider cookies"),
        grants: idJag ? [exchangeGrant, idJag] : [exchangeGrant],
        clientCredentialsLimiter,
        clientCredentialsForResources: mcpClientCredentials,
      });
      // oidc-provider's Provider is a Koa app; its typings list only its own events.
      (built as unknown as Koa).on("error", onKoaError);
      return built;
    };
    // After a rotation (here or on another instance) oidc-provider is rebuilt with the new key set, so
    // /jwks and client_credentials follow; requests in flight finish on the provider they started on.
    let provider = buildProvider(keyRing.current.keys);
    let providerCallback = provider.callback();
    keyRing.onChange((snapshot) => {
      provider = buildProvider(snapshot.keys);
      providerCallback = provider.callback();
      logger.info({ keys: snapshot.version }, "signing keys changed");
    });
    const keyMaintenance = startKeyMaintenance({ db: database.db, kek, keyRing, config, logger });
    opened.push(() => keyMaintenance.stop());

    let draining = false;
    const koa = new Koa();
    koa.proxy = false;
    koa.use(async (ctx, next) => {
      const started = process.hrtime.bigint();
      const route = routeGroup(ctx.path);
      try {
        await next();
      } finally {
        const status = ctx.respond === false ? ctx.res.statusCode : ctx.status;
        metrics.httpRequests.inc({ route, method: ctx.method, status: String(status) });
        metrics.httpDuration.observe(
          { route, method: ctx.method },
          Number(process.hrtime.bigint() - started) / 1e9,
        );
      }
    });
    koa.on("error", onKoaError);
    koa.use(errorHandler(logger, isDatabaseUnavailable, clientErrors));

    const ops = opsRoutes(database.db, metrics, () => draining);
    koa.use(ops.routes());
    koa.use(openApiRoutes({ issuer: config.issuer }).routes());

    const discovery = new Router();
    // RFC 8414 metadata: the same document oidc-provider serves for OpenID discovery.
    discovery.get("/.well-known/oauth-authorization-server", async (ctx, next) => {
      ctx.path = "/.well-known/openid-configuration";
      await next();
    });
    koa.use(discovery.routes());

    koa.use(revocations.router.routes());
    koa.use(revocations.router.allowedMethods());

    // The approval console (static page) and the audit trail it reads, before the approval API.
    koa.use(consoleRoutes(services).routes());
    koa.use(approvalAuditRoutes(services).routes());

    const retention = startRetention({
      db: database.db,
      settings: config.retention,
      logger,
      sweepOidcPayloads: sweepExpiredPayloads,
      ...(database.engine === "pglite" ? { expireBatch: EXPIRE_BATCH_EMBEDDED } : {}),
      ...(options.retentionClock ? { clock: options.retentionClock } : {}),
      ...(options.retentionTimers ? { timers: options.retentionTimers } : {}),
    });
    opened.push(() => retention.stop());
    const approvals = approvalRoutes(services, { policy: cedarPolicy, onEvent: webhooks.emit });
    koa.use(approvals.routes());
    koa.use(approvals.allowedMethods());

    // Everything else is oidc-provider's: /token, /jwks, discovery.
    koa.use(async (ctx) => {
      ctx.respond = false;
      await providerCallback(ctx.req, ctx.res);
    });

    return {
      config,
      koa,
      database,
      get provider() {
        return provider;
      },
      keyRing,
      rotateKeys: () => keyMaintenance.rotateNow(),
      logger,
      clientErrors,
      metrics,
      services,
      revocations,
      webhooks,
      retention,
      drain: () => {
        draining = true;
        revocations.drain();
      },
      // What the start opened, closed in reverse order: the retention job, key maintenance, webhooks,
      // revocations, then the database (when the app opened it).
      close: async () => {
        for (const close of [...opened].reverse()) await close();
        flushRepeatedLines(logger);
      },
    };
  } catch (error) {
    // A failed start closes what it opened (the error reported is the start's, not a cleanup's), so
    // `countersign serve` and a test that starts the app end with the error instead of hanging.
    for (const close of opened.reverse())
      await Promise.resolve()
        .then(close)
        .catch(() => {});
    throw error;
  }
}
