import type { VerifyFailure } from "../types.js";

/** Quotes an auth-param value (RFC 9110 §5.6.4 quoted-string). */
export function quoted(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** What every challenge of one gateway carries. */
export interface ChallengeContext {
  /** `resource_metadata` (RFC 9728 §5.1). */
  resourceMetadata: string;
  /** `scope` of 401 challenges: the scopes to ask for first (MCP "Scope Selection Strategy"). */
  scope: readonly string[];
  /** Space-separated DPoP algorithms, for `DPoP algs="…"` (RFC 9449 §7.1). */
  dpopAlgs: string;
  /** Tokens must be DPoP-bound: the DPoP challenge comes first and the Bearer one is not offered. */
  dpopRequired: boolean;
  realm: string | undefined;
}

function params(context: ChallengeContext, extra: [string, string | undefined][]): string {
  const list: string[] = [];
  if (context.realm !== undefined) list.push(`realm=${quoted(context.realm)}`);
  for (const [name, value] of extra) if (value !== undefined) list.push(`${name}=${quoted(value)}`);
  return list.join(", ");
}

function scopeValue(scopes: readonly string[]): string | undefined {
  return scopes.length === 0 ? undefined : scopes.join(" ");
}

/**
 * The `WWW-Authenticate` value of a 401 or 403 (MCP `basic/authorization`, RFC 6750 §3, RFC 9728
 * §5.1, RFC 9449 §7.1). A request without a token gets `Bearer resource_metadata="…", scope="…"` and a
 * `DPoP algs="…"` challenge alongside (DPoP first, alone, when DPoP is required); a refused token gets
 * one challenge in the scheme it used (`DPoP` for DPoP-bound tokens) with `error`,
 * `error_description`, `scope` (for `insufficient_scope`: every scope the call needs) and
 * `resource_metadata`.
 */
export function challenge(
  context: ChallengeContext,
  refusal: {
    scheme: "Bearer" | "DPoP" | undefined;
    error?: string;
    description?: string;
    scope?: readonly string[];
  },
): string {
  const scope = scopeValue(refusal.scope ?? context.scope);
  if (refusal.error === undefined) {
    const bearer = `Bearer ${params(context, [
      ["resource_metadata", context.resourceMetadata],
      ["scope", scope],
    ])}`;
    const dpop = `DPoP ${params(context, [
      ["algs", context.dpopAlgs],
      ...(context.dpopRequired
        ? ([
            ["resource_metadata", context.resourceMetadata],
            ["scope", scope],
          ] as [string, string | undefined][])
        : []),
    ])}`;
    return context.dpopRequired ? dpop : `${bearer}, ${dpop}`;
  }
  const scheme = refusal.scheme ?? (context.dpopRequired ? "DPoP" : "Bearer");
  return `${scheme} ${params(context, [
    ["error", refusal.error],
    ["error_description", refusal.description],
    ["scope", scope],
    ["resource_metadata", context.resourceMetadata],
    ...(scheme === "DPoP" ? ([["algs", context.dpopAlgs]] as [string, string][]) : []),
  ])}`;
}

/** The scheme the verifier answered in (it knows whether the token is DPoP-bound). */
export function schemeOf(failure: VerifyFailure): "Bearer" | "DPoP" | undefined {
  const header = failure.headers["WWW-Authenticate"];
  if (header === undefined) return undefined;
  return header.startsWith("DPoP ") ? "DPoP" : "Bearer";
}
