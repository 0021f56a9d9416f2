import type { JwsAlgorithm, RateLimit } from "../types.js";
import { compilePolicy, type McpPolicy, PolicyError } from "./policy.js";
import type { McpGatewayServerOptions } from "./server.js";

/**
 * The `countersign mcp-gateway` config file (JSON, snake_case like OAuth metadata). The policy keys
 * (`default_scopes`, `methods`, `tools`, `resources`, `prompts`, `unlisted`, `implied_scopes`) sit at the
 * top level. Secrets for the upstream are best read from the environment (`upstream_headers_env`).
 *
 * ```json
 * {
 *   "upstream": "http://127.0.0.1:9000/mcp",
 *   "resource": "https://tools.example.test/mcp",
 *   "issuer": "http://127.0.0.1:8080",
 *   "port": 8443,
 *   "default_scopes": ["tools:read"],
 *   "tools": { "send_email": ["mail:send"] },
 *   "revocation": { "url": "http://127.0.0.1:8080/revocations", "stream": true },
 *   "upstream_headers_env": { "authorization": "UPSTREAM_AUTHORIZATION" }
 * }
 * ```
 */
export type McpGatewayConfigFile = Record<string, unknown>;

const POLICY_KEYS = [
  "default_scopes",
  "methods",
  "tools",
  "resources",
  "prompts",
  "unlisted",
  "implied_scopes",
] as const;

const KEYS = new Set<string>([
  ...POLICY_KEYS,
  "upstream",
  "resource",
  "issuer",
  "port",
  "host",
  "authorization_servers",
  "scopes_supported",
  "resource_name",
  "resource_documentation",
  "jwks_uri",
  "algorithms",
  "clock_tolerance_seconds",
  "max_token_age_seconds",
  "rate_limit",
  "revocation",
  "dpop",
  "public_origin",
  "allowed_origins",
  "max_body_bytes",
  "body_timeout_ms",
  "max_json_depth",
  "max_batch_size",
  "upstream_timeout_ms",
  "max_open_exchanges",
  "max_open_exchanges_per_client",
  "max_connections",
  "upstream_headers",
  "upstream_headers_env",
  "identity_headers",
  "sessions",
  "realm",
]);

/** An invalid config file; `problems` names every bad key. */
export class McpGatewayConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid mcp-gateway config: ${problems.join("; ")}`);
    this.name = "McpGatewayConfigError";
  }
}

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

class Reader {
  readonly problems: string[] = [];

  string(source: Obj, key: string, path = key): string | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value === "") {
      this.problems.push(`${path} must be a non-empty string`);
      return undefined;
    }
    return value;
  }

  integer(source: Obj, key: string, path = key, min = 1): number | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      this.problems.push(`${path} must be an integer ≥ ${min}`);
      return undefined;
    }
    return value;
  }

  number(source: Obj, key: string, path: string): number | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      this.problems.push(`${path} must be a positive number`);
      return undefined;
    }
    return value;
  }

  boolean(source: Obj, key: string, path = key): boolean | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (typeof value !== "boolean") {
      this.problems.push(`${path} must be true or false`);
      return undefined;
    }
    return value;
  }

  strings(source: Obj, key: string, path = key): string[] | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || !value.every((item) => typeof item === "string" && item !== "")) {
      this.problems.push(`${path} must be an array of non-empty strings`);
      return undefined;
    }
    return value as string[];
  }

  object(source: Obj, key: string, known: readonly string[], path = key): Obj | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (!isObject(value)) {
      this.problems.push(`${path} must be an object`);
      return undefined;
    }
    for (const name of Object.keys(value)) {
      if (!known.includes(name)) this.problems.push(`${path}.${name} is not a known key`);
    }
    return value;
  }

  stringMap(source: Obj, key: string): Record<string, string> | undefined {
    const value = source[key];
    if (value === undefined) return undefined;
    if (!isObject(value) || !Object.values(value).every((item) => typeof item === "string")) {
      this.problems.push(`${key} must be an object of strings`);
      return undefined;
    }
    return value as Record<string, string>;
  }
}

/**
 * Turns a parsed config file into {@link McpGatewayServerOptions}. `env` supplies the values named
 * by `upstream_headers_env` (a missing variable is an error, never an empty header).
 *
 * @throws McpGatewayConfigError naming every bad key.
 */
export function mcpGatewayOptionsFromConfig(
  file: unknown,
  env: Readonly<Record<string, string | undefined>> = {},
): McpGatewayServerOptions {
  if (!isObject(file)) throw new McpGatewayConfigError(["the config must be a JSON object"]);
  const read = new Reader();
  for (const key of Object.keys(file)) if (!KEYS.has(key)) read.problems.push(`${key} is not a known key`);
  const upstream = read.string(file, "upstream");
  const resource = read.string(file, "resource");
  const issuer = read.string(file, "issuer");
  for (const [key, value] of [
    ["upstream", upstream],
    ["resource", resource],
    ["issuer", issuer],
  ] as const) {
    if (value === undefined && file[key] === undefined) read.problems.push(`${key} is required`);
  }
  const policy: Obj = {};
  for (const key of POLICY_KEYS) if (file[key] !== undefined) policy[key] = file[key];

  const options: Partial<McpGatewayServerOptions> & Obj = {};
  const set = (key: string, value: unknown) => {
    if (value !== undefined) options[key] = value;
  };
  set("upstream", upstream);
  set("resource", resource);
  set("issuer", issuer);
  set("port", read.integer(file, "port", "port", 0));
  set("host", read.string(file, "host"));
  set("authorizationServers", read.strings(file, "authorization_servers"));
  set("scopesSupported", read.strings(file, "scopes_supported"));
  set("resourceName", read.string(file, "resource_name"));
  set("resourceDocumentation", read.string(file, "resource_documentation"));
  set("publicOrigin", read.string(file, "public_origin"));
  set("allowedOrigins", read.strings(file, "allowed_origins"));
  set("maxBodyBytes", read.integer(file, "max_body_bytes"));
  set("bodyTimeoutMs", read.integer(file, "body_timeout_ms"));
  set("maxJsonDepth", read.integer(file, "max_json_depth"));
  set("maxBatchSize", read.integer(file, "max_batch_size"));
  set("upstreamTimeoutMs", read.integer(file, "upstream_timeout_ms"));
  set("maxOpenExchanges", read.integer(file, "max_open_exchanges"));
  set("maxOpenExchangesPerClient", read.integer(file, "max_open_exchanges_per_client"));
  set("maxConnections", read.integer(file, "max_connections"));
  set("identityHeaders", read.boolean(file, "identity_headers"));
  set("realm", read.string(file, "realm"));
  if (Object.keys(policy).length > 0) {
    try {
      compilePolicy(policy as McpPolicy, "");
    } catch (error) {
      if (!(error instanceof PolicyError)) throw error;
      read.problems.push(...error.problems);
    }
    options.policy = policy as McpPolicy;
  }

  const verifier: Obj = {};
  const put = (key: string, value: unknown) => {
    if (value !== undefined) verifier[key] = value;
  };
  put("jwksUri", read.string(file, "jwks_uri"));
  put("algorithms", read.strings(file, "algorithms") as JwsAlgorithm[] | undefined);
  put("clockToleranceSeconds", read.integer(file, "clock_tolerance_seconds", "clock_tolerance_seconds", 0));
  put("maxTokenAgeSeconds", read.integer(file, "max_token_age_seconds"));
  if (file.rate_limit === false) {
    put("rateLimit", false);
  } else {
    const rate = read.object(file, "rate_limit", ["per_second", "burst"]);
    if (rate !== undefined) {
      const perSecond = read.number(rate, "per_second", "rate_limit.per_second");
      const burst = read.integer(rate, "burst", "rate_limit.burst");
      if (perSecond === undefined || burst === undefined) {
        read.problems.push("rate_limit needs per_second and burst (or false)");
      } else {
        put("rateLimit", { perSecond, burst } satisfies RateLimit);
      }
    }
  }
  const revocation = read.object(file, "revocation", ["url", "interval_ms", "stream", "max_staleness_ms"]);
  if (revocation !== undefined) {
    const url = read.string(revocation, "url", "revocation.url");
    if (url === undefined) {
      read.problems.push("revocation.url is required");
    } else {
      const entry: Obj = { url };
      const interval = read.integer(revocation, "interval_ms", "revocation.interval_ms");
      const stream = read.boolean(revocation, "stream", "revocation.stream");
      const staleness = read.integer(revocation, "max_staleness_ms", "revocation.max_staleness_ms");
      if (interval !== undefined) entry.intervalMs = interval;
      if (stream !== undefined) entry.stream = stream;
      if (staleness !== undefined) entry.maxStalenessMs = staleness;
      put("revocation", entry);
    }
  }
  if (Object.keys(verifier).length > 0) options.verifier = verifier;

  const dpop = read.object(file, "dpop", ["required", "algorithms", "max_proof_age_seconds"]);
  if (dpop !== undefined) {
    const entry: Obj = {};
    const required = read.boolean(dpop, "required", "dpop.required");
    const algorithms = read.strings(dpop, "algorithms", "dpop.algorithms");
    const age = read.integer(dpop, "max_proof_age_seconds", "dpop.max_proof_age_seconds");
    if (required !== undefined) entry.required = required;
    if (algorithms !== undefined) entry.algorithms = algorithms;
    if (age !== undefined) entry.maxProofAgeSeconds = age;
    options.dpop = entry;
  }
  const sessions = read.object(file, "sessions", ["max_entries", "idle_ttl_seconds", "max_per_client"]);
  if (sessions !== undefined) {
    const entry: Obj = {};
    const max = read.integer(sessions, "max_entries", "sessions.max_entries");
    const ttl = read.integer(sessions, "idle_ttl_seconds", "sessions.idle_ttl_seconds");
    const perClient = read.integer(sessions, "max_per_client", "sessions.max_per_client");
    if (max !== undefined) entry.maxEntries = max;
    if (ttl !== undefined) entry.idleTtlMs = ttl * 1000;
    if (perClient !== undefined) entry.maxPerClient = perClient;
    options.sessions = entry;
  }

  const headers: Record<string, string> = { ...(read.stringMap(file, "upstream_headers") ?? {}) };
  for (const [name, variable] of Object.entries(read.stringMap(file, "upstream_headers_env") ?? {})) {
    const value = env[variable];
    if (value === undefined || value === "") {
      read.problems.push(`upstream_headers_env.${name}: environment variable ${variable} is not set`);
    } else {
      headers[name] = value;
    }
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
      read.problems.push(`upstream header name ${JSON.stringify(name)} is invalid`);
    else if (!/^[\t\x20-\x7E]*$/.test(value))
      read.problems.push(`upstream header ${name} has an invalid value`);
  }
  if (Object.keys(headers).length > 0) options.upstreamHeaders = headers;

  if (read.problems.length > 0) throw new McpGatewayConfigError(read.problems);
  return options as McpGatewayServerOptions;
}
