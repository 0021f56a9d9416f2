/**
 * What a dev-mode CLI learns from the running STS instead of guessing it: a development approver token
 * (from the STS's own development issuer) and the STS's issuer identifier.
 */
import { safeText } from "../ops/safe_text.js";
import { unreachable } from "./api_client.js";
import { CliError, EXIT } from "./output.js";

/** How long one call may take, in milliseconds. */
const TIMEOUT_MS = 10_000;

/** A compact JWS, bounded: three base64url parts, at most 8 KiB. */
const COMPACT_JWS = /^[A-Za-z0-9_-]{1,8000}\.[A-Za-z0-9_-]{1,8000}\.[A-Za-z0-9_-]{1,8000}$/;

async function call(url: string, path: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(`${url}${path}`, {
      ...init,
      headers: { accept: "application/json", ...init.headers },
      redirect: "error",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    throw unreachable(url, (error as Error).name === "TimeoutError" ? " (timed out)" : "");
  }
}

async function json(response: Response, what: string): Promise<Record<string, unknown>> {
  try {
    const value = (await response.json()) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new CliError(
    `${what} answered ${response.status} with something other than a JSON object: is --url an STS?`,
    EXIT.unavailable,
  );
}

/**
 * Asks the STS at `url` for a development approver token for `sub` (`POST /console/dev-token`, which
 * only an STS in dev mode offers). The token comes from the STS's own development issuer, so it is
 * valid there whatever directory the CLI runs in: no key is read or created locally.
 * @throws {CliError} when the STS cannot be reached (69), does not offer development tokens (1), or
 *   refuses `sub` (1).
 */
export async function requestDevApproverToken(url: string, sub: string): Promise<string> {
  const response = await call(url, "/console/dev-token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sub }),
  });
  if (response.status === 404) {
    await response.arrayBuffer();
    throw new CliError(
      `no approver token: the STS at ${url} does not hand out development tokens (it is not in dev mode): pass --token or set COUNTERSIGN_TOKEN`,
    );
  }
  const body = await json(response, `${url}/console/dev-token`);
  if (!response.ok) {
    const description =
      typeof body.error_description === "string" ? body.error_description : response.statusText;
    const code = typeof body.error === "string" ? body.error : "error";
    throw new CliError(
      `no development approver token from ${url}: ${safeText(description)} (${response.status} ${safeText(code)})`,
      response.status >= 500 ? EXIT.unavailable : EXIT.refused,
    );
  }
  if (typeof body.access_token !== "string" || !COMPACT_JWS.test(body.access_token)) {
    throw new CliError(
      `${url}/console/dev-token answered without a token: is --url an STS?`,
      EXIT.unavailable,
    );
  }
  return body.access_token;
}

/**
 * The issuer identifier the STS at `url` publishes in its metadata
 * (`/.well-known/openid-configuration`), which development tokens must name as their audience.
 * @throws {CliError} when the STS cannot be reached or publishes no issuer.
 */
export async function fetchIssuer(url: string): Promise<string> {
  const response = await call(url, "/.well-known/openid-configuration");
  const what = `${url}/.well-known/openid-configuration`;
  const body = await json(response, what);
  if (!response.ok || typeof body.issuer !== "string" || body.issuer.length > 2048) {
    throw new CliError(
      `${what} answered ${response.status} without an issuer: is --url an STS?`,
      EXIT.unavailable,
    );
  }
  return body.issuer;
}
