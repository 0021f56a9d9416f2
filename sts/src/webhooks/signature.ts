import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Webhook signatures, Stripe-style. Every delivery carries
 *
 *     Countersign-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 * To verify a delivery, a receiver:
 * 1. reads the raw request body as bytes (before any JSON parsing: re-serialising changes the bytes);
 * 2. splits the header on `,` into `key=value` pairs, taking `t` and every `v1`;
 * 3. computes HMAC-SHA256 with the webhook's `secret` over `<t>` + `.` + the raw body, in hex;
 * 4. compares it with each `v1` in constant time (one must match);
 * 5. rejects a `t` more than the tolerance (5 minutes recommended) away from its clock, so a captured
 *    delivery cannot be replayed later; and deduplicates by `Countersign-Event-Id` (delivery is at
 *    least once).
 *
 * This file imports nothing but `node:crypto`: a receiver written in TypeScript may copy it.
 */

/** The header carrying the signature. */
export const SIGNATURE_HEADER = "Countersign-Signature";
/** The header carrying the event id (stable across retries; deduplicate on it). */
export const EVENT_ID_HEADER = "Countersign-Event-Id";
/** Recommended tolerance between the signature's `t` and the receiver's clock, in seconds (5 minutes). */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** Hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`. */
export function computeSignature(
  secret: string,
  timestampSeconds: number,
  body: string | Uint8Array,
): string {
  return createHmac("sha256", secret)
    .update(`${timestampSeconds}.`)
    .update(typeof body === "string" ? Buffer.from(body, "utf8") : body)
    .digest("hex");
}

/**
 * The `Countersign-Signature` header value for `body`, signed at `timestampSeconds` (unix seconds;
 * default now).
 */
export function signWebhookPayload(
  secret: string,
  body: string | Uint8Array,
  timestampSeconds: number = Math.floor(Date.now() / 1000),
): string {
  return `t=${timestampSeconds},v1=${computeSignature(secret, timestampSeconds, body)}`;
}

/** Why a signature was rejected (stable machine codes). */
export type WebhookSignatureFailure =
  | "header_missing"
  | "header_malformed"
  | "timestamp_outside_tolerance"
  | "signature_mismatch";

/** The outcome of {@link verifyWebhookSignature}. */
export type WebhookSignatureResult =
  | { readonly ok: true; readonly timestamp: number }
  | { readonly ok: false; readonly reason: WebhookSignatureFailure };

const HEX_SHA256 = /^[0-9a-f]{64}$/;
/** Most `v1` entries considered (several while a secret is being rotated); more is malformed. */
const MAX_SIGNATURES = 8;

/**
 * Verifies a `Countersign-Signature` header over the raw request body, for webhook receivers.
 * Every `v1` signature is compared in constant time; the timestamp must lie within
 * `toleranceSeconds` of `nowMs` in either direction.
 * @param secret - the webhook's shared secret (config `webhooks[].secret`).
 * @param header - the header value, or undefined/null when absent.
 * @param body - the raw body exactly as received (bytes or the UTF-8 string).
 * @param toleranceSeconds - accepted clock distance, in seconds. Default 300 (5 minutes).
 * @param nowMs - the receiver's clock, in milliseconds since the epoch. Default `Date.now()`.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | null | undefined,
  body: string | Uint8Array,
  toleranceSeconds: number = DEFAULT_TOLERANCE_SECONDS,
  nowMs: number = Date.now(),
): WebhookSignatureResult {
  if (header === undefined || header === null || header === "")
    return { ok: false, reason: "header_missing" };
  if (header.length > 1024) return { ok: false, reason: "header_malformed" };
  let timestamp: number | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) return { ok: false, reason: "header_malformed" };
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === "t") {
      if (timestamp !== undefined || !/^[0-9]{1,12}$/.test(value))
        return { ok: false, reason: "header_malformed" };
      timestamp = Number(value);
    } else if (key === "v1") {
      if (!HEX_SHA256.test(value) || signatures.length >= MAX_SIGNATURES) {
        return { ok: false, reason: "header_malformed" };
      }
      signatures.push(Buffer.from(value, "hex"));
    }
    // Other schemes (future versions) are ignored.
  }
  if (timestamp === undefined || signatures.length === 0) return { ok: false, reason: "header_malformed" };
  const expected = Buffer.from(computeSignature(secret, timestamp, body), "hex");
  let matched = false;
  for (const signature of signatures) {
    // Every candidate is compared, so timing does not reveal which one matched.
    if (timingSafeEqual(signature, expected)) matched = true;
  }
  if (!matched) return { ok: false, reason: "signature_mismatch" };
  if (Math.abs(nowMs / 1000 - timestamp) > toleranceSeconds) {
    return { ok: false, reason: "timestamp_outside_tolerance" };
  }
  return { ok: true, timestamp };
}
