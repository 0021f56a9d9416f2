import { createRemoteJWKSet, customFetch, type FetchImplementation, type RemoteJWKSetOptions } from "jose";
import type { Logger } from "../ops/logger.js";

/** Largest JWKS response body read from a trusted issuer's `jwks_uri`, in bytes (1 MiB). */
export const MAX_JWKS_BYTES = 1024 * 1024;
/** Most keys a trusted issuer's JWKS may hold. */
export const MAX_JWKS_KEYS = 100;

/** Why a JWKS response was refused: stable codes, logged. */
export type JwksRefusalReason = "jwks_too_large" | "jwks_too_many_keys" | "jwks_invalid";

/**
 * A JWKS response (HTTP 200) that was refused: too large, too many keys, or not a JSON key set. The
 * message names the URI and the limit, never the body.
 */
export class JwksResponseRefused extends Error {
  static readonly code = "ERR_JWKS_RESPONSE_REFUSED";
  readonly code = JwksResponseRefused.code;
  constructor(
    readonly reason: JwksRefusalReason,
    message: string,
  ) {
    super(message);
    this.name = "JwksResponseRefused";
  }
}

/** Options of {@link createBoundedRemoteJWKSet}: jose's, plus the caps and where refusals are logged. */
export interface BoundedRemoteJWKSetOptions extends Omit<RemoteJWKSetOptions, typeof customFetch> {
  /** Largest response body, in bytes; reading stops (and the connection is dropped) past it. Default 1 MiB. */
  readonly maxBytes?: number;
  /** Most keys in the set. Default {@link MAX_JWKS_KEYS}. */
  readonly maxKeys?: number;
  /** Told of every refused response (a warning with its reason code; never the body). */
  readonly logger?: Logger;
}

/** Reads `response`'s body, refusing it past `maxBytes` (declared or streamed) without reading on. */
async function readCapped(response: Response, uri: string, maxBytes: number): Promise<Uint8Array> {
  const tooLarge = () =>
    new JwksResponseRefused(
      "jwks_too_large",
      `the JWKS fetched from ${uri} is larger than ${maxBytes} bytes`,
    );
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (response.body) {
    // Leaving the loop by a throw cancels the stream, which drops the connection.
    for await (const chunk of response.body) {
      total += chunk.byteLength;
      if (total > maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks, total);
}

/** Refuses a body that is not a JSON object with a `keys` array of at most `maxKeys` entries. */
function checkKeySet(body: Uint8Array, uri: string, maxKeys: number): void {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body).toString("utf8"));
  } catch {
    throw new JwksResponseRefused("jwks_invalid", `the JWKS fetched from ${uri} is not JSON`);
  }
  const keys = typeof value === "object" && value !== null ? (value as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) {
    throw new JwksResponseRefused("jwks_invalid", `the JWKS fetched from ${uri} has no keys array`);
  }
  if (keys.length > maxKeys) {
    throw new JwksResponseRefused(
      "jwks_too_many_keys",
      `the JWKS fetched from ${uri} holds ${keys.length} keys, more than ${maxKeys}`,
    );
  }
}

/**
 * jose's `createRemoteJWKSet` (its caching, cooldown and timeout unchanged) whose fetch reads at most
 * `maxBytes` of the response and accepts at most `maxKeys` keys. A refused response is logged as a
 * warning (reason code, URI, no body) and:
 * - after an earlier good response, is answered to jose with that last good key set, so the previous
 *   keys stay in use (until the next refetch, by jose's usual cache age and cooldown);
 * - before any, fails the lookup with {@link JwksResponseRefused}, so the token is refused
 *   (fail closed: no keys, no trust).
 *
 * Only a 200 response that breaks these bounds is replaced; a non-200 answer, a network error or a
 * timeout fails as jose fails it. Refusing only what the server sent, not its absence, means that
 * blocking the issuer never extends the life of keys it has dropped.
 */
export function createBoundedRemoteJWKSet(
  url: URL,
  options: BoundedRemoteJWKSetOptions = {},
): ReturnType<typeof createRemoteJWKSet> {
  const { maxBytes = MAX_JWKS_BYTES, maxKeys = MAX_JWKS_KEYS, logger, ...joseOptions } = options;
  const uri = url.href;
  let lastGood: Uint8Array | undefined;

  const boundedFetch: FetchImplementation = async (resource, init) => {
    const response = await fetch(resource, init);
    if (response.status !== 200) return response;
    let body: Uint8Array;
    try {
      body = await readCapped(response, uri, maxBytes);
      checkKeySet(body, uri, maxKeys);
    } catch (error) {
      if (!(error instanceof JwksResponseRefused)) throw error;
      logger?.warn(
        {
          event: "jwks.refused",
          reason: error.reason,
          jwks_uri: uri,
          previous_keys_kept: lastGood !== undefined,
        },
        lastGood
          ? "trusted issuer's JWKS response refused; the previous keys stay in use"
          : "trusted issuer's JWKS response refused; its tokens are refused until it answers within bounds",
      );
      if (!lastGood) throw error;
      body = lastGood;
    }
    lastGood = body;
    return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
  };

  return createRemoteJWKSet(url, { ...joseOptions, [customFetch]: boundedFetch });
}
