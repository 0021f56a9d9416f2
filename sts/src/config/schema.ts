import { z } from "zod";

/**
 * The Countersign configuration file (docs/reference.md#the-config-file). JSON, snake_case like OAuth metadata.
 * Every key is documented where it is defined, with its unit and security notes.
 * Unknown keys are rejected so a typo never silently falls back to a default.
 */

const httpsOrLoopbackUrl = z
  .string()
  .max(2048)
  .url()
  .refine(
    (value) => {
      const url = new URL(value);
      return url.protocol === "https:" || ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
    },
    { message: "must be an https URL (http is allowed only for 127.0.0.1, localhost and [::1])" },
  );

/** A scope token per RFC 6749 §3.3: printable ASCII without space, quote or backslash. */
export const scopeToken = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, "must be a scope token (RFC 6749 §3.3)");

/** Rate and burst limit: a token bucket refilled at `per_second`, holding at most `burst`. */
export const rateLimitSchema = z
  .object({
    /** Sustained rate, in requests per second. Must be positive. */
    per_second: z
      .number()
      .positive()
      .max(1_000_000)
      .describe("Sustained rate, in requests per second. Must be positive."),
    /** Bucket size: how many requests may arrive at once. An integer ≥ 1. */
    burst: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .describe("Bucket size: how many requests may arrive at once. An integer ≥ 1."),
  })
  .strict()
  .describe("Rate and burst limit: a token bucket refilled at `per_second`, holding at most `burst`.");

const resourceSchema = z
  .object({
    /** The resource indicator (RFC 8707): an absolute URI, the `aud` of tokens minted for it. */
    id: z
      .string()
      .url()
      .max(2048)
      .describe("The resource indicator (RFC 8707): an absolute URI, the `aud` of tokens minted for it."),
    /** Every scope this resource understands; approvals and exchanges may only pick from these. */
    scopes: z
      .array(scopeToken)
      .min(1)
      .max(256)
      .describe("Every scope this resource understands; approvals and exchanges may only pick from these."),
    /** Upper bound on the lifetime of tokens for this resource, in seconds. Default: `tokens.max_ttl_seconds`. */
    max_ttl_seconds: z
      .number()
      .int()
      .min(1)
      .max(86_400)
      .optional()
      .describe(
        "Upper bound on the lifetime of tokens for this resource, in seconds. Default: `tokens.max_ttl_seconds`.",
      ),
    /** Default rate limit written into tokens for this resource (`rate_limit` claim). Optional. */
    rate_limit: rateLimitSchema
      .optional()
      .describe("Default rate limit written into tokens for this resource (`rate_limit` claim). Optional."),
    /**
     * Labels Cedar policies can read as the resource's tags (`resource.hasTag("department")`,
     * `resource.getTag("department")`), e.g. `{"department": "finance"}`. Optional; at most 32.
     */
    tags: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "tag names: 1 to 64 of A-Z a-z 0-9 _ . : -"),
        z.string().max(256),
      )
      .refine((tags) => Object.keys(tags).length <= 32, { message: "at most 32 tags" })
      .optional()
      .describe(
        'Labels Cedar policies can read as the resource\'s tags (`resource.hasTag("department")`, `resource.getTag("department")`), e.g. `{"department": "finance"}`. Optional; at most 32.',
      ),
    /**
     * Whether MCP clients may ask for tokens for this resource with the `client_credentials` grant and
     * `resource` naming it (the MCP OAuth client credentials extension, SEP-1046). Default false. Such a
     * token is still issued only under an approved approval of that agent for this resource and scope
     * without a subject (`sub` = `client_id`); without one a pending approval is recorded for a human.
     */
    client_credentials: z
      .boolean()
      .optional()
      .describe("Allow the client_credentials grant with resource = this resource (under an approval)."),
    /**
     * The scopes a `client_credentials` request for this resource that names no `scope` asks for; each
     * one of `scopes`. Default none: such a request must name its scopes.
     */
    default_scopes: z
      .array(scopeToken)
      .max(256)
      .optional()
      .describe("Scopes of a client_credentials request for this resource that names no scope."),
  })
  .strict()
  .superRefine((resource, ctx) => {
    resource.default_scopes?.forEach((scope, i) => {
      if (!resource.scopes.includes(scope)) {
        ctx.addIssue({ code: "custom", path: ["default_scopes", i], message: "is not one of scopes" });
      }
    });
  });

const jwkSchema = z.record(z.string(), z.unknown());

const clientSchema = z
  .object({
    /** The OAuth client identifier of an agent. */
    client_id: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9._~:@-]+$/, "may contain letters, digits and . _ ~ : @ - only")
      .describe("The OAuth client identifier of an agent."),
    /**
     * Shared secret for `client_secret_basic` / `client_secret_post`. Security: at least 32 characters;
     * there is no default. Prefer `private_key_jwt` in production.
     */
    client_secret: z
      .string()
      .min(32, "must be at least 32 characters")
      .max(512)
      .optional()
      .describe(
        "Shared secret for `client_secret_basic` / `client_secret_post`. Security: at least 32 characters; there is no default. Prefer `private_key_jwt` in production.",
      ),
    /** How the client authenticates at the token endpoint. */
    token_endpoint_auth_method: z
      .enum(["client_secret_basic", "client_secret_post", "private_key_jwt"])
      .describe("How the client authenticates at the token endpoint."),
    /** Public keys for `private_key_jwt` (RFC 7523). Public parts only. */
    jwks: z
      .object({ keys: z.array(jwkSchema).max(16).describe("Public JWKs (RFC 7517), at most 16.") })
      .strict()
      .optional()
      .describe("Public keys for `private_key_jwt` (RFC 7523). Public parts only."),
    /** Optional display name used in the approval console and logs. */
    client_name: z
      .string()
      .max(200)
      .optional()
      .describe("Optional display name used in the approval console and logs."),
  })
  .strict()
  .superRefine((client, ctx) => {
    const needsSecret = client.token_endpoint_auth_method !== "private_key_jwt";
    if (needsSecret && client.client_secret === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["client_secret"],
        message: `is required for ${client.token_endpoint_auth_method}`,
      });
    }
    if (!needsSecret && (client.jwks === undefined || client.jwks.keys.length === 0)) {
      ctx.addIssue({
        code: "custom",
        path: ["jwks"],
        message: "must hold at least one key for private_key_jwt",
      });
    }
    if (client.jwks) {
      client.jwks.keys.forEach((key, i) => {
        if (["d", "p", "q", "dp", "dq", "qi", "k"].some((member) => member in key)) {
          ctx.addIssue({ code: "custom", path: ["jwks", "keys", i], message: "must be a public key" });
        }
      });
    }
  });

/**
 * What an identity token from a trusted issuer may be presented as: a subject or actor token of the
 * token exchange, an approver's credential at the approval API, or an ID-JAG (Identity Assertion JWT
 * Authorization Grant) redeemed with the `jwt-bearer` grant.
 */
export const TOKEN_USAGES = ["subject", "actor", "approver", "id_jag"] as const;

/**
 * Default, and largest allowed, `trusted_issuers[].max_token_age_seconds` of an `id_jag` entry: an
 * ID-JAG is a short-lived grant, and its `jti` is remembered until it expires.
 */
export const DEFAULT_ID_JAG_MAX_AGE_SECONDS = 300;
export const MAX_ID_JAG_MAX_AGE_SECONDS = 3600;

/** Default of `trusted_issuers[].approver_max_age_seconds`: 15 minutes. */
export const DEFAULT_APPROVER_MAX_AGE_SECONDS = 900;

/**
 * One trusted issuer entry: tokens from `issuer` that carry `audience` are accepted for `usage`.
 * The same `issuer` may appear in several entries with distinct audiences (one IdP, two audiences).
 * Security: an entry with `approver` usage may have no other usage, so a token an agent holds (a
 * subject or actor token) can never be accepted as a human's approval credential; an entry with `id_jag`
 * usage may have no other usage either, so an ID-JAG (a one-time grant bound to one client) is never
 * accepted as a subject token, and its audience is this STS's issuer (checked when the config loads).
 */
const trustedIssuerSchema = z
  .object({
    /** The `iss` value of the issuer's JWTs. */
    issuer: z.string().min(1).max(2048).describe("The `iss` value of the issuer's JWTs."),
    /** Where its public keys are fetched (cached, refetched on unknown `kid`). One of `jwks_uri` / `jwks`. */
    jwks_uri: httpsOrLoopbackUrl
      .optional()
      .describe(
        "Where its public keys are fetched (cached, refetched on unknown `kid`). One of `jwks_uri` / `jwks`. An https URL (http only for 127.0.0.1, localhost and [::1]).",
      ),
    /** Static public keys instead of `jwks_uri`. */
    jwks: z
      .object({ keys: z.array(jwkSchema).max(32).describe("Public JWKs (RFC 7517), at most 32.") })
      .strict()
      .optional()
      .describe("Static public keys instead of `jwks_uri`."),
    /**
     * The `aud` its tokens must carry to be accepted through this entry. A token is accepted only
     * through the one entry of its issuer whose audience it carries; a token carrying the audiences of
     * two entries is refused.
     */
    audience: z
      .string()
      .min(1)
      .max(2048)
      .describe(
        "The `aud` its tokens must carry to be accepted through this entry. A token is accepted only through the one entry of its issuer whose audience it carries; a token carrying the audiences of two entries is refused.",
      ),
    /**
     * What its tokens may be used as: subject tokens, actor tokens (whose `sub` becomes `act`, and whose
     * `act` claims are carried), approver (human) credentials, or `id_jag`: Identity Assertion JWT
     * Authorization Grants redeemed with the `jwt-bearer` grant (MCP enterprise-managed authorization).
     * `approver` and `id_jag` may not be combined with another usage: list the IdP once per usage, with a
     * separate audience for approvers; an `id_jag` entry's audience is this STS's `issuer`.
     */
    usage: z
      .array(z.enum(TOKEN_USAGES))
      .min(1)
      .max(TOKEN_USAGES.length)
      .describe(
        "What its tokens may be used as: subject tokens, actor tokens (whose `sub` becomes `act`, and whose `act` claims are carried), approver (human) credentials, or `id_jag`: Identity Assertion JWT Authorization Grants (`typ` `oauth-id-jag+jwt`) redeemed with the `jwt-bearer` grant (MCP enterprise-managed authorization). `approver` and `id_jag` may not be combined with another usage: list the IdP once per usage, with a separate audience for approvers; an `id_jag` entry's `audience` must be this STS's `issuer`.",
      ),
    /** For `approver` usage: a claim that must contain (or equal) a value, e.g. roles ∋ approver. */
    approver_claim: z
      .object({
        name: z.string().min(1).max(128).describe("The claim's name, e.g. `roles`."),
        value: z
          .string()
          .min(1)
          .max(256)
          .describe(
            "The value the claim must hold: equal to it, one of its space-separated words, or an element of its array, e.g. `approver`.",
          ),
      })
      .strict()
      .optional()
      .describe("For `approver` usage: a claim that must contain (or equal) a value, e.g. roles ∋ approver."),
    /**
     * For `approver` usage: the oldest approver token accepted, in seconds, measured from its `iat` and,
     * when present, its `auth_time` (a refreshed token has a new `iat` but keeps the old `auth_time`).
     * Default 900. Security: a stolen or forgotten approver credential stops deciding after this long.
     */
    approver_max_age_seconds: z
      .number()
      .int()
      .min(1)
      .max(86_400)
      .optional()
      .describe(
        "For `approver` usage: the oldest approver token accepted, in seconds, measured from its `iat` and, when present, its `auth_time` (a refreshed token has a new `iat` but keeps the old `auth_time`). Default 900. Security: a stolen or forgotten approver credential stops deciding after this long.",
      ),
    /**
     * For `approver` usage: refuse approver tokens without an `auth_time` claim (OIDC Core §2), so the
     * age of the human's sign-in, not only of the token, is always known. Default false.
     */
    require_auth_time: z
      .boolean()
      .optional()
      .describe(
        "For `approver` usage: refuse approver tokens without an `auth_time` claim (OIDC Core §2), so the age of the human's sign-in, not only of the token, is always known. Default false.",
      ),
    /**
     * Refuse tokens through this entry whose `iat` is older than this many seconds, and tokens without
     * `iat`, whatever their `exp` says (e.g. long-lived workload identities). Unset: only `exp` applies.
     * For an `id_jag` entry: default 300, at most 3600, and an ID-JAG whose `exp` lies further than this
     * after its `iat` is refused too.
     */
    max_token_age_seconds: z
      .number()
      .int()
      .min(1)
      .max(31_536_000)
      .optional()
      .describe(
        "Refuse tokens through this entry whose `iat` is older than this many seconds, and tokens without `iat`, whatever their `exp` says (e.g. long-lived workload identities). Unset: only `exp` applies. For an `id_jag` entry: default 300, at most 3600, and an ID-JAG whose `exp` lies further than this after its `iat` is refused too.",
      ),
    /** Accepted signature algorithms. Never `none` or HMAC. Default: ES256, RS256, PS256, EdDSA. */
    algorithms: z
      .array(
        z.enum(["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]),
      )
      .min(1)
      .optional()
      .describe("Accepted signature algorithms. Never `none` or HMAC. Default: ES256, RS256, PS256, EdDSA."),
  })
  .strict()
  .superRefine((entry, ctx) => {
    if ((entry.jwks_uri === undefined) === (entry.jwks === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["jwks_uri"],
        message: "exactly one of jwks_uri and jwks is required",
      });
    }
    const approver = entry.usage.includes("approver");
    if (approver && entry.usage.length > 1) {
      ctx.addIssue({
        code: "custom",
        path: ["usage"],
        message:
          "approver may not be combined with another usage: a human's approval credential must have its own " +
          "audience, never one an agent's subject or actor token carries (list the issuer twice, with a " +
          "separate audience for approvers)",
      });
    }
    if (entry.usage.includes("id_jag")) {
      if (entry.usage.length > 1) {
        ctx.addIssue({
          code: "custom",
          path: ["usage"],
          message:
            "id_jag may not be combined with another usage: an ID-JAG is a one-time grant bound to one client, " +
            "never a subject, actor or approver token (list the issuer once per usage)",
        });
      }
      if ((entry.max_token_age_seconds ?? 0) > MAX_ID_JAG_MAX_AGE_SECONDS) {
        ctx.addIssue({
          code: "custom",
          path: ["max_token_age_seconds"],
          message: `an id_jag entry accepts ID-JAGs for at most ${MAX_ID_JAG_MAX_AGE_SECONDS} seconds`,
        });
      }
    }
    if (new Set(entry.usage).size !== entry.usage.length) {
      ctx.addIssue({ code: "custom", path: ["usage"], message: "names a usage twice" });
    }
    if (!approver) {
      for (const key of ["approver_claim", "approver_max_age_seconds", "require_auth_time"] as const) {
        if (entry[key] !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: "applies only to an entry with approver usage",
          });
        }
      }
    }
  });

/**
 * Issuance rate and burst limits at the token endpoint (token exchange), per agent and per approval.
 * Each is a window of `burst / per_second` seconds admitting `burst` issuances: at most `burst` at once,
 * `per_second` sustained. Shared across STS instances through Postgres (PGlite: in-process only).
 * The defaults only stop runaway loops (an agent chaining tools may legitimately mint dozens of tokens a
 * second). Security: these bound how fast a compromised agent can mint tokens; tighten them to real needs.
 */
const issuanceLimitsSchema = z
  .object({
    /** Per agent (`client_id`), over all its approvals. Default 100 per second, burst 200. */
    per_client: rateLimitSchema
      .default({ per_second: 100, burst: 200 })
      .describe("Per agent (`client_id`), over all its approvals. Default 100 per second, burst 200."),
    /** Per approval. Default 50 per second, burst 100. */
    per_approval: rateLimitSchema
      .default({ per_second: 50, burst: 100 })
      .describe("Per approval. Default 50 per second, burst 100."),
    /**
     * Per agent (`client_id`), for the `client_credentials` grant (the approval API credential, and MCP
     * resources) and the `jwt-bearer` grant (ID-JAGs), one bucket for all: past it
     * 429 `slow_down` with `Retry-After`. Counted after client authentication, so nobody but the agent
     * can spend its bucket. Default 10 per second, burst 20. Security: an agent needs one such token per
     * few minutes; a higher rate only lets a hostile or looping agent make the STS sign without end.
     */
    client_credentials: rateLimitSchema
      .default({ per_second: 10, burst: 20 })
      .describe(
        "Per agent (`client_id`), for the `client_credentials` grant (the approval API credential, and MCP resources) and the `jwt-bearer` grant (ID-JAGs), one bucket for all: past it 429 `slow_down` with `Retry-After`. Counted after client authentication, so nobody but the agent can spend its bucket. Default 10 per second, burst 20. Security: an agent needs one such token per few minutes; a higher rate only lets a hostile or looping agent make the STS sign without end.",
      ),
  })
  .strict();

/** The revocation feed (docs/reference.md#the-revocation-feed) and its server-sent-events push variant. */
const revocationsSchema = z
  .object({
    /**
     * How often approval expiry is swept into the feed (reason `expired`) and the feed compacted, in
     * seconds. Default 5. Every instance sweeps; the sweep is idempotent. An expiry reaches gateways at
     * most this late.
     */
    sweep_interval_seconds: z
      .number()
      .min(0.05)
      .max(3600)
      .default(5)
      .describe(
        "How often approval expiry is swept into the feed (reason `expired`), in seconds. Default 5. Every instance sweeps; the sweep is idempotent. An expiry reaches gateways at most this late.",
      ),
    /**
     * How often each instance re-reads the feed even without a NOTIFY (a safety net for a lost LISTEN
     * connection), in seconds. Default 2.
     */
    poll_interval_seconds: z
      .number()
      .min(0.05)
      .max(3600)
      .default(2)
      .describe(
        "How often each instance re-reads the feed even without a NOTIFY (a safety net for a lost LISTEN connection), in seconds. Default 2.",
      ),
    /** Interval of comment heartbeats on open streams (keeps proxies from timing them out), in seconds. Default 15. */
    stream_heartbeat_seconds: z
      .number()
      .min(0.05)
      .max(3600)
      .default(15)
      .describe(
        "Interval of comment heartbeats on open streams (keeps proxies from timing them out), in seconds. Default 15.",
      ),
    /**
     * Most concurrent `GET /revocations/stream` subscribers per instance; beyond it 503
     * `temporarily_unavailable` (reason `stream_subscribers_reached`) with `Retry-After: 5`. Default 1000.
     */
    max_stream_subscribers: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(1000)
      .describe(
        "Most concurrent `GET /revocations/stream` subscribers per instance; beyond it 503 temporarily_unavailable (reason stream_subscribers_reached) with Retry-After: 5. Default 1000.",
      ),
    /**
     * Most concurrent streams per client address (an IPv6 address counts as its /64); beyond it 429
     * `too_many_streams` (reason `streams_per_address_reached`) with `Retry-After: 10`. Default 8.
     * Security: an anonymous caller cannot take every slot of `max_stream_subscribers` and push every
     * gateway back to polling.
     */
    max_streams_per_address: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(8)
      .describe(
        "Most concurrent revocation streams per client address (IPv6 by /64); beyond it 429 too_many_streams (reason streams_per_address_reached) with Retry-After: 10. Default 8.",
      ),
    /**
     * Whether the client address is taken from `X-Forwarded-For`: `false` (default: the connection's
     * peer address), `true` (one reverse proxy in front: its last entry) or the number of proxies in
     * front (the entry that many from the right). Security: set it only behind proxies that append the
     * peer address to `X-Forwarded-For`; otherwise any caller chooses its address and its slots.
     */
    trust_proxy: z
      .union([z.boolean(), z.number().int().min(1).max(16)])
      .default(false)
      .describe(
        "Take the client address from X-Forwarded-For: false (default), true (one proxy) or the number of proxies in front.",
      ),
    /**
     * Most entries replayed to one resuming stream subscriber (each instance holds this many of the
     * newest entries in memory and replays from there, never from the database). A subscriber further
     * behind gets 410 `cursor_reset` and reads `GET /revocations` instead. Default 1000.
     */
    max_replay_entries: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(1000)
      .describe(
        "Most entries replayed to one resuming stream subscriber; further behind gets 410 cursor_reset. Default 1000.",
      ),
    /**
     * Most stream replays per client address and minute, in bursts of `max_streams_per_address`, per
     * instance. A replay is a resumption that costs the instance work: one with a backlog to replay from
     * memory, or one whose cursor is ahead of what the instance has read or of another epoch (the
     * instance re-reads the feed from the database before answering). Beyond it 429 `too_many_streams`
     * (reason `replay_rate_limited`) with `Retry-After` (seconds until one is available); a refused
     * re-read reads nothing. Default 60. Security: a caller reconnecting in a loop, to be replayed
     * again and again or to make the instance read the database again and again, is held to this rate,
     * however many slots it has.
     */
    max_replays_per_address_per_minute: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(60)
      .describe(
        "Stream replays per client address and minute, in bursts of max_streams_per_address, per instance. A replay is resuming with a backlog, or with a cursor ahead of the instance's head or of another epoch (the instance re-reads the feed). Beyond it 429 too_many_streams (reason replay_rate_limited) with Retry-After. Default 60.",
      ),
    /**
     * Most `GET /revocations` reads per client address (IPv6 by /64, see `trust_proxy`) per fixed window
     * of 60 seconds; beyond it 429 `slow_down` (reason `feed_rate_limited`) with `Retry-After`. Counted
     * per instance, for at most 100 000 addresses at once. Default 600: ten gateways behind one address
     * polling every second, each paging through a few pages. Security: the feed is anonymous and each
     * read costs the database; one caller polling in a loop is held to this rate.
     */
    max_feed_reads_per_address_per_minute: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(600)
      .describe(
        "Most GET /revocations reads per client address (IPv6 by /64) per 60-second window, per instance; beyond it 429 slow_down (reason feed_rate_limited) with Retry-After. Default 600.",
      ),
    /**
     * How long a feed entry is kept after the last token of its approval expired, in seconds; then it is
     * compacted away. Default 300. Security: must be at least the largest clock tolerance any gateway
     * allows (`clockToleranceSeconds`, 5 by default), or a gateway whose clock lags could accept a token
     * of a revoked approval whose entry is already gone.
     */
    compaction_grace_seconds: z
      .number()
      .int()
      .min(30)
      .max(86_400)
      .default(300)
      .describe(
        "Seconds a feed entry is kept after its approval's last token expired, then compacted. Default 300.",
      ),
  })
  .strict();

/**
 * Bounds on what one agent can make the STS store, list and send through `POST /approvals`, so a hostile
 * or looping agent cannot bury other agents' requests, grow the database or flood webhook receivers.
 */
const approvalsSchema = z
  .object({
    /**
     * Most pending (undecided, unexpired) approvals one agent (`client_id`) may have; past it
     * `POST /approvals` answers 429 `too_many_pending` with `Retry-After` (reason `pending_cap_reached`).
     * Held across instances (counted under a per-agent lock in the insert's transaction). Default 50.
     * Security: a human decides each request; more than a few dozen outstanding is a loop or an attack.
     */
    max_pending_per_agent: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .default(50)
      .describe(
        "Most pending approvals one agent may have; past it POST /approvals answers 429 too_many_pending with Retry-After. Default 50.",
      ),
    /**
     * Per agent, how fast it may call `POST /approvals`: a window of `burst / per_second` seconds admitting
     * `burst` requests (like `issuance_limits`); past it 429 `slow_down` with `Retry-After` (reason
     * `request_rate_limited`). Counted after authentication, before the body is read, so only the agent
     * spends its bucket and malformed requests count too. Shared across instances. Default 1 per second,
     * burst 10.
     */
    request_rate_limit: rateLimitSchema
      .default({ per_second: 1, burst: 10 })
      .describe(
        "Per agent, how fast it may call POST /approvals (counted before the body is read); past it 429 slow_down with Retry-After. Default 1 per second, burst 10.",
      ),
    /**
     * Per agent, how many `approval.requested` webhook events are sent one by one: at most `events` per
     * window of `window_seconds`; the window's further requests are folded into one
     * `approval.requested_summary` event per webhook, sent when the window ends. Default 10 per 300 s.
     * Security: bounds the outbox rows and the POSTs one agent can cause to `11` per webhook per window.
     */
    webhook_requested_limit: z
      .object({
        /** Events sent one by one per window. An integer from 1 to 10 000. */
        events: z
          .number()
          .int()
          .min(1)
          .max(10_000)
          .describe("Events sent one by one per window (1 to 10 000)."),
        /** The window, in seconds. An integer from 1 to 86 400. */
        window_seconds: z.number().int().min(1).max(86_400).describe("The window, in seconds (1 to 86 400)."),
      })
      .strict()
      .default({ events: 10, window_seconds: 300 })
      .describe(
        "Per agent, approval.requested webhook events sent one by one per window; the rest fold into one approval.requested_summary. Default 10 per 300 s.",
      ),
  })
  .strict();

/**
 * Retention: what is kept for how long, and the job that prunes the rest (docs/retention.md). Every
 * instance runs the job every `interval_seconds`; each run does bounded work (partition DDL, then at most
 * `max_batches_per_run` deletes of `batch_size` rows per table) and is safe alongside other instances'.
 * `audit_events` and `issued_tokens` are partitioned by UTC day: a day is dropped whole once all of it
 * is past its retention, so rows are kept at least their retention and at most one day more.
 * Security: the audit trail is evidence; export it (`countersign audit export`) before it is pruned if
 * you must keep it longer.
 */
const retentionSchema = z
  .object({
    /** How often the retention job runs, in seconds. Default 10. */
    interval_seconds: z
      .number()
      .min(0.05)
      .max(86_400)
      .default(10)
      .describe("How often the retention job runs on each instance, in seconds. Default 10."),
    /** How long audit events are kept, in days (from the event). Default 90. */
    audit_events_days: z
      .number()
      .int()
      .min(1)
      .max(36_500)
      .default(90)
      .describe(
        "How long audit events are kept, in days from the event (a whole UTC day is dropped once all of it is past this). Default 90. Security: export the audit trail (`countersign audit export`) first if you must keep it longer.",
      ),
    /**
     * How long an issued token's record is kept after the token expires (`exp`), in seconds. Default
     * 86 400 (one day). The token itself cannot be presented after `exp`.
     */
    issued_tokens_grace_seconds: z
      .number()
      .int()
      .min(0)
      .max(31_536_000)
      .default(86_400)
      .describe(
        "How long an issued token's record is kept after the token's `exp`, in seconds. Default 86400 (one day). The token itself cannot be presented after `exp`.",
      ),
    /** How long a delivered or abandoned webhook delivery is kept, in days. Default 7. Pending ones stay. */
    webhook_deliveries_days: z
      .number()
      .int()
      .min(1)
      .max(3650)
      .default(7)
      .describe(
        "How long a delivered or abandoned webhook delivery is kept, in days. Default 7. Pending deliveries are kept until delivered or abandoned.",
      ),
    /**
     * How long an approval is kept after its `expires_at`, in days. Default 90 (the audit events'
     * default, so an approval's record and its trail go together). One whose token records or revocation
     * feed entry are still kept stays until they go. Bounds the `approvals` table to what agents may
     * request in `approvals_days` plus the longest `ttl_seconds`.
     */
    approvals_days: z
      .number()
      .int()
      .min(1)
      .max(36_500)
      .default(90)
      .describe(
        "How long an approval is kept after it expires, in days. Default 90 (as audit events, so an approval's record and its audit trail go together). An approval whose token records or revocation feed entry are still kept stays until they are gone. Security: this is what bounds the approvals table: an agent can request approvals at its `approvals.request_rate_limit`, and expired ones would otherwise stay forever.",
      ),
    /**
     * How many days of daily partitions exist ahead of today, in days. Default 7. Rows outside every
     * partition go to a default partition (and are moved out when their day's partition is created),
     * so a job that stopped running loses nothing; it only makes pruning those rows slower.
     */
    partitions_ahead_days: z
      .number()
      .int()
      .min(1)
      .max(60)
      .default(7)
      .describe(
        "How many days of daily partitions of `audit_events` and `issued_tokens` exist ahead of today. Default 7. Rows of a day without a partition go to a default partition and move into their day's partition when it is created.",
      ),
    /** Rows one batched delete removes (default partitions, oidc-provider rows, counters, deliveries). Default 10 000. */
    batch_size: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(10_000)
      .describe(
        "Rows one batched delete removes (oidc-provider rows, issuance-limit counters, webhook deliveries, default partitions). Default 10000.",
      ),
    /** Most batched deletes per table per run. Default 10. */
    max_batches_per_run: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .default(10)
      .describe("Most batched deletes per table per run of the retention job. Default 10."),
  })
  .strict();

/** Default of every retention key (see {@link retentionSchema}). */
export const DEFAULT_RETENTION = {
  interval_seconds: 10,
  audit_events_days: 90,
  issued_tokens_grace_seconds: 86_400,
  webhook_deliveries_days: 7,
  approvals_days: 90,
  partitions_ahead_days: 7,
  batch_size: 10_000,
  max_batches_per_run: 10,
} as const;

/** The events a webhook can subscribe to (one per approval API decision, docs/reference.md#the-approval-api-routes). */
export const WEBHOOK_EVENT_TYPES = [
  "approval.requested",
  "approval.approved",
  "approval.denied",
  "approval.revoked",
] as const;

/**
 * A webhook: a signed JSON notification POSTed when an approval is requested or decided (so a chat bot
 * can ping the human). Delivery is at least once, retried with exponential backoff; receivers verify
 * `Countersign-Signature` (see `sts/src/webhooks/signature.ts`) and deduplicate by `Countersign-Event-Id`.
 */
const webhookSchema = z
  .object({
    /**
     * Where events are POSTed. An https URL (http only for 127.0.0.1, localhost and [::1]). Redirects
     * are not followed. Security: only the URL's origin and path are logged, never its query.
     */
    url: httpsOrLoopbackUrl.describe(
      "Where events are POSTed. An https URL (http only for 127.0.0.1, localhost and [::1]). Redirects are not followed. Security: only the URL's origin and path are logged, never its query.",
    ),
    /**
     * The HMAC-SHA256 key of `Countersign-Signature`, shared with the receiver. Security: at least 32
     * characters, no default, never logged; generate it randomly (e.g. `openssl rand -base64 32`).
     */
    secret: z
      .string()
      .min(32, "must be at least 32 characters")
      .max(512)
      .describe(
        "The HMAC-SHA256 key of `Countersign-Signature`, shared with the receiver. Security: at least 32 characters, no default, never logged; generate it randomly (e.g. `openssl rand -base64 32`).",
      ),
    /** The events this webhook receives. Default: all of {@link WEBHOOK_EVENT_TYPES}. */
    events: z
      .array(z.enum(WEBHOOK_EVENT_TYPES))
      .min(1)
      .default([...WEBHOOK_EVENT_TYPES])
      .describe("The events this webhook receives. Default: all four."),
  })
  .strict();

/** How the STS answers MCP clients that ask for tokens with client_credentials or an ID-JAG. */
const mcpSchema = z
  .object({
    /**
     * After a human denies or revokes the approval recorded for an MCP client's (client, resource,
     * scope), how long the same request is answered `access_denied` and records no new pending
     * approval, in seconds. Default 600. Security: a client retrying in a loop cannot wear the human
     * down with a stream of new requests.
     */
    request_cooldown_seconds: z
      .number()
      .int()
      .min(0)
      .max(2_592_000)
      .default(600)
      .describe("Seconds after a deny or revoke during which the same request records no new approval."),
  })
  .strict();

/** The JSON config file. */
export const configFileSchema = z
  .object({
    /** The issuer identifier (`iss`) and public base URL. Default: `http://<HOST>:<PORT>`. */
    issuer: z
      .string()
      .url()
      .max(2048)
      .optional()
      .describe("The issuer identifier (`iss`) and public base URL. Default: `http://<HOST>:<PORT>`."),
    tokens: z
      .object({
        /** Lifetime of minted access tokens when nothing narrower applies, in seconds. Default 300. */
        default_ttl_seconds: z
          .number()
          .int()
          .min(1)
          .max(86_400)
          .default(300)
          .describe(
            "Lifetime of minted access tokens when nothing narrower applies, in seconds. Default 300.",
          ),
        /** Hard cap on any minted access token's lifetime, in seconds. Default 900. */
        max_ttl_seconds: z
          .number()
          .int()
          .min(1)
          .max(86_400)
          .default(900)
          .describe("Hard cap on any minted access token's lifetime, in seconds. Default 900."),
        /** JWS algorithm of minted tokens. Default ES256. */
        signing_alg: z
          .enum(["ES256", "ES384", "PS256", "EdDSA"])
          .default("ES256")
          .describe("JWS algorithm of minted tokens. Default ES256."),
        /**
         * Longest delegation chain (nested `act`, RFC 8693 §4.1) a minted token may carry: how many
         * sub-agent hops are allowed. Default 4.
         */
        max_delegation_depth: z
          .number()
          .int()
          .min(1)
          .max(8)
          .default(4)
          .describe(
            "Longest delegation chain (nested `act`, RFC 8693 §4.1) a minted token may carry: how many sub-agent hops are allowed. Default 4.",
          ),
      })
      .strict()
      .default({
        default_ttl_seconds: 300,
        max_ttl_seconds: 900,
        signing_alg: "ES256",
        max_delegation_depth: 4,
      })
      .refine((t) => t.default_ttl_seconds <= t.max_ttl_seconds, {
        message: "default_ttl_seconds must not exceed max_ttl_seconds",
        path: ["default_ttl_seconds"],
      })
      .describe("Minted access tokens. `default_ttl_seconds` may not exceed `max_ttl_seconds`."),
    /** Signing-key lifecycle (docs/reference.md#discovery-and-keys: `/jwks` shows next, current and previous keys). */
    keys: z
      .object({
        /**
         * Rotate the signing key automatically once it has signed for this long, in seconds (at least
         * 60). Unset: rotate only with `countersign keys rotate`. The rotation happens once across
         * instances.
         */
        rotation_interval_seconds: z
          .number()
          .int()
          .min(60)
          .optional()
          .describe(
            "Rotate the signing key automatically once it has signed for this long, in seconds (at least 60). Unset: rotate only with `countersign keys rotate`. The rotation happens once across instances.",
          ),
        /**
         * How often each instance reloads the key set (to pick up a rotation made elsewhere) and retires
         * old keys, in seconds. Default 10. A new key is announced in `/jwks` a full rotation before it
         * signs, so this only bounds how long an instance keeps signing with the demoted key.
         */
        refresh_interval_seconds: z
          .number()
          .positive()
          .max(3600)
          .default(10)
          .describe(
            "How often each instance reloads the key set (to pick up a rotation made elsewhere) and retires old keys, in seconds. Default 10. A new key is announced in `/jwks` a full rotation before it signs, so this only bounds how long an instance keeps signing with the demoted key.",
          ),
      })
      .strict()
      .default({ refresh_interval_seconds: 10 })
      .describe("Signing-key lifecycle: `/jwks` shows the next, current and previous keys."),
    /** The APIs tokens may be minted for (RFC 8707 resource indicators). */
    resources: z
      .array(resourceSchema)
      .max(1000)
      .default([])
      .describe("The APIs tokens may be minted for (RFC 8707 resource indicators)."),
    /** The agents (OAuth clients). */
    clients: z.array(clientSchema).max(10_000).default([]).describe("The agents (OAuth clients)."),
    /** Identity federation: issuers of subject, actor and approver JWTs. */
    trusted_issuers: z
      .array(trustedIssuerSchema)
      .max(64)
      .default([])
      .describe("Identity federation: issuers of subject, actor and approver JWTs."),
    /** Cedar policy files, relative to the config file. */
    policies: z
      .array(z.string().min(1).max(4096))
      .max(64)
      .default([])
      .describe("Cedar policy files, relative to the config file. None: `policies/default.cedar`."),
    /** Issuance rate and burst limits (token exchange and client_credentials). Defaults: see each key. */
    issuance_limits: issuanceLimitsSchema
      .default({
        per_client: { per_second: 100, burst: 200 },
        per_approval: { per_second: 50, burst: 100 },
        client_credentials: { per_second: 10, burst: 20 },
      })
      .describe(
        "Issuance rate and burst limits (token exchange and client_credentials), shared across instances through Postgres. Security: they bound how fast a compromised agent can mint tokens; tighten them to real needs.",
      ),
    /** Bounds on approval requests per agent (pending cap, request rate, webhook events). Defaults: see each key. */
    approvals: approvalsSchema
      .default({
        max_pending_per_agent: 50,
        request_rate_limit: { per_second: 1, burst: 10 },
        webhook_requested_limit: { events: 10, window_seconds: 300 },
      })
      .describe("Bounds on approval requests per agent: pending cap, request rate, webhook events."),
    /** Revocation feed and stream settings. Defaults: see each key. */
    revocations: revocationsSchema
      .default({
        sweep_interval_seconds: 5,
        poll_interval_seconds: 2,
        stream_heartbeat_seconds: 15,
        max_stream_subscribers: 1000,
        max_streams_per_address: 8,
        trust_proxy: false,
        max_replay_entries: 1000,
        max_replays_per_address_per_minute: 60,
        max_feed_reads_per_address_per_minute: 600,
        compaction_grace_seconds: 300,
      })
      .describe("Revocation feed and stream settings."),
    /** Retention of audit events, issued-token records and everything else that grows. Defaults: see each key. */
    retention: retentionSchema
      .default({ ...DEFAULT_RETENTION })
      .describe(
        "Retention: how long audit events, issued-token records, webhook deliveries and oidc-provider rows are kept, and the job on every instance that prunes the rest (docs/retention.md).",
      ),
    /** Signed notifications of approval events (requested, approved, denied, revoked). Default none. */
    webhooks: z
      .array(webhookSchema)
      .max(32)
      .default([])
      .describe(
        "Signed notifications of approval events (requested, approved, denied, revoked), delivered at least once with retries; receivers verify `Countersign-Signature` and deduplicate by `Countersign-Event-Id`. Default none.",
      ),
    /** OpenTelemetry tracing (through `@opentelemetry/api`; the operator registers the SDK). */
    tracing: z
      .object({
        /**
         * Whether a request's span continues the caller's W3C trace context (`traceparent`,
         * `tracestate`). Default false: the span starts a trace of its own and only links to the
         * caller's, so a caller cannot make a parent-based sampler record its requests. Security: true
         * only when every caller is trusted (e.g. behind a gateway that strips the headers).
         */
        trust_incoming_context: z
          .boolean()
          .default(false)
          .describe(
            "Whether a request's span continues the caller's W3C trace context (`traceparent`, `tracestate`). Default false: the span starts a trace of its own and only links to the caller's, so a caller cannot make a parent-based sampler record its requests. Security: true only when every caller is trusted (e.g. behind a gateway that strips the headers).",
          ),
      })
      .strict()
      .default({ trust_incoming_context: false })
      .describe(
        "OpenTelemetry tracing (spans through `@opentelemetry/api`; the operator registers the SDK).",
      ),
    /** MCP clients at the token endpoint. Defaults: see each key. */
    mcp: mcpSchema
      .default({ request_cooldown_seconds: 600 })
      .describe("MCP clients at the token endpoint (client_credentials for MCP resources)."),
    /**
     * Development mode: trusts the local development issuer (`countersign dev-token`). Security: never
     * in production. Default false in a config file, true for the built-in development default.
     */
    dev_mode: z
      .boolean()
      .default(false)
      .describe(
        "Development mode: trusts the local development issuer (`countersign dev-token`). Security: never in production. Default false in a config file, true for the built-in development default.",
      ),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.clients.forEach((client, i) => {
      if (seen.has(client.client_id)) {
        ctx.addIssue({ code: "custom", path: ["clients", i, "client_id"], message: "is a duplicate" });
      }
      seen.add(client.client_id);
    });
    const resources = new Set<string>();
    config.resources.forEach((resource, i) => {
      if (resources.has(resource.id)) {
        ctx.addIssue({ code: "custom", path: ["resources", i, "id"], message: "is a duplicate" });
      }
      resources.add(resource.id);
    });
    const issuerAudiences = new Set<string>();
    config.trusted_issuers.forEach((entry, i) => {
      const key = JSON.stringify([entry.issuer, entry.audience]);
      if (issuerAudiences.has(key)) {
        ctx.addIssue({
          code: "custom",
          path: ["trusted_issuers", i, "audience"],
          message: "another entry has the same issuer and audience: each (issuer, audience) may appear once",
        });
      }
      issuerAudiences.add(key);
    });
    const webhookUrls = new Set<string>();
    config.webhooks.forEach((webhook, i) => {
      if (webhookUrls.has(webhook.url)) {
        ctx.addIssue({ code: "custom", path: ["webhooks", i, "url"], message: "is a duplicate" });
      }
      webhookUrls.add(webhook.url);
    });
  });

/** The environment (docs/reference.md#environment-variables). */
export const envSchema = z.object({
  /** TCP port. Default 8080. */
  PORT: z.coerce.number().int().min(0).max(65_535).default(8080).describe("TCP port. Default 8080."),
  /** Listen address. Default 127.0.0.1 (loopback only). */
  HOST: z
    .string()
    .min(1)
    .max(255)
    .default("127.0.0.1")
    .describe("Listen address. Default 127.0.0.1 (loopback only)."),
  /** Path of the JSON config file; without it the development default is used. */
  COUNTERSIGN_CONFIG: z
    .string()
    .min(1)
    .optional()
    .describe("Path of the JSON config file; without it the development default is used."),
  /** `postgres://…`: use that Postgres. Without it: embedded PGlite in `COUNTERSIGN_DATA_DIR`. */
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
    .optional()
    .describe("`postgres://…`: use that Postgres. Without it: embedded PGlite in `COUNTERSIGN_DATA_DIR`."),
  /** Data directory of the embedded database and of a generated key-encryption key. Default `./.countersign`. */
  COUNTERSIGN_DATA_DIR: z
    .string()
    .min(1)
    .default("./.countersign")
    .describe(
      "Data directory of the embedded database and of a generated key-encryption key. Default `./.countersign`.",
    ),
  /**
   * Key-encryption key for signing keys at rest: 32 bytes, base64url. Required with `DATABASE_URL`
   * outside dev mode. When absent, one is generated into the data directory (mode 0600); outside dev
   * mode each start then warns (`kek_in_data_dir`). Security: keep it out of the data directory and its
   * backups. Generate one with
   * `node -e "console.log(require('node:crypto').randomBytes(32).toString('base64url'))"`.
   */
  COUNTERSIGN_KEK: z
    .string()
    .regex(/^[A-Za-z0-9_-]{43}$/, "must be 32 bytes encoded as base64url (43 characters)")
    .optional()
    .describe(
      "Key-encryption key for signing keys at rest: 32 bytes, base64url. Required with `DATABASE_URL` outside dev mode. When absent, one is generated into the data directory (mode 0600); outside dev mode each start then warns (`kek_in_data_dir`). Security: keep it out of the data directory and its backups. Generate one with `node -e \"console.log(require('node:crypto').randomBytes(32).toString('base64url'))\"`.",
    ),
  /** pino log level. Default info. */
  LOG_LEVEL: z
    .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
    .default("info")
    .describe("pino log level. Default info."),
  /**
   * Most log lines of one kind (same level, message, `event` and `reason`) per 10 seconds; the rest are
   * counted into one `log.repeats_suppressed` line when the 10 seconds end. Default 100.
   */
  LOG_MAX_REPEATS: z.coerce
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .default(100)
    .describe(
      "Most log lines of one kind (same level, message, event and reason) per 10 seconds; the rest are counted into one log.repeats_suppressed line when the 10 seconds end, so a caller looping on a refused request cannot grow the log one line per request. Default 100.",
    ),
  /** Size of the Postgres connection pool. Default 10. */
  DATABASE_POOL_SIZE: z.coerce
    .number()
    .int()
    .min(1)
    .max(200)
    .default(10)
    .describe("Size of the Postgres connection pool. Default 10."),
});

export type ConfigFile = z.infer<typeof configFileSchema>;
export type Env = z.infer<typeof envSchema>;
export type ResourceConfig = z.infer<typeof resourceSchema>;
export type ClientConfig = z.infer<typeof clientSchema>;
export type TrustedIssuerConfig = z.infer<typeof trustedIssuerSchema>;
export type RateLimit = z.infer<typeof rateLimitSchema>;
export type IssuanceLimitsConfig = z.infer<typeof issuanceLimitsSchema>;
export type RevocationsConfig = z.infer<typeof revocationsSchema>;
export type WebhookConfig = z.infer<typeof webhookSchema>;
export type ApprovalsConfig = z.infer<typeof approvalsSchema>;
export type WebhookRequestedLimit = ApprovalsConfig["webhook_requested_limit"];

export type McpConfig = z.infer<typeof mcpSchema>;
export type RetentionConfig = z.infer<typeof retentionSchema>;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];
