import type { VerifierOptions } from "../types.js";
import type { ForwardAuthServerOptions } from "./handler.js";
import { type ForwardAuthRoute, MAX_ROUTES } from "./routes.js";

/**
 * The `countersign authz-server` config file (JSON, snake_case). Every key is optional here; the
 * command's flags win over the file, and `issuer` and `audience` must come from one of them.
 *
 * ```json
 * {
 *   "issuer": "http://127.0.0.1:8080",
 *   "audience": "https://crm.example.test",
 *   "trust_forwarded_headers": true,
 *   "public_origin": "https://crm.example.test",
 *   "required_scopes": [],
 *   "routes": [
 *     { "method": "GET", "path_prefix": "/contacts", "scopes": ["crm:read"] },
 *     { "method": "*", "path_prefix": "/contacts", "scopes": ["crm:write"] }
 *   ],
 *   "revocation_url": "http://127.0.0.1:8080/revocations"
 * }
 * ```
 */
export type ForwardAuthConfigFile = Record<string, unknown>;

/** Options of the service and of its verifier. */
export interface ForwardAuthConfig {
  verifier: VerifierOptions;
  server: ForwardAuthServerOptions;
}

/** An invalid configuration; `problems` names every bad key. */
export class ForwardAuthConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid authz-server config: ${problems.join("; ")}`);
    this.name = "ForwardAuthConfigError";
  }
}

const KEYS = new Set([
  "issuer",
  "audience",
  "jwks_uri",
  "port",
  "host",
  "required_scopes",
  "routes",
  "revocation_url",
  "trust_forwarded_headers",
  "public_origin",
  "path_prefix",
  "realm",
]);
const ROUTE_KEYS = new Set(["method", "path_prefix", "scopes"]);
const SCOPE = /^[\x21\x23-\x5B\x5D-\x7E]{1,256}$/;

type Obj = Record<string, unknown>;
const isObject = (value: unknown): value is Obj =>
  typeof value === "object" && value !== null && !Array.isArray(value);

function httpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:";
  } catch {
    return false;
  }
}

/**
 * Turns a parsed config (file merged with flags, snake_case) into the service's and the verifier's
 * options. @throws ForwardAuthConfigError naming every bad key.
 */
export function forwardAuthOptionsFromConfig(file: unknown): ForwardAuthConfig {
  if (!isObject(file)) throw new ForwardAuthConfigError(["the config must be a JSON object"]);
  const problems: string[] = [];
  for (const key of Object.keys(file)) if (!KEYS.has(key)) problems.push(`${key} is not a known key`);
  const str = (key: string, check?: (value: string) => boolean, hint = "a non-empty string") => {
    const value = file[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value === "" || (check !== undefined && !check(value))) {
      problems.push(`${key} must be ${hint}`);
      return undefined;
    }
    return value;
  };
  const scopes = (value: unknown, path: string): string[] | undefined => {
    if (
      !Array.isArray(value) ||
      value.length > 100 ||
      !value.every((s) => typeof s === "string" && SCOPE.test(s))
    ) {
      problems.push(`${path} must be an array of at most 100 scope tokens`);
      return undefined;
    }
    return value as string[];
  };
  const issuer = str("issuer", httpUrl, "an http(s) URL");
  const audience = str("audience");
  if (issuer === undefined && file.issuer === undefined) problems.push("issuer is required (--issuer)");
  if (audience === undefined && file.audience === undefined)
    problems.push("audience is required (--audience)");
  const jwksUri = str("jwks_uri", httpUrl, "an http(s) URL");
  const revocationUrl = str("revocation_url", httpUrl, "an http(s) URL");
  const publicOrigin = str(
    "public_origin",
    (value) => httpUrl(value) && new URL(value).pathname === "/" && !/[?#]/.test(value),
    "an http(s) origin, e.g. https://crm.example.test",
  );
  const pathPrefix = str("path_prefix", (value) => value.startsWith("/"), "a path starting with /");
  const host = str("host");
  const realm = str(
    "realm",
    (value) => /^[\x20\x21\x23-\x5B\x5D-\x7E]{1,256}$/.test(value),
    "visible ASCII without quotes",
  );
  let port: number | undefined;
  if (file.port !== undefined) {
    if (
      typeof file.port !== "number" ||
      !Number.isInteger(file.port) ||
      file.port < 0 ||
      file.port > 65_535
    ) {
      problems.push("port must be an integer 0-65535");
    } else port = file.port;
  }
  let trust: boolean | undefined;
  if (file.trust_forwarded_headers !== undefined) {
    if (typeof file.trust_forwarded_headers !== "boolean")
      problems.push("trust_forwarded_headers must be true or false");
    else trust = file.trust_forwarded_headers;
  }
  const requiredScopes =
    file.required_scopes === undefined ? undefined : scopes(file.required_scopes, "required_scopes");
  let routes: ForwardAuthRoute[] | undefined;
  if (file.routes !== undefined) {
    if (!Array.isArray(file.routes) || file.routes.length > MAX_ROUTES) {
      problems.push(`routes must be an array of at most ${MAX_ROUTES} routes`);
    } else {
      routes = [];
      for (const [index, route] of file.routes.entries()) {
        const path = `routes[${index}]`;
        if (!isObject(route)) {
          problems.push(`${path} must be an object`);
          continue;
        }
        for (const key of Object.keys(route))
          if (!ROUTE_KEYS.has(key)) problems.push(`${path}.${key} is not a known key`);
        const method = route.method;
        if (method !== undefined && (typeof method !== "string" || !/^(\*|[A-Za-z]{1,32})$/.test(method)))
          problems.push(`${path}.method must be an HTTP method or "*"`);
        const prefix = route.path_prefix;
        if (
          typeof prefix !== "string" ||
          !prefix.startsWith("/") ||
          prefix.length > 1024 ||
          /[?#%]/.test(prefix)
        )
          problems.push(`${path}.path_prefix must be a decoded path starting with / (no ?, # or %)`);
        const routeScopes = scopes(route.scopes, `${path}.scopes`);
        if (typeof prefix === "string" && routeScopes !== undefined) {
          routes.push({
            ...(typeof method === "string" ? { method } : {}),
            pathPrefix: prefix,
            scopes: routeScopes,
          });
        }
      }
    }
  }
  if (problems.length > 0) throw new ForwardAuthConfigError(problems);
  const verifier: VerifierOptions = { issuer: issuer as string, audience: audience as string };
  if (jwksUri !== undefined) verifier.jwksUri = jwksUri;
  if (revocationUrl !== undefined) verifier.revocation = { url: revocationUrl };
  if (realm !== undefined) verifier.realm = realm;
  const server: ForwardAuthServerOptions = {};
  if (port !== undefined) server.port = port;
  if (host !== undefined) server.host = host;
  if (requiredScopes !== undefined) server.requiredScopes = requiredScopes;
  if (routes !== undefined) server.routes = routes;
  if (trust !== undefined) server.trustForwardedHeaders = trust;
  if (publicOrigin !== undefined) server.publicOrigin = publicOrigin;
  if (pathPrefix !== undefined) server.pathPrefix = pathPrefix;
  return { verifier, server };
}
