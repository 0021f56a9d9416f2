import { BASE64URL, checkAccessTokenHeader, decodeJsonObject, type ParsedHeader } from "./jws.js";
import type { Reason } from "./reasons.js";

const CACHE_SIZE = 64;

/**
 * The checked JWS Protected Headers (RFC 7515 §4) of access tokens, cached by their encoded segment:
 * tokens signed with one STS key share one header, so it is decoded and checked once (alg allow-list,
 * key-bearing headers, `b64`, `crit`, `typ`, `kid`; see `checkAccessTokenHeader`). Bounded: the cache
 * is emptied when it reaches 64 headers.
 */
export class ProtectedHeaders {
  readonly #allowedAlgorithms: ReadonlySet<string>;
  readonly #bySegment = new Map<string, ParsedHeader>();
  #lastSegment = "";
  #last: ParsedHeader | undefined;

  constructor(allowedAlgorithms: ReadonlySet<string>) {
    this.#allowedAlgorithms = allowedAlgorithms;
  }

  /**
   * The checked header of `token`, whose first `.` is at `firstDot` (> 0), or the refusal reason.
   * The same header object is returned for the same segment while it is cached.
   */
  read(token: string, firstDot: number): ParsedHeader | Reason {
    // Compare with the last header before slicing and hashing the segment.
    if (firstDot === this.#lastSegment.length && token.startsWith(this.#lastSegment)) {
      return this.#last as ParsedHeader;
    }
    const segment = token.slice(0, firstDot);
    let header = this.#bySegment.get(segment);
    if (header === undefined) {
      if (!BASE64URL.test(segment)) return "malformed_token";
      const decoded = decodeJsonObject(segment);
      if (decoded === undefined) return "malformed_token";
      const checked = checkAccessTokenHeader(decoded, this.#allowedAlgorithms);
      if (typeof checked === "string") return checked;
      header = checked;
      if (this.#bySegment.size >= CACHE_SIZE) this.#bySegment.clear();
      this.#bySegment.set(segment, header);
    }
    this.#lastSegment = segment;
    this.#last = header;
    return header;
  }
}
