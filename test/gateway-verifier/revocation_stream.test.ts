import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { test } from "node:test";
import { readEventStream } from "../../gateway-verifier/src/revocation.js";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  sendJson,
  startServer,
} from "./helpers.js";

test("the SSE push variant revokes before the next poll", async () => {
  const key = await generateSigningKey();
  // Resolved when the verifier's stream reaches the server: it connects in the background after the
  // first poll, at whatever pace the machine allows.
  let connected!: (stream: ServerResponse) => void;
  const stream = new Promise<ServerResponse>((resolve) => {
    connected = resolve;
  });
  const sts = await startServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/revocations") return sendJson(res, 200, { revocations: [], cursor: "0" });
    if (url.pathname === "/revocations/stream") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      res.write(": connected\n\n");
      connected(res);
      return;
    }
    sendJson(res, 404, {});
  });
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    revocation: { url: `${sts.url}/revocations`, intervalMs: 60_000, stream: true },
    now: () => NOW_MS,
  });
  await verifier.ready();
  const token = await mintToken(key, accessTokenClaims(NOW, { approval_id: "appr_pushed" }));
  assert.equal((await verifier.verify({ authorization: `Bearer ${token}` })).ok, true);
  const entry = { approval_id: "appr_pushed", revoked_at: new Date(NOW_MS).toISOString(), cursor: "1" };
  (await stream).write(`id: 1\nevent: revocation\ndata: ${JSON.stringify(entry)}\n\n`);
  // Bounded wait for the pushed entry to be applied (bounds the run; the next poll is 60 s away).
  let reason = "ok";
  for (let i = 0; i < 1000 && reason === "ok"; i++) {
    await new Promise((r) => setTimeout(r, 10));
    const result = await verifier.verify({ authorization: `Bearer ${token}` });
    reason = result.ok ? "ok" : result.reason;
  }
  assert.equal(reason, "approval_revoked");
  assert.deepEqual(
    sts.requests.filter((path) => path.startsWith("/revocations?") || path === "/revocations"),
    ["/revocations"],
    "refused before any second poll",
  );
  verifier.close();
  await sts.close();
});

test("the event-stream parser handles CRLF, comments, multi-line data and split chunks", async () => {
  const text = ': hi\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: x\n\nevent: y\ndata:z\r\r';
  const encoder = new TextEncoder();
  for (const size of [1, 2, 3, 5, text.length]) {
    async function* chunks() {
      for (let i = 0; i < text.length; i += size) yield encoder.encode(text.slice(i, i + size));
    }
    const events: [string, string | undefined][] = [];
    await readEventStream(chunks(), (data, id) => events.push([data, id]));
    assert.deepEqual(
      events,
      [
        ['{"a":\n1}', "7"],
        ["x", "7"],
        ["z", "7"],
      ],
      `chunks of ${size}`,
    );
  }
});

test("the event-stream parser reads a chunk of many small events larger than 64 KiB (a replay burst); one oversized event still aborts", async () => {
  const encoder = new TextEncoder();
  const entries = Array.from({ length: 1_000 }, (_, i) => ({
    approval_id: `appr_${String(i).padStart(6, "0")}`,
    revoked_at: new Date(NOW_MS).toISOString(),
    cursor: String(i + 1),
  }));
  const burst = entries.map((entry) => `id: ${entry.cursor}\ndata: ${JSON.stringify(entry)}\n\n`).join("");
  assert.ok(burst.length > 64 * 1024);
  async function* oneChunk(text: string) {
    yield encoder.encode(text);
  }
  const events: [string, string | undefined][] = [];
  await readEventStream(oneChunk(burst), (data, id) => events.push([data, id]));
  assert.deepEqual(
    events,
    entries.map((entry) => [JSON.stringify(entry), entry.cursor]),
  );

  const huge = `data: ${"x".repeat(64 * 1024)}\n\n`;
  const seen: string[] = [];
  await assert.rejects(
    readEventStream(oneChunk(huge), (data) => seen.push(data)),
    (error: unknown) =>
      error instanceof Error && error.name === "FetchFailure" && error.message === "event too large",
  );
  assert.deepEqual(seen, []);
  // An unterminated line longer than the bound also aborts, split or not.
  async function* split() {
    for (let i = 0; i < 80; i++) yield encoder.encode("y".repeat(1024));
  }
  await assert.rejects(
    readEventStream(split(), () => {}),
    (error: unknown) => error instanceof Error && error.message === "event too large",
  );
});
