import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import { createRedisCallTokenStore } from "../../gateway-verifier/src/index.js";

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

describe("Redis call-token store (real redis-server)", () => {
  test("two gateway instances: a call token is consumed once across both, and forgotten after it expires", {
    skip,
  }, async () => {
    const a = await connect();
    const b = await connect();
    try {
      const keyPrefix = `countersign-test:${randomUUID()}`;
      const first = createRedisCallTokenStore({ client: a, keyPrefix });
      const second = createRedisCallTokenStore({ client: b, keyPrefix });
      const expiresAt = Date.now() + 60_000;
      const results = await Promise.all([
        first.consume("jti-1", expiresAt),
        second.consume("jti-1", expiresAt),
      ]);
      assert.deepEqual(results.sort(), [false, true]);
      assert.equal(await first.consume("jti-1", expiresAt), false);
      assert.equal(await second.consume("jti-2", expiresAt), true);
      const ttl = await a.pttl(`${keyPrefix}:jti-1`);
      assert.ok(ttl > 50_000 && ttl <= 60_000, String(ttl));
    } finally {
      a.disconnect();
      b.disconnect();
    }
  });
});
