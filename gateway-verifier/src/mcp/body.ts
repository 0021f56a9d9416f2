import type { IncomingMessage } from "node:http";

/**
 * Reads a request body of at most `maxBytes` within `timeoutMs`. A declared `Content-Length` above
 * the bound is refused before reading; a chunked body is refused as soon as it passes the bound (the
 * rest is not read: answer with `Connection: close`). `"aborted"` when the client went away;
 * `"cancelled"` when `signal` aborted first (the chunks read so far are dropped and reading stops:
 * answer with `Connection: close`).
 */
export function readBody(
  req: IncomingMessage,
  maxBytes: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Buffer | "body_too_large" | "body_timeout" | "aborted" | "cancelled"> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) return Promise.resolve("body_too_large");
  if (signal?.aborted === true) {
    req.pause();
    return Promise.resolve("cancelled");
  }
  return new Promise((resolve) => {
    let chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (outcome: Buffer | "body_too_large" | "body_timeout" | "aborted" | "cancelled") => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onAbort);
      req.off("close", onClose);
      signal?.removeEventListener("abort", onCancel);
      if (typeof outcome === "string") chunks = [];
      if (typeof outcome === "string" && outcome !== "aborted") req.pause();
      resolve(outcome);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        finish("body_too_large");
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => finish(Buffer.concat(chunks, size));
    const onAbort = () => finish("aborted");
    const onClose = () => {
      if (!req.complete) finish("aborted");
    };
    const onCancel = () => finish("cancelled");
    const timer = setTimeout(() => finish("body_timeout"), timeoutMs);
    timer.unref();
    signal?.addEventListener("abort", onCancel, { once: true });
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onAbort);
    req.on("close", onClose);
  });
}
