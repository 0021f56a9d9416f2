import assert from "node:assert/strict";
import http from "node:http";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { FeedReadLimiter } from "../../../sts/src/revocations/feed_rate_limit.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import { type TestEngine, testEngines } from "../../helpers/database.js";
import { allowAllPolicy } from "./support.js";

function start(engine: TestEngine, revocations: Record<string, unknown>): Promise<TestApp> {
  return startTestApp({
    engine,
    config: { ...baseConfig(), revocations: { sweep_interval_seconds: 3600, ...revocations } },
    appOptions: { exchangeGuards: { policy: allowAllPolicy } },
  });
}

interface FeedAnswer {
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly body: Record<string, unknown>;
}

/** `GET <sts>/revocations` from `localAddress` (any 127.0.0.0/8 address is local on Linux). */
function readFeedFrom(
  url: string,
  options: { localAddress?: string; headers?: Record<string, string> } = {},
): Promise<FeedAnswer> {
  return new Promise((resolve, reject) => {
    const request = http.get(
      `${url}/revocations`,
      { localAddress: options.localAddress, headers: options.headers ?? {} },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const retryAfter = response.headers["retry-after"];
          resolve({
            status: response.statusCode ?? 0,
            retryAfter: typeof retryAfter === "string" ? retryAfter : undefined,
            body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>,
          });
        });
        response.on("error", reject);
      },
    );
    request.on("error", reject);
  });
}

const REFUSAL = {
  error: "slow_down",
  error_description: "too many revocation feed reads from this address: poll less often",
  reason: "feed_rate_limited",
};

for (const engine of testEngines()) {
  describe(`GET /revocations reads per client address (${engine})`, () => {
    test("a flood from one address: exactly max_feed_reads_per_address_per_minute reads, then 429 slow_down (feed_rate_limited) with Retry-After; X-Forwarded-For is ignored; another address is unaffected", async () => {
      const sts = await start(engine, { max_feed_reads_per_address_per_minute: 5 });
      // The limiter reads Date.now(): freeze it (timers stay real) so Retry-After is exact.
      mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 8; i++) statuses.push((await readFeedFrom(sts.url)).status);
        assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
        for (const headers of [{} as Record<string, string>, { "x-forwarded-for": "198.51.100.7" }]) {
          const refused = await readFeedFrom(sts.url, { headers });
          assert.equal(refused.status, 429);
          // The window began at the first read and the clock stands still: all of it is left.
          assert.equal(refused.retryAfter, "60");
          assert.deepEqual(refused.body, REFUSAL);
        }
        mock.timers.tick(44_500);
        const later = await readFeedFrom(sts.url);
        assert.deepEqual([later.status, later.retryAfter, later.body], [429, "16", REFUSAL]);
        mock.timers.tick(15_500);
        assert.equal((await readFeedFrom(sts.url)).status, 200);
        const other: number[] = [];
        for (let i = 0; i < 6; i++) {
          other.push((await readFeedFrom(sts.url, { localAddress: "127.0.0.2" })).status);
        }
        assert.deepEqual(other, [200, 200, 200, 200, 200, 429]);
        const page = await readFeedFrom(sts.url, { localAddress: "127.0.0.3" });
        assert.equal(page.status, 200);
        assert.deepEqual(page.body.revocations, []);
      } finally {
        mock.timers.reset();
        await sts.stop();
      }
    });

    test("trust_proxy: reads count under the X-Forwarded-For entry the proxy appended, never one the client wrote", async () => {
      const sts = await start(engine, { max_feed_reads_per_address_per_minute: 2, trust_proxy: true });
      try {
        const via = async (forwarded: string) =>
          (await readFeedFrom(sts.url, { headers: { "x-forwarded-for": forwarded } })).status;
        const statuses: number[] = [];
        for (const forwarded of [
          "203.0.113.7",
          "203.0.113.7",
          "203.0.113.7",
          "198.51.100.1, 203.0.113.7",
          "203.0.113.7, 198.51.100.1",
        ]) {
          statuses.push(await via(forwarded));
        }
        assert.deepEqual(statuses, [200, 200, 429, 429, 200]);
      } finally {
        await sts.stop();
      }
    });
  });
}

describe("feed read limiter", () => {
  // rate-limiter-flexible reads Date.now(): freeze it (timers stay real) so the waits are exact.
  beforeEach(() => mock.timers.enable({ apis: ["Date"], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  test("counts perMinute reads per address in a fixed 60-second window from its first read, then says the whole seconds until it ends", async () => {
    const limiter = new FeedReadLimiter({ perMinute: 3 });
    const taken = [];
    for (let i = 0; i < 5; i++) taken.push(await limiter.take("203.0.113.7"));
    assert.deepEqual(taken, [0, 0, 0, 60, 60]);
    mock.timers.tick(1);
    assert.equal(await limiter.take("203.0.113.7"), 60);
    mock.timers.tick(58_999);
    assert.equal(await limiter.take("203.0.113.7"), 1);
    assert.equal(await limiter.take("198.51.100.1"), 0);
    // Refusals do not move the window: it ends 60 s after the first read, and a fresh one begins.
    mock.timers.tick(1_000);
    const next = [];
    for (let i = 0; i < 4; i++) next.push(await limiter.take("203.0.113.7"));
    assert.deepEqual(next, [0, 0, 0, 60]);
  });

  test("a flood of 50 000 distinct addresses keeps at most maxAddresses counters; a forgotten address starts afresh", async () => {
    const limiter = new FeedReadLimiter({ perMinute: 1, maxAddresses: 1000 });
    assert.equal(await limiter.take("first"), 0);
    assert.equal(await limiter.take("first"), 60);
    for (let i = 0; i < 50_000; i++) await limiter.take(`flood-${i}`);
    assert.equal(limiter.size, 1000);
    assert.equal(limiter.counters(), 1000);
    assert.equal(await limiter.take("first"), 0);
    assert.equal(limiter.size, 1000);
    assert.equal(limiter.counters(), 1000);
  });
});
