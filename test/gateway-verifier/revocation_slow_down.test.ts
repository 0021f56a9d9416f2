import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { retryAfterMs } from "../../gateway-verifier/src/http_fetch.js";
import type { VerifierBackgroundError } from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW_MS,
  sendJson,
  startServer,
} from "./helpers.js";

const SLOW_DOWN = {
  error: "slow_down",
  error_description: "too many revocation feed reads from this address: poll less often",
  reason: "feed_rate_limited",
};

/**
 * A feed that answers 429 with `Retry-After: <retryAfter>` to every read within `windowMs` of the
 * first one (as the STS's per-address limiter does), and an empty page after.
 */
async function startLimitedFeed(retryAfter: string, windowMs: number) {
  let first: number | undefined;
  return startServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== "/revocations") return sendJson(res, 404, {});
    first ??= Date.now();
    if (Date.now() - first < windowMs) {
      const text = JSON.stringify(SLOW_DOWN);
      res.writeHead(429, { "content-type": "application/json", "retry-after": retryAfter });
      return res.end(text);
    }
    sendJson(res, 200, { revocations: [], cursor: "e1.0" });
  });
}

describe("gateway verifier: a feed that answers 429", () => {
  test("sends nothing more until Retry-After has passed (polls, refresh and ready() alike), and refuses tokens meanwhile (503 revocation_unavailable)", async () => {
    const key = await generateSigningKey();
    const feed = await startLimitedFeed("120", 600_000);
    const errors: VerifierBackgroundError[] = [];
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${feed.url}/revocations`, intervalMs: 10 },
      readyTimeoutMs: 400,
      now: () => NOW_MS,
      onError: (error) => errors.push(error),
    });
    try {
      await assert.rejects(verifier.ready(), (error: VerifierBackgroundError) => {
        assert.equal(error.code, "not_ready");
        assert.equal(error.reason, "http_error");
        assert.equal(error.status, 429);
        return true;
      });
      assert.deepEqual(feed.requests, ["/revocations"]);
      assert.deepEqual(
        errors.map((error) => [error.code, error.reason, error.status]),
        [["revocation_poll_failed", "http_error", 429]],
      );
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok, false);
      assert.equal(result.ok ? "" : result.reason, "revocation_unavailable");
      assert.equal(result.ok ? 0 : result.status, 503);
      assert.deepEqual(feed.requests, ["/revocations"]);
    } finally {
      verifier.close();
      await feed.close();
    }
  });

  test("polls again once Retry-After has passed, and syncs: one refused read, one read after", async () => {
    const key = await generateSigningKey();
    const feed = await startLimitedFeed("1", 900);
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${feed.url}/revocations`, intervalMs: 10 },
      readyTimeoutMs: 10_000,
      now: () => NOW_MS,
      onError: () => {},
    });
    try {
      await verifier.ready();
      assert.deepEqual(feed.requests, ["/revocations", "/revocations"]);
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok, true);
    } finally {
      verifier.close();
      await feed.close();
    }
  });

  test("the stream, answered 429, reconnects no sooner than its Retry-After", async () => {
    const key = await generateSigningKey();
    const sts = await startServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/revocations") return sendJson(res, 200, { revocations: [], cursor: "e1.0" });
      res.writeHead(429, { "content-type": "application/json", "retry-after": "120" });
      res.end(JSON.stringify({ error: "too_many_streams", error_description: "too many" }));
    });
    const errors: VerifierBackgroundError[] = [];
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 60_000, stream: true },
      now: () => NOW_MS,
      onError: (error) => errors.push(error),
    });
    try {
      await verifier.ready();
      // Without Retry-After the stream would reconnect after 1 s, then 2 s.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      assert.deepEqual(
        sts.requests.filter((path) => path === "/revocations/stream"),
        ["/revocations/stream"],
      );
      assert.deepEqual(
        errors.map((error) => [error.code, error.status]),
        [["revocation_stream_failed", 429]],
      );
    } finally {
      verifier.close();
      await sts.close();
    }
  });
});

describe("Retry-After", () => {
  test("whole seconds or an HTTP date, at least 1 s and at most 10 minutes; the fallback when absent or malformed", () => {
    const now = Date.UTC(2030, 0, 1);
    assert.equal(retryAfterMs("7", now, 5_000), 7_000);
    assert.equal(retryAfterMs(" 0 ", now, 5_000), 1_000);
    assert.equal(retryAfterMs("99999", now, 5_000), 600_000);
    assert.equal(retryAfterMs(new Date(now + 30_000).toUTCString(), now, 5_000), 30_000);
    assert.equal(retryAfterMs(null, now, 5_000), 5_000);
    assert.equal(retryAfterMs("-3", now, 5_000), 5_000);
    assert.equal(retryAfterMs("soon", now, 5_000), 5_000);
  });
});
