import { createHash } from "node:crypto";
import type { ApprovalCall } from "./repository.js";
import { type CreateApprovalBody, canonicalCallArguments } from "./schemas.js";

/**
 * The call an approval binds, from a validated `POST /approvals` `call`: its tool, the RFC 8785
 * canonical JSON of its arguments (what the approver is shown, byte for byte) and
 * base64url(SHA-256) of that text, which the token carries and the MCP gateway recomputes from the
 * `tools/call` body (gateway-verifier/src/mcp/jcs.ts).
 */
export function boundCall(call: NonNullable<CreateApprovalBody["call"]>): ApprovalCall {
  const canonical = canonicalCallArguments(call.arguments);
  // The schema has already refused arguments that cannot be canonicalised; fail closed regardless.
  if ("problem" in canonical) throw new TypeError(`call.arguments: ${canonical.problem}`);
  return {
    tool: call.tool,
    canonicalArguments: canonical.text,
    argumentsDigest: createHash("sha256").update(canonical.text, "utf8").digest("base64url"),
  };
}
