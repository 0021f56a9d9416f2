import type { VerifierBackgroundErrorReason } from "./types.js";

/** Why a background HTTP request failed (the network and response reasons of a background error). */
export type FetchFailureReason = Extract<
  VerifierBackgroundErrorReason,
  "unreachable" | "timeout" | "http_error" | "response_too_large" | "invalid_response"
>;

/** A failed background fetch, with why. Its message names the URL without credentials or query. */
export class FetchFailure extends Error {
  override name = "FetchFailure";
  readonly reason: FetchFailureReason;
  /** The HTTP status, when `reason` is `http_error`. */
  readonly status: number | undefined;
  /** How long the server asked us to wait (a 429 or 503 with `Retry-After`), in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(
    reason: FetchFailureReason,
    message: string,
    options: { cause?: unknown; status?: number; retryAfterMs?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The longest `Retry-After` honoured, in milliseconds (a longer one is cut to this). */
export const MAX_RETRY_AFTER_MS = 600_000;

/**
 * `Retry-After` (RFC 9110 §10.2.3: whole seconds, or an HTTP date) in milliseconds from `nowMs`, at
 * least 1 s and at most {@link MAX_RETRY_AFTER_MS}; `fallbackMs` when absent or unparseable.
 */
export function retryAfterMs(value: string | null, nowMs: number, fallbackMs: number): number {
  let ms = fallbackMs;
  if (value !== null) {
    const text = value.trim();
    if (/^[0-9]{1,10}$/.test(text)) ms = Number(text) * 1000;
    else if (/^[A-Za-z]{3}, /.test(text) && Number.isFinite(Date.parse(text))) ms = Date.parse(text) - nowMs;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(1_000, ms));
}

/** `url` for messages: origin and path only (no user info, no query such as a feed cursor). */
export function describeUrl(url: string): string {
  if (!URL.canParse(url)) return "(invalid URL)";
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}

/** A failure of `fetch` itself or of reading the body: no complete HTTP answer. */
export function networkFailure(url: string, error: unknown): FetchFailure {
  const failure = error instanceof Error ? error : new Error(String(error));
  if (failure instanceof FetchFailure) return failure;
  if (failure.name === "TimeoutError") {
    return new FetchFailure("timeout", `GET ${describeUrl(url)} timed out`, { cause: failure });
  }
  // undici's "fetch failed" carries the reason (ECONNREFUSED, ENOTFOUND, a redirect) as its cause.
  const cause = failure.cause instanceof Error ? `: ${failure.cause.message}` : "";
  return new FetchFailure("unreachable", `GET ${describeUrl(url)} failed: ${failure.message}${cause}`, {
    cause: failure,
  });
}

/**
 * Reads `response`'s body (of `url`, already known to be the answer wanted) as JSON of at most
 * `maxBytes`. Throws a {@link FetchFailure}: `response_too_large`, `invalid_response` (no body, not JSON),
 * or the network failure (`timeout`, `unreachable`) that cut the body short.
 */
export async function readJsonBody(response: Response, url: string, maxBytes: number): Promise<unknown> {
  const shown = describeUrl(url);
  let text: string;
  try {
    const declared = Number(response.headers.get("content-length") ?? "0");
    if (declared > maxBytes) {
      await response.body?.cancel();
      throw new FetchFailure("response_too_large", `GET ${shown}: body larger than ${maxBytes} bytes`);
    }
    const body = response.body;
    if (body === null) throw new FetchFailure("invalid_response", `GET ${shown}: empty body`);
    const chunks: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of body) {
      total += chunk.byteLength;
      if (total > maxBytes) {
        throw new FetchFailure("response_too_large", `GET ${shown}: body larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    text = Buffer.concat(chunks, total).toString("utf8");
  } catch (error) {
    throw networkFailure(url, error);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new FetchFailure("invalid_response", `GET ${shown}: the body is not JSON`, { cause: error });
  }
}

/**
 * `GET url` for JSON (no redirects), answered within `timeoutMs`: the response, whatever its status.
 * Throws a {@link FetchFailure} (`timeout`, `unreachable`) when there is none.
 */
export async function requestJson(url: string, timeoutMs: number): Promise<Response> {
  try {
    return await fetch(url, {
      headers: { accept: "application/json" },
      redirect: "error",
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw networkFailure(url, error);
  }
}

/** Fetches `url` and parses a JSON body of at most `maxBytes`, within `timeoutMs`. Throws a {@link FetchFailure}. */
export async function fetchJson(url: string, timeoutMs: number, maxBytes: number): Promise<unknown> {
  const response = await requestJson(url, timeoutMs);
  if (!response.ok) {
    await response.body?.cancel();
    throw new FetchFailure("http_error", `GET ${describeUrl(url)} answered ${response.status}`, {
      status: response.status,
    });
  }
  return readJsonBody(response, url, maxBytes);
}

export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
