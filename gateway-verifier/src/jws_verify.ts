import type { KeySource } from "./jwks.js";
import { BASE64URL, isCanonicalBase64url, type ParsedHeader, type SignatureCheck } from "./jws.js";
import { ProtectedHeaders } from "./protected_header.js";
import type { Reason } from "./reasons.js";

/** A verified token's JWT claims set (not yet checked), or the refusal reason. */
export type JwsOutcome = Record<string, unknown> | Reason;

/** Verifies one compact JWS access token: synchronous inline, a promise on the thread pool or after a JWKS fetch. */
export type JwsVerify = (token: string) => JwsOutcome | Promise<JwsOutcome>;

/** What {@link createJwsVerify} verifies with. */
export interface JwsVerifyOptions {
  /** The issuer's keys. */
  keys: KeySource;
  /** The access-token algorithm allow-list. */
  allowedAlgorithms: ReadonlySet<string>;
  /** Largest token, in characters (sizes the scratch buffers). */
  maxTokenBytes: number;
  /** Where signatures are verified (see `VerifierOptions.signatureVerification`). Default `"threadpool"`. */
  signatureVerification: "threadpool" | "inline" | undefined;
}

/**
 * Returns the JWS validation of access tokens (RFC 7515 §5.2), in the documented order
 * (gateway-verifier/README.md): shape (three ASCII segments, a base64url signature in its one
 * canonical spelling) → the protected header (see {@link ProtectedHeaders}) → the key for (`kid`, `alg`) from the JWKS (one cooldown-limited refetch
 * for an unknown `kid`) → the signature over the exact signing input → the payload, a JSON object.
 * The payload is decoded before the signature check (it is faster while the token is in cache), but
 * nothing acts on it, nor reports a problem with it, until the signature has verified.
 */
export function createJwsVerify(options: JwsVerifyOptions): JwsVerify {
  const { keys, maxTokenBytes } = options;
  const headers = new ProtectedHeaders(options.allowedAlgorithms);
  // The key check for `lastHeader` under JWKS version `lastCheckVersion`.
  let lastHeader: ParsedHeader | undefined;
  let lastCheck: SignatureCheck | undefined;
  let lastCheckVersion = -1;

  // Inline, verification is synchronous: one pair of scratch buffers per verifier holds the signing
  // input and signature instead of two allocations per token. The payload scratch is only ever read
  // synchronously (decoded into a string at once), so both modes share it.
  const inputScratch = Buffer.allocUnsafe(maxTokenBytes);
  const signatureScratch = Buffer.allocUnsafe(2048);
  const payloadScratch = Buffer.allocUnsafe(maxTokenBytes);

  function parsePayload(segment: string): Record<string, unknown> | undefined {
    if (segment.length > maxTokenBytes) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(payloadScratch.toString("utf8", 0, payloadScratch.write(segment, "base64url")));
    } catch {
      return undefined;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    return value as Record<string, unknown>;
  }

  function checkSignatureInline(
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
  ): JwsOutcome {
    const signatureSegment = token.slice(lastDot + 1);
    const signature =
      signatureSegment.length <= 2700
        ? signatureScratch.subarray(0, signatureScratch.write(signatureSegment, "base64url"))
        : Buffer.from(signatureSegment, "base64url");
    const claims = parsePayload(token.slice(firstDot + 1, lastDot));
    const input = inputScratch.subarray(0, inputScratch.write(token, 0, lastDot, "latin1"));
    if (!check.inline(input, signature)) return "invalid_signature";
    if (claims === undefined) return "malformed_token";
    return claims;
  }

  function checkSignatureOnThreadPool(
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
  ): Promise<JwsOutcome> {
    // Buffers of its own: the verification outlives this call while others start.
    const signature = Buffer.from(token.slice(lastDot + 1), "base64url");
    const input = Buffer.allocUnsafe(lastDot);
    input.write(token, 0, lastDot, "latin1");
    const claims = parsePayload(token.slice(firstDot + 1, lastDot));
    return new Promise((resolve, reject) => {
      check.threadpool(input, signature, (error, valid) => {
        if (error !== null) reject(error);
        else if (!valid) resolve("invalid_signature");
        else if (claims === undefined) resolve("malformed_token");
        else resolve(claims);
      });
    });
  }

  const checkSignature: (
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
  ) => JwsOutcome | Promise<JwsOutcome> =
    options.signatureVerification === "inline" ? checkSignatureInline : checkSignatureOnThreadPool;

  async function checkWithFreshKeys(
    token: string,
    firstDot: number,
    lastDot: number,
    header: ParsedHeader,
  ): Promise<JwsOutcome> {
    await keys.settled();
    let check = keys.lookup(header.kid, header.alg);
    if (check === undefined) {
      // Unknown kid: one refetch (cooldown-limited), then refuse.
      const fetched = await keys.refresh();
      check = keys.lookup(header.kid, header.alg);
      if (check === undefined) return keys.loaded && fetched ? "unknown_kid" : "jwks_unavailable";
    }
    return checkSignature(token, firstDot, lastDot, check);
  }

  return (token) => {
    const firstDot = token.indexOf(".");
    const lastDot = token.lastIndexOf(".");
    // The signing input is written as latin1 (one byte per character), so a character outside ASCII
    // (e.g. a payload character re-spelled as itself + 0x100) could sign the same bytes as another
    // string: a token must be ASCII, checked on every token (UTF-8 length = length). With that, the
    // header and payload are covered byte for byte by the signature; the header's alphabet is also
    // checked when it is first seen, the signature's here.
    if (firstDot <= 0 || token.indexOf(".", firstDot + 1) !== lastDot || lastDot === firstDot + 1) {
      return "malformed_token";
    }
    const signatureSegment = token.slice(lastDot + 1);
    if (!BASE64URL.test(signatureSegment) || Buffer.byteLength(token, "utf8") !== token.length) {
      return "malformed_token";
    }
    // One signature, one spelling: a re-spelled signature (non-zero unused trailing bits decode to the
    // same bytes) would otherwise be a different token string for the same token (RFC 4648 §3.5).
    if (!isCanonicalBase64url(signatureSegment)) return "invalid_signature";
    const header = headers.read(token, firstDot);
    if (typeof header === "string") return header;
    let check: SignatureCheck | undefined;
    if (header === lastHeader && lastCheckVersion === keys.version) check = lastCheck;
    else {
      check = keys.lookup(header.kid, header.alg);
      lastHeader = header;
      lastCheck = check;
      lastCheckVersion = keys.version;
    }
    if (check === undefined) return checkWithFreshKeys(token, firstDot, lastDot, header);
    return checkSignature(token, firstDot, lastDot, check);
  };
}
