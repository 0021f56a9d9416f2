import type { IncomingMessage } from "node:http";

type BodyOutcome = Buffer | "body_too_large" | "body_timeout" | "aborted" | "cancelled";

/**
 * Reads a request body of at most `maxBytes` within `timeoutMs`. A declared `Content-Length` above
 * the bound is refused before reading; a chunked body is refused as soon as it passes the bound (the
 * rest is not read: answer with `Connection: close`). `"aborted"` when the client went away.
 *
 * `"cancelled"` when `signal` aborted first: the chunks read so far are dropped and the rest of the
 * body is discarded as it arrives, never buffered, so the answer can be sent at once and the
 * connection kept alive (do not force `Connection: close`: with unread bytes the kernel may reset the
 * connection and the client lose the answer). The discarding is bounded: once the whole body passes
 * `maxBytes`, or has not ended within `timeoutMs` of the cancellation, the socket is destroyed.
 */
export function readBody(
  req: IncomingMessage,
  maxBytes: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<BodyOutcome> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) return Promise.resolve("body_too_large");
  if (signal?.aborted === true) {
    discardBody(req, 0, maxBytes, timeoutMs);
    return Promise.resolve("cancelled");
  }
  return new Promise((resolve) => {
    let chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (outcome: BodyOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onAbort);
      req.off("close", onClose);
      signal?.removeEventListener("abort", onCancel);
      if (typeof outcome === "string") chunks = [];
      if (outcome === "cancelled") discardBody(req, size, maxBytes, timeoutMs);
      else if (typeof outcome === "string" && outcome !== "aborted") req.pause();
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

/**
 * Reads the rest of a body without keeping it, so that the connection can serve its next request.
 * `received` bytes were already read. Once the body passes `maxBytes`, or has not ended within
 * `timeoutMs`, the socket is destroyed. Nothing is left listening or pending once the body ends.
 */
function discardBody(req: IncomingMessage, received: number, maxBytes: number, timeoutMs: number): void {
  if (req.readableEnded || req.destroyed) return;
  let size = received;
  const stop = () => {
    clearTimeout(timer);
    req.off("data", onData);
    req.off("end", stop);
    req.off("close", stop);
    req.off("error", stop);
  };
  const drop = () => {
    stop();
    req.socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes) drop();
  };
  const timer = setTimeout(drop, timeoutMs);
  timer.unref();
  req.on("data", onData);
  req.on("end", stop);
  req.on("close", stop);
  req.on("error", stop);
  req.resume();
}
