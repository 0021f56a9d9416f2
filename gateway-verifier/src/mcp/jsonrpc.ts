import type { McpJsonRpcReason } from "./reasons.js";

/** A JSON-RPC id as MCP allows it (a string or an integer); `null` for responses to unparseable requests. */
export type JsonRpcId = string | number | null;

/** One JSON-RPC 2.0 message of a request body, classified. */
export interface JsonRpcMessage {
  /** `request` has `method` and `id`; `notification` has `method` only; `response` has `result` or `error`. */
  kind: "request" | "notification" | "response";
  id: JsonRpcId | undefined;
  /** The method of a request or notification. */
  method: string | undefined;
  /** `params` when it is a JSON object (MCP only uses objects), else undefined. */
  params: Record<string, unknown> | undefined;
}

/** A parsed POST body: one message, or a JSON-RPC batch (MCP 2025-03-26 only). */
export interface JsonRpcBody {
  batch: boolean;
  messages: JsonRpcMessage[];
  /** The body as text (strict UTF-8), exactly as received. */
  text: string;
}

/** Bounds applied while parsing. */
export interface JsonRpcLimits {
  /** Deepest object/array nesting accepted. */
  maxDepth: number;
  /** Most messages in a batch. */
  maxBatchSize: number;
}

export type ParseResult =
  | { ok: true; body: JsonRpcBody }
  | { ok: false; reason: McpJsonRpcReason; id: JsonRpcId };

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function isWhitespace(code: number): boolean {
  return code === 0x20 || code === 0x09 || code === 0x0a || code === 0x0d;
}

/**
 * Walks valid JSON text once, without recursion, and reports a repeated member name in any object
 * (compared after unescaping: `"method"` and `"\u006dethod"` are the same name) or nesting deeper than
 * `maxDepth`. RFC 8259 §4 leaves duplicate names' meaning to each parser (JSON.parse keeps the last,
 * others the first): the gateway would decide on one value and the MCP server act on another.
 */
export function scanJson(text: string, maxDepth: number): "duplicate_key" | "too_deep" | undefined {
  const stack: (Set<string> | null)[] = [];
  const length = text.length;
  let i = 0;
  while (i < length) {
    const code = text.charCodeAt(i);
    if (code === 0x22) {
      const start = i;
      let escaped = false;
      i++;
      while (i < length) {
        const c = text.charCodeAt(i);
        if (c === 0x5c) {
          escaped = true;
          i += 2;
          continue;
        }
        if (c === 0x22) break;
        i++;
      }
      const end = i;
      i++;
      const names = stack[stack.length - 1];
      if (names) {
        let j = i;
        while (j < length && isWhitespace(text.charCodeAt(j))) j++;
        if (text.charCodeAt(j) === 0x3a) {
          const name = escaped
            ? (JSON.parse(text.slice(start, end + 1)) as string)
            : text.slice(start + 1, end);
          if (names.has(name)) return "duplicate_key";
          names.add(name);
        }
      }
      continue;
    }
    if (code === 0x7b || code === 0x5b) {
      stack.push(code === 0x7b ? new Set() : null);
      if (stack.length > maxDepth) return "too_deep";
    } else if (code === 0x7d || code === 0x5d) {
      stack.pop();
    }
    i++;
  }
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function validId(id: unknown): id is string | number {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id));
}

function classify(value: unknown): JsonRpcMessage | undefined {
  if (!isObject(value) || value.jsonrpc !== "2.0") return undefined;
  const params = value.params;
  if (params !== undefined && typeof params !== "object") return undefined;
  const objectParams = isObject(params) ? params : undefined;
  if ("method" in value) {
    if (typeof value.method !== "string") return undefined;
    if (!("id" in value))
      return { kind: "notification", id: undefined, method: value.method, params: objectParams };
    if (!validId(value.id)) return undefined;
    return { kind: "request", id: value.id, method: value.method, params: objectParams };
  }
  if ("result" in value === "error" in value) return undefined;
  if (!validId(value.id) && value.id !== null) return undefined;
  return { kind: "response", id: value.id as JsonRpcId, method: undefined, params: undefined };
}

function idOf(value: unknown): JsonRpcId {
  return isObject(value) && validId(value.id) ? value.id : null;
}

/**
 * Parses a Streamable HTTP POST body (JSON-RPC 2.0, MCP `basic/transports`): strict UTF-8, JSON,
 * no duplicate member names, bounded nesting, a non-empty batch of at most `maxBatchSize` messages,
 * each a well-formed request, notification or response.
 */
export function parseJsonRpcBody(bytes: Uint8Array, limits: JsonRpcLimits): ParseResult {
  let text: string;
  let value: unknown;
  try {
    text = utf8.decode(bytes);
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: "parse_error", id: null };
  }
  const problem = scanJson(text, limits.maxDepth);
  if (problem !== undefined)
    return { ok: false, reason: problem, id: Array.isArray(value) ? null : idOf(value) };
  if (Array.isArray(value)) {
    if (value.length === 0) return { ok: false, reason: "invalid_request", id: null };
    if (value.length > limits.maxBatchSize) return { ok: false, reason: "batch_too_large", id: null };
    const messages: JsonRpcMessage[] = [];
    for (const element of value) {
      const message = classify(element);
      if (message === undefined) return { ok: false, reason: "invalid_request", id: null };
      messages.push(message);
    }
    return { ok: true, body: { batch: true, messages, text } };
  }
  const message = classify(value);
  if (message === undefined) return { ok: false, reason: "invalid_request", id: idOf(value) };
  return { ok: true, body: { batch: false, messages: [message], text } };
}
