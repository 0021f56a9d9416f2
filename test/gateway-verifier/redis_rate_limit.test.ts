import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import { createRedisRateLimitStore, type Verifier } from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  type SigningKey,
} from "./helpers.js";

const REDIS_URL = process.env.REDIS_URL;
const skip = REDIS_URL === undefined || REDIS_URL === "" ? "REDIS_URL not set" : false;

async function connect(): Promise<Redis> {
  const client = new Redis(REDIS_URL as string, { maxRetriesPerRequest: 1 });
  await new Promise<void>((resolve, reject) => {
    client.once("ready", () => resolve());
    client.once("error", reject);
  });
  return client;
}

/** A gateway instance: its own Redis connection, its own store, its own verifier. */
async function gateway(key: SigningKey, keyPrefix: string): Promise<{ verifier: Verifier; client: Redis }> {
  const client = await connect();
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    // The Redis store's fixed window is burst / perSecond = 100 s: the test's requests fall in one window
    // however slowly a loaded machine runs them (the counts below are exact).
    rateLimit: { perSecond: 0.05, burst: 5 },
    rateLimitStore: createRedisRateLimitStore({ client, keyPrefix }),
  });
  await verifier.ready();
  return { verifier, client };
}

describe("Redis rate-limit store (real redis-server)", () => {
  test("two verifier instances share one limit exactly, sequentially and concurrently", {
    skip,
  }, async () => {
    const key = await generateSigningKey();
    const prefix = `countersign-test:${randomUUID()}`;
    const a = await gateway(key, prefix);
    const b = await gateway(key, prefix);
    try {
      const now = Math.floor(Date.now() / 1000);
      const sequential = await mintToken(key, accessTokenClaims(now, { approval_id: "seq" }));
      const outcomes: string[] = [];
      for (let i = 0; i < 10; i++) {
        const instance = i % 2 === 0 ? a : b;
        const result = await instance.verifier.verify({ authorization: `Bearer ${sequential}` });
        outcomes.push(result.ok ? "ok" : `${result.status}`);
      }
      assert.deepEqual(outcomes, ["ok", "ok", "ok", "ok", "ok", "429", "429", "429", "429", "429"]);
      const refused = await b.verifier.verify({ authorization: `Bearer ${sequential}` });
      assert.ok(!refused.ok);
      assert.equal(refused.reason, "rate_limited");
      const retryAfter = Number(refused.headers["Retry-After"]);
      assert.ok(retryAfter >= 1 && retryAfter <= 100, `Retry-After ${retryAfter}`);

      // 40 concurrent requests, half through each instance, with two tokens of the same approval.
      const t1 = await mintToken(key, accessTokenClaims(now, { approval_id: "par" }));
      const t2 = await mintToken(key, accessTokenClaims(now, { approval_id: "par" }));
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 === 0 ? a : b).verifier.verify({ authorization: `Bearer ${i % 3 === 0 ? t1 : t2}` }),
        ),
      );
      assert.equal(results.filter((r) => r.ok).length, 5);
      assert.equal(results.filter((r) => !r.ok && r.reason === "rate_limited").length, 35);

      // Another approval of the same client has its own budget.
      const other = await mintToken(key, accessTokenClaims(now, { approval_id: "other" }));
      assert.equal((await a.verifier.verify({ authorization: `Bearer ${other}` })).ok, true);
    } finally {
      for (const g of [a, b]) {
        g.verifier.close();
        await g.client.quit();
      }
    }
  });

  test("Redis unreachable: fails closed with 503 (needs no server)", async () => {
    const key = await generateSigningKey();
    const client = new Redis("redis://127.0.0.1:1", {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    });
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      rateLimit: { perSecond: 1, burst: 1 },
      rateLimitStore: createRedisRateLimitStore({ client }),
    });
    const token = await mintToken(key, accessTokenClaims(Math.floor(Date.now() / 1000)));
    const result = await verifier.verify({ authorization: `Bearer ${token}` });
    verifier.close();
    client.disconnect();
    assert.ok(!result.ok);
    assert.deepEqual(
      { status: result.status, error: result.error, reason: result.reason },
      { status: 503, error: "temporarily_unavailable", reason: "rate_limit_unavailable" },
    );
  });
});
