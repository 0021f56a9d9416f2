/** Fetches `url` and parses a JSON body of at most `maxBytes`, within `timeoutMs`. Throws on any failure. */
export async function fetchJson(url: string, timeoutMs: number, maxBytes: number): Promise<unknown> {
  const response = await fetch(url, {
    headers: { accept: "application/json" },
    redirect: "error",
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`GET ${url} answered ${response.status}`);
  }
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new Error(`GET ${url}: body larger than ${maxBytes} bytes`);
  }
  const body = response.body;
  if (body === null) throw new Error(`GET ${url}: empty body`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > maxBytes) throw new Error(`GET ${url}: body larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks, total).toString("utf8"));
}

export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
