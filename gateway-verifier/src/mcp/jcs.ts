import { createHash } from "node:crypto";

/** Deepest nesting {@link canonicalJson} accepts by default (objects and arrays). */
export const DEFAULT_MAX_CANONICAL_DEPTH = 64;

/**
 * The RFC 8785 JSON Canonicalization Scheme (JCS) serialisation of a JSON value (as `JSON.parse`
 * returns it): no whitespace, object members sorted by their names' UTF-16 code units (§3.2.3),
 * strings and numbers serialised as ECMAScript's `JSON.stringify` does (§3.2.2.2, §3.2.2.3).
 *
 * @throws TypeError for what I-JSON (RFC 7493) and JCS exclude: non-finite numbers, strings (or
 *   names) with lone surrogates, values that are not JSON (undefined, functions, bigints, class
 *   instances), and nesting deeper than `maxDepth`.
 */
export function canonicalJson(value: unknown, maxDepth = DEFAULT_MAX_CANONICAL_DEPTH): string {
  return serialise(value, 0, maxDepth);
}

/** A lone surrogate: in a `u` regex, a surrogate pair is one code point and does not match. */
const LONE_SURROGATE = /\p{Cs}/u;

function serialiseString(text: string): string {
  if (LONE_SURROGATE.test(text)) throw new TypeError("JCS: a string contains a lone surrogate");
  return JSON.stringify(text);
}

function serialise(value: unknown, depth: number, maxDepth: number): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("JCS: numbers must be finite");
      return JSON.stringify(value);
    case "string":
      return serialiseString(value);
    case "object":
      break;
    default:
      throw new TypeError(`JCS: a ${typeof value} is not a JSON value`);
  }
  if (depth >= maxDepth) throw new TypeError(`JCS: nested deeper than ${maxDepth}`);
  if (Array.isArray(value)) {
    return `[${value.map((item) => serialise(item, depth + 1, maxDepth)).join(",")}]`;
  }
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) {
    throw new TypeError("JCS: only plain objects are JSON objects");
  }
  const record = value as Record<string, unknown>;
  // Default sort compares UTF-16 code units, as §3.2.3 requires.
  const names = Object.keys(record).sort();
  const members = names.map(
    (name) => `${serialiseString(name)}:${serialise(record[name], depth + 1, maxDepth)}`,
  );
  return `{${members.join(",")}}`;
}

/**
 * The digest a per-call approval binds a `tools/call` to: base64url (no padding) of the SHA-256 of
 * the UTF-8 RFC 8785 canonical form of `args` (the call's `arguments`; absent arguments digest as `{}`).
 *
 * @throws TypeError as {@link canonicalJson} does.
 */
export function argumentsDigest(args: unknown, maxDepth = DEFAULT_MAX_CANONICAL_DEPTH): string {
  return createHash("sha256")
    .update(canonicalJson(args ?? {}, maxDepth), "utf8")
    .digest("base64url");
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * Whether every number in the JSON text `text` is written exactly as JCS would write it (e.g. `1`, not
 * `1.0`, `1e0` or `-0`; `1e+21`, not `1E21`; no integer beyond double precision). A gateway that binds
 * a call to the canonical digest of its arguments forwards the original bytes: with canonical number
 * literals every parser reads the value the approver saw (a big-number parser reads
 * `10000000000000001`, which a double-based digest cannot tell from `1e16`). `text` must be valid JSON.
 */
export function numbersAreCanonical(text: string): boolean {
  const length = text.length;
  let i = 0;
  while (i < length) {
    const code = text.charCodeAt(i);
    if (code === 0x22) {
      i++;
      while (i < length) {
        const c = text.charCodeAt(i);
        if (c === 0x5c) {
          i += 2;
          continue;
        }
        i++;
        if (c === 0x22) break;
      }
      continue;
    }
    if (code === 0x2d || (code >= 0x30 && code <= 0x39)) {
      NUMBER.lastIndex = i;
      const match = NUMBER.exec(text);
      if (match === null) return false;
      const literal = match[0];
      if (JSON.stringify(Number(literal)) !== literal) return false;
      i += literal.length;
      continue;
    }
    i++;
  }
  return true;
}
