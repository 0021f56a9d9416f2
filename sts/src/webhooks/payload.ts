import type { ApprovalJson } from "../approvals/model.js";
import { canonicalCallArguments } from "../approvals/schemas.js";
import { utf8Prefix } from "../db/text.js";

/** Most bytes (UTF-8) of a bound call's canonical arguments a webhook event carries. */
export const MAX_WEBHOOK_ARGUMENTS_PREVIEW_BYTES = 1024;

/** A bound call as a webhook event shows it: the digest, and a bounded preview of the arguments. */
export interface WebhookCallJson {
  readonly tool: string;
  readonly arguments_digest: string;
  /**
   * The start of the RFC 8785 canonical JSON of the arguments (what `arguments_digest` is over): whole
   * code points, at most {@link MAX_WEBHOOK_ARGUMENTS_PREVIEW_BYTES} bytes of UTF-8.
   */
  readonly arguments_preview: string;
  /** True when the preview is not the whole canonical text. */
  readonly arguments_truncated: boolean;
  /** Size of the whole canonical text, in bytes of UTF-8. */
  readonly arguments_bytes: number;
}

/** The approval as a webhook event carries it: the approval API's JSON, with a bounded `call`. */
export type WebhookApprovalJson = Omit<ApprovalJson, "call"> & { call: WebhookCallJson | null };

/**
 * What a webhook event says of `approval`: everything the approval API shows, except a bound call's
 * `arguments` (up to 32 KiB, copied to every receiver and kept in the outbox): instead, its digest and
 * a bounded preview. The approval API (`GET /approvals/{id}`) still shows the exact arguments to
 * whoever decides.
 */
export function webhookApproval(
  approval: ApprovalJson,
  maxPreviewBytes = MAX_WEBHOOK_ARGUMENTS_PREVIEW_BYTES,
): WebhookApprovalJson {
  if (approval.call === null) return { ...approval, call: null };
  const canonicalized = canonicalCallArguments(approval.call.arguments);
  // The arguments were canonicalised when the approval was requested; should that ever fail, the
  // preview says it is incomplete rather than that the arguments are empty.
  const canonical = "text" in canonicalized ? canonicalized.text : "";
  const preview = utf8Prefix(canonical, maxPreviewBytes);
  return {
    ...approval,
    call: {
      tool: approval.call.tool,
      arguments_digest: approval.call.arguments_digest,
      arguments_preview: preview,
      arguments_truncated: !("text" in canonicalized) || preview.length < canonical.length,
      arguments_bytes: Buffer.byteLength(canonical, "utf8"),
    },
  };
}
