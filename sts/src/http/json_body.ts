import type { Context } from "koa";
import type { z } from "zod";
import { ApiError } from "./errors.js";

/** The stable reasons {@link readJsonBody} refuses a body with. */
export type JsonBodyRefusalReason = "body_invalid" | "body_too_large" | "content_type_unsupported";

/** Largest JSON request body accepted by the approval API, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * Reads the request body as JSON (at most {@link MAX_BODY_BYTES}) and validates it with `schema`.
 * A request without a body reads as `{}` (so `{"reason"?}` bodies may be omitted); any other body must
 * be `application/json` (or `+json`) in UTF-8.
 * @throws {ApiError} 400 `invalid_request` (naming the field), 413 or 415.
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
        throw new ApiError<JsonBodyRefusalReason>(
          415,
          "invalid_request",
          "the body must be application/json",
          "content_type_unsupported",
        );
      }
      const charset = ctx.request.charset;
      if (charset && charset.toLowerCase() !== "utf-8" && charset.toLowerCase() !== "utf8") {
        throw new ApiError<JsonBodyRefusalReason>(
          415,
          "invalid_request",
          "the body must be UTF-8",
          "content_type_unsupported",
        );
      }
      try {
        value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
      } catch {
        throw invalidBody("the body is not valid JSON");
      }
    }
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalidBody(describeIssues(parsed.error));
  return parsed.data;
}

/**
 * One line describing what is wrong with a request, naming the field: `unknown field "foo"`,
 * `max_tokens: Too big: expected number to be <=1000000`.
 */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map(String).join(".");
      if (issue.code === "unrecognized_keys") {
        const keys = issue.keys.map((key) => `"${key}"`).join(", ");
        const prefix = path ? `${path}: ` : "";
        return `${prefix}unknown field${issue.keys.length > 1 ? "s" : ""} ${keys}`;
      }
      return `${path || "body"}: ${issue.message}`;
    })
    .join("; ");
}

/** 400 `invalid_request`, reason `body_invalid`. */
function invalidBody(description: string): ApiError<JsonBodyRefusalReason> {
  return new ApiError(400, "invalid_request", description, "body_invalid");
}

function tooLarge(): ApiError<JsonBodyRefusalReason> {
  return new ApiError(413, "invalid_request", `the body exceeds ${MAX_BODY_BYTES} bytes`, "body_too_large");
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
