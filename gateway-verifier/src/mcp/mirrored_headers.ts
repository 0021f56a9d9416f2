import type { IncomingHttpHeaders } from "node:http";
import type { JsonRpcBody, JsonRpcMessage } from "./jsonrpc.js";
import type { McpJsonRpcReason } from "./reasons.js";

/** The first MCP revision whose Streamable HTTP POSTs must mirror `method`/`name` into headers. */
export const HEADER_VALIDATION_REVISION = "2026-07-28";

/** Methods whose POSTs must carry `Mcp-Name` from 2026-07-28 on (MCP `basic/transports/streamable-http`). */
const NAME_REQUIRED = new Set(["tools/call", "resources/read", "prompts/get"]);

const VERSION_META = "io.modelcontextprotocol/protocolVersion";
const PLAIN_VALUE = /^[\x20-\x7E\t]*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decodes an `Mcp-Name` (or `Mcp-Param-*`) value: plain visible ASCII as is, or the Base64 sentinel
 * `=?base64?…?=` (MCP 2026-07-28 "Value Encoding") as UTF-8. Undefined when malformed.
 */
export function decodeMirroredValue(value: string): string | undefined {
  if (value.startsWith("=?base64?") && value.endsWith("?=") && value.length >= 11) {
    const encoded = value.slice(9, -2);
    if (!BASE64.test(encoded)) return undefined;
    try {
      return utf8.decode(Buffer.from(encoded, "base64"));
    } catch {
      return undefined;
    }
  }
  return PLAIN_VALUE.test(value) ? value : undefined;
}

/** Whether `version` (an `MCP-Protocol-Version` value) is a dated revision that requires header–body validation. */
export function requiresHeaderValidation(version: string | undefined): boolean {
  return (
    version !== undefined && /^\d{4}-\d{2}-\d{2}$/.test(version) && version >= HEADER_VALIDATION_REVISION
  );
}

/** `params.name` or `params.uri`: the source of `Mcp-Name`. */
export function mirroredName(message: JsonRpcMessage): string | undefined {
  const params = message.params;
  if (params === undefined) return undefined;
  if (typeof params.name === "string") return params.name;
  if (typeof params.uri === "string") return params.uri;
  return undefined;
}

function single(headers: Record<string, string[] | undefined>, name: string): string | null | undefined {
  const values = headers[name];
  if (values === undefined) return undefined;
  return values.length === 1 ? (values[0] as string) : null;
}

function metaVersion(message: JsonRpcMessage): unknown {
  const meta = message.params?._meta;
  return typeof meta === "object" && meta !== null
    ? (meta as Record<string, unknown>)[VERSION_META]
    : undefined;
}

/**
 * Checks `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` against the parsed body (MCP 2026-07-28
 * "Server Validation"): present headers must match every message of the body; on a 2026-07-28 (or
 * later) request they are required. Absent headers (revisions 2025-03-26 to 2025-11-25) are fine: the
 * gateway decides from the body in every case, never from the headers alone.
 *
 * @param headers `req.headersDistinct` (repeated headers are refused, not joined).
 */
export function checkMirroredHeaders(
  headers: Record<string, string[] | undefined> | IncomingHttpHeaders,
  body: JsonRpcBody,
): McpJsonRpcReason | undefined {
  const distinct = headers as Record<string, string[] | undefined>;
  const method = single(distinct, "mcp-method");
  const name = single(distinct, "mcp-name");
  const version = single(distinct, "mcp-protocol-version");
  if (method === null || name === null || version === null) return "mcp_header_invalid";
  let decodedName: string | undefined;
  if (name !== undefined) {
    decodedName = decodeMirroredValue(name);
    if (decodedName === undefined) return "mcp_header_invalid";
  }
  const modern = requiresHeaderValidation(version);
  for (const message of body.messages) {
    const bodyVersion = metaVersion(message);
    if (version !== undefined && bodyVersion !== undefined && bodyVersion !== version) {
      return "protocol_version_mismatch";
    }
    if (method !== undefined) {
      if (message.method !== method) return "mcp_method_mismatch";
    } else if (modern && message.kind === "request") {
      return "mcp_header_missing";
    }
    if (decodedName !== undefined) {
      if (mirroredName(message) !== decodedName) return "mcp_name_mismatch";
    } else if (modern && message.kind === "request" && NAME_REQUIRED.has(message.method ?? "")) {
      return "mcp_header_missing";
    }
  }
  return undefined;
}
