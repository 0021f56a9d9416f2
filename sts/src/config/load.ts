import { readFileSync } from "node:fs";
import path from "node:path";
import type { z } from "zod";
import { type ConfigFile, configFileSchema, type Env, envSchema } from "./schema.js";

/** The parsed, frozen configuration every part of the STS reads. */
export interface Config {
  /** Issuer identifier, without a trailing slash. */
  readonly issuer: string;
  readonly http: { readonly host: string; readonly port: number };
  readonly database: {
    readonly url: string | undefined;
    readonly dataDir: string;
    readonly poolSize: number;
  };
  /** Base64url key-encryption key from the environment, if given. */
  readonly kek: string | undefined;
  readonly logLevel: Env["LOG_LEVEL"];
  /** Most log lines of one kind per 10 seconds (`LOG_MAX_REPEATS`). */
  readonly logMaxRepeats: number;
  readonly tokens: ConfigFile["tokens"];
  readonly keys: ConfigFile["keys"];
  readonly resources: ConfigFile["resources"];
  readonly clients: ConfigFile["clients"];
  readonly trusted_issuers: ConfigFile["trusted_issuers"];
  /** Absolute paths of Cedar policy files. */
  readonly policies: readonly string[];
  readonly dev_mode: boolean;
  /** Issuance rate and burst limits at the token exchange. */
  readonly issuance_limits: ConfigFile["issuance_limits"];
  /** Revocation feed sweeper and stream settings. */
  readonly revocations: ConfigFile["revocations"];
  /** Signed notifications of approval events. */
  readonly webhooks: ConfigFile["webhooks"];
  /** How MCP clients are answered at the token endpoint (client_credentials, ID-JAG). */
  readonly mcp: ConfigFile["mcp"];
  /** Bounds on approval requests per agent. */
  readonly approvals: ConfigFile["approvals"];
  /** What is kept for how long, and the retention job. */
  readonly retention: ConfigFile["retention"];
  /** OpenTelemetry tracing: whether the caller's trace context is continued. */
  readonly tracing: ConfigFile["tracing"];
  /** Where the configuration came from: a file path or `development default`. */
  readonly source: string;
}

/** Thrown when the configuration or environment is invalid; `issues` names every bad key. */
export class ConfigError extends Error {
  static readonly code = "ERR_CONFIG_INVALID";
  readonly code = ConfigError.code;
  constructor(readonly issues: readonly string[]) {
    super(`invalid configuration:\n${issues.map((issue) => `  - ${issue}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

function formatIssues(prefix: string, error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const key = issue.path.reduce<string>(
      (acc, part) =>
        typeof part === "number" ? `${acc}[${part}]` : acc ? `${acc}.${String(part)}` : String(part),
      "",
    );
    return `${prefix}${key || "(root)"}: ${issue.message}`;
  });
}

/** The built-in development default, used when no config file is given (docs/reference.md#running-it). */
export function developmentDefault(): unknown {
  return {
    resources: [
      {
        id: "https://crm.example.test",
        scopes: ["crm:read", "crm:write"],
        max_ttl_seconds: 300,
        rate_limit: { per_second: 5, burst: 10 },
      },
    ],
    clients: [],
    trusted_issuers: [],
    policies: [],
    dev_mode: true,
  };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
}

/**
 * Parses the environment and the config file once, collecting every issue from both before failing.
 * @param env - usually `process.env`.
 * @param overrides - extra config file content merged over the file (tests use it).
 */
export function loadConfig(env: NodeJS.ProcessEnv, overrides?: Record<string, unknown>): Config {
  const issues: string[] = [];
  const envResult = envSchema.safeParse(env);
  if (!envResult.success) issues.push(...formatIssues("env ", envResult.error));

  let raw: unknown;
  let source = "development default";
  let baseDir = process.cwd();
  const configPath = env.COUNTERSIGN_CONFIG;
  if (configPath) {
    source = path.resolve(configPath);
    baseDir = path.dirname(source);
    try {
      raw = JSON.parse(readFileSync(source, "utf8"));
    } catch (cause) {
      const reason = cause instanceof SyntaxError ? `not valid JSON (${cause.message})` : "cannot be read";
      issues.push(`COUNTERSIGN_CONFIG: ${source} ${reason}`);
    }
  } else {
    raw = developmentDefault();
  }
  if (raw !== undefined && overrides) raw = { ...(raw as object), ...overrides };

  const fileResult = raw === undefined ? undefined : configFileSchema.safeParse(raw);
  if (fileResult && !fileResult.success) issues.push(...formatIssues("", fileResult.error));

  if (issues.length > 0 || !envResult.success || !fileResult?.success) throw new ConfigError(issues);
  const e = envResult.data;
  const file = fileResult.data;
  const issuer = (file.issuer ?? `http://${e.HOST.includes(":") ? `[${e.HOST}]` : e.HOST}:${e.PORT}`).replace(
    /\/+$/,
    "",
  );
  // An ID-JAG's `aud` is the issuer identifier of the authorization server that redeems it.
  const idJagAudiences = file.trusted_issuers
    .map((entry, i) => ({ entry, i }))
    .filter(({ entry }) => entry.usage.includes("id_jag") && entry.audience !== issuer);
  if (idJagAudiences.length > 0) {
    throw new ConfigError(
      idJagAudiences.map(
        ({ i }) =>
          `trusted_issuers[${i}].audience: an id_jag entry's audience must be this STS's issuer (${issuer})`,
      ),
    );
  }
  if (!file.dev_mode && e.DATABASE_URL && !e.COUNTERSIGN_KEK) {
    throw new ConfigError(["env COUNTERSIGN_KEK: is required with DATABASE_URL when dev_mode is false"]);
  }
  return deepFreeze({
    issuer,
    http: { host: e.HOST, port: e.PORT },
    database: {
      url: e.DATABASE_URL,
      dataDir: path.resolve(e.COUNTERSIGN_DATA_DIR),
      poolSize: e.DATABASE_POOL_SIZE,
    },
    kek: e.COUNTERSIGN_KEK,
    logLevel: e.LOG_LEVEL,
    logMaxRepeats: e.LOG_MAX_REPEATS,
    tokens: file.tokens,
    keys: file.keys,
    resources: file.resources,
    clients: file.clients,
    trusted_issuers: file.trusted_issuers,
    policies: file.policies.map((p) => path.resolve(baseDir, p)),
    dev_mode: file.dev_mode,
    issuance_limits: file.issuance_limits,
    revocations: file.revocations,
    webhooks: file.webhooks,
    mcp: file.mcp,
    approvals: file.approvals,
    retention: file.retention,
    tracing: file.tracing,
    source,
  });
}
