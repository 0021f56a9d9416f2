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
  const streams: ServerResponse[] = [];
  const sts = await startServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/revocations") return sendJson(res, 200, { revocations: [], cursor: "0" });
    if (url.pathname === "/revocations/stream") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      res.write(": connected\n\n");
      streams.push(res);
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
  for (let i = 0; i < 50 && streams.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  const entry = { approval_id: "appr_pushed", revoked_at: new Date(NOW_MS).toISOString(), cursor: "1" };
  streams[0]?.write(`id: 1\nevent: revocation\ndata: ${JSON.stringify(entry)}\n\n`);
  let reason = "ok";
  for (let i = 0; i < 100 && reason === "ok"; i++) {
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
