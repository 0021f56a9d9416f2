import type { Context } from "koa";
import type { z } from "zod";
import { ApprovalError, invalidRequest } from "../approvals/errors.js";
import { describeIssues } from "../approvals/schemas.js";

/** Largest JSON request body accepted by the approval API, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * Reads the request body as JSON (at most {@link MAX_BODY_BYTES}) and validates it with `schema`.
 * A request without a body reads as `{}` (so `{"reason"?}` bodies may be omitted); any other body must
 * be `application/json` (or `+json`) in UTF-8.
 * @throws {ApprovalError} 400 `invalid_request` (naming the field), 413 or 415.
 */
export async function readJsonBody<S extends z.ZodType>(ctx: Context, schema: S): Promise<z.infer<S>> {
  const declared = ctx.request.length;
  if (declared !== undefined && declared > MAX_BODY_BYTES) throw tooLarge();
  const hasBody = ctx.request.length !== undefined || ctx.get("Transfer-Encoding") !== "";
  let value: unknown = {};
  if (hasBody) {
    const raw = await readRaw(ctx);
    if (raw.length > 0) {
      if (!ctx.request.is("application/json", "+json")) {
        throw new ApprovalError(
          415,
          "invalid_request",
          "the body must be application/json",
          "content_type_unsupported",
        );
      }
      const charset = ctx.request.charset;
      if (charset && charset.toLowerCase() !== "utf-8" && charset.toLowerCase() !== "utf8") {
        throw new ApprovalError(415, "invalid_request", "the body must be UTF-8", "content_type_unsupported");
      }
      try {
        value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
      } catch {
        throw invalidRequest("the body is not valid JSON");
      }
    }
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalidRequest(describeIssues(parsed.error));
  return parsed.data;
}

function tooLarge(): ApprovalError {
  return new ApprovalError(
    413,
    "invalid_request",
    `the body exceeds ${MAX_BODY_BYTES} bytes`,
    "body_too_large",
  );
}

async function readRaw(ctx: Context): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > MAX_BODY_BYTES) {
      // Stop reading; the connection is closed after the response so the rest is not buffered.
      ctx.set("Connection", "close");
      throw tooLarge();
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks, size);
}
