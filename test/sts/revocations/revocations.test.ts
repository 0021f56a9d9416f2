import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sql } from "kysely";
import { STREAMS_FULL_RETRY_AFTER_SECONDS } from "../../../sts/src/revocations/routes.js";
import { streamsFullSchema } from "../../../sts/src/revocations/wire.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import { type TestEngine, testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";
import { allowAllPolicy, openStream, revokeViaApi } from "./support.js";

function start(engine: TestEngine, revocations: Record<string, unknown> = {}): Promise<TestApp> {
  return startTestApp({
    engine,
    config: { ...baseConfig(), revocations: { sweep_interval_seconds: 3600, ...revocations } },
    appOptions: { exchangeGuards: { policy: allowAllPolicy } },
  });
}

/**
 * Starts an app and waits for the sweep it runs at start (not awaited by the start itself), so a test's
 * sweep() is its own: a start-up sweep still running when the test writes its approvals could write
 * their expiries first.
 */
async function started(engine: TestEngine, revocations: Record<string, unknown> = {}): Promise<TestApp> {
  const sts = await start(engine, revocations);
  await sts.app.revocations.sweep();
  return sts;
}

async function feed(url: string, query = ""): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/revocations${query}`);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Writes a revocation row directly, as the approval API's transaction does. */
async function insertRevoked(sts: TestApp): Promise<string> {
  const id = await insertApproval(sts.handle.db, { status: "revoked" });
  await sts.handle.db.insertInto("revocations").values({ approval_id: id, reason: "revoked" }).execute();
  return id;
}

for (const engine of testEngines()) {
  describe(`revocation feed (${engine})`, () => {
    test("GET /revocations: oldest first, string cursors, paged with after and limit", async () => {
      const sts = await start(engine);
      try {
        const empty = await feed(sts.url);
        assert.equal(empty.status, 200);
        const epoch = sts.app.revocations.hub.epoch;
        assert.match(epoch, /^[0-9a-f]{16}$/);
        assert.deepEqual(empty.body, {
          revocations: [],
          cursor: `${epoch}.0`,
          has_more: false,
          low_water: `${epoch}.0`,
        });

        const ids: string[] = [];
        for (let i = 0; i < 7; i++) ids.push(await insertRevoked(sts));
        const all = await feed(sts.url);
        const entries = all.body.revocations as Array<Record<string, unknown>>;
        assert.deepEqual(
          entries.map((e) => e.approval_id),
          ids,
        );
        for (const entry of entries) {
          assert.deepEqual(Object.keys(entry).sort(), ["approval_id", "cursor", "reason", "revoked_at"]);
          assert.equal(typeof entry.cursor, "string");
          assert.match(String(entry.cursor), new RegExp(`^${epoch}\\.[1-9][0-9]*$`));
          assert.equal(entry.reason, "revoked");
          assert.ok(!Number.isNaN(Date.parse(String(entry.revoked_at))));
        }
        const cursors = entries.map((e) => BigInt(String(e.cursor).slice(17)));
        for (let i = 1; i < cursors.length; i++) assert.ok(cursors[i]! > cursors[i - 1]!);
        assert.equal(all.body.cursor, entries.at(-1)?.cursor);

        // Paging: 3 + 3 + 1, then an empty page that keeps the cursor.
        const seen: string[] = [];
        let after: string | undefined;
        const pages: number[] = [];
        for (let page = 0; page < 10; page++) {
          const { status, body } = await feed(sts.url, `?limit=3${after ? `&after=${after}` : ""}`);
          assert.equal(status, 200);
          const got = body.revocations as Array<Record<string, unknown>>;
          pages.push(got.length);
          seen.push(...got.map((e) => String(e.approval_id)));
          if (got.length === 0) {
            assert.equal(body.cursor, after);
            assert.equal(body.has_more, false);
            break;
          }
          assert.equal(body.has_more, got.length === 3);
          after = String(body.cursor);
        }
        assert.deepEqual(pages, [3, 3, 1, 0]);
        assert.deepEqual(seen, ids);
        assert.equal(sts.logs.text.includes("unhandled error"), false);
      } finally {
        await sts.stop();
      }
    });

    test("GET /revocations: a bad after or limit is 400 invalid_request", async () => {
      const sts = await start(engine);
      try {
        for (const query of [
          "?after=abc",
          "?after=-1",
          "?after=1.5",
          "?after=0123456789ABCDEF.5",
          "?after=0123456789abcdef.01",
          "?after=0123456789abcde.5",
          "?after=0123456789abcdef.",
          "?after=",
          "?after=01",
          "?after=99999999999999999999",
          "?after=1&after=2",
          "?limit=0",
          "?limit=501",
          "?limit=ten",
        ]) {
          const { status, body } = await feed(sts.url, query);
          assert.equal(status, 400, query);
          assert.equal(body.error, "invalid_request", query);
          assert.equal(typeof body.error_description, "string");
        }
      } finally {
        await sts.stop();
      }
    });

    test("a revocation through the approval API appears in the feed", async () => {
      const sts = await start(engine);
      try {
        const id = await insertApproval(sts.handle.db);
        assert.equal(await revokeViaApi(sts, id), 200);
        const { body } = await feed(sts.url);
        const entries = body.revocations as Array<Record<string, unknown>>;
        assert.deepEqual(
          entries.map((e) => [e.approval_id, e.reason]),
          [[id, "revoked"]],
        );
      } finally {
        await sts.stop();
      }
    });

    test("sweep() runs a sweep that starts after the call: one already running is not joined, later callers share one queued", async () => {
      const sts = await started(engine);
      try {
        const order: string[] = [];
        const first = sts.app.revocations.sweep();
        const second = sts.app.revocations.sweep();
        assert.notEqual(second, first);
        assert.equal(sts.app.revocations.sweep(), second);
        void first.then(() => order.push("first"));
        void second.then(() => order.push("second"));
        // Written while the first sweep may still be reading: the queued one runs after it and sees it.
        const approved = await insertApproval(sts.handle.db, { ttl_seconds: -5, tokens_issued: 1 });
        const third = sts.app.revocations.sweep();
        const results = await Promise.all([...new Set([first, second, third])]);
        assert.deepEqual(order, ["first", "second"]);
        assert.deepEqual(
          results.flatMap((r) => r.expired),
          [approved],
        );
        // A call made as a sweep ends, before the queued one has started, joins the queued one: never two
        // sweeps at once.
        const running = sts.app.revocations.sweep();
        const queued = sts.app.revocations.sweep();
        await running;
        assert.equal(sts.app.revocations.sweep(), queued);
        await queued;
      } finally {
        await sts.stop();
      }
    });

    test("expiry: approved approvals that minted a token, past expires_at within the grace, enter the feed once", async () => {
      const sts = await started(engine);
      try {
        const approved = await insertApproval(sts.handle.db, { ttl_seconds: -60, tokens_issued: 2 });
        const later = await insertApproval(sts.handle.db, { ttl_seconds: -30, tokens_issued: 1 });
        // No token was ever minted under these: no gateway can see one, so no entry.
        await insertApproval(sts.handle.db, { ttl_seconds: -60 });
        await insertApproval(sts.handle.db, { status: "pending", ttl_seconds: -30 });
        await insertApproval(sts.handle.db, { status: "denied", ttl_seconds: -30 });
        // Expired longer ago than compaction_grace_seconds (300): its tokens are dead to every gateway.
        await insertApproval(sts.handle.db, { ttl_seconds: -301, tokens_issued: 1 });
        await insertApproval(sts.handle.db, { ttl_seconds: 3600, tokens_issued: 1 });
        const revoked = await insertRevoked(sts);

        const swept = await sts.app.revocations.sweep();
        assert.deepEqual(swept, { expired: [approved, later], compacted: 0 });
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 0 });

        const { body } = await feed(sts.url);
        const entries = body.revocations as Array<Record<string, unknown>>;
        assert.deepEqual(
          entries.map((e) => [e.approval_id, e.reason]),
          [
            [revoked, "revoked"],
            [approved, "expired"],
            [later, "expired"],
          ],
        );
        const row = await sts.handle.db
          .selectFrom("approvals")
          .select("expires_at")
          .where("id", "=", approved)
          .executeTakeFirstOrThrow();
        assert.equal(entries[1]?.revoked_at, row.expires_at.toISOString());
      } finally {
        await sts.stop();
      }
    });

    test("the sweeper runs by itself at its interval", async () => {
      const sts = await start(engine, { sweep_interval_seconds: 0.1 });
      try {
        const id = await insertApproval(sts.handle.db, { ttl_seconds: 1, tokens_issued: 1 });
        let entries: Array<Record<string, unknown>> = [];
        for (let i = 0; i < 50 && entries.length === 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          entries = (await feed(sts.url)).body.revocations as Array<Record<string, unknown>>;
        }
        assert.deepEqual(
          entries.map((e) => [e.approval_id, e.reason]),
          [[id, "expired"]],
        );
      } finally {
        await sts.stop();
      }
    });
  });

  describe(`revocation stream (${engine})`, () => {
    test("pushes a revocation at once, as id + data; heartbeats are comments", async () => {
      const sts = await start(engine, { stream_heartbeat_seconds: 0.1 });
      try {
        const raw = await fetch(`${sts.url}/revocations/stream`);
        assert.equal(raw.status, 200);
        assert.match(raw.headers.get("content-type") ?? "", /^text\/event-stream/);
        assert.equal(raw.headers.get("cache-control"), "no-store");
        const reader = raw.body!.getReader();
        let text = "";
        for (let i = 0; i < 20 && !text.includes(": heartbeat"); i++) {
          const { value } = await reader.read();
          text += new TextDecoder().decode(value);
        }
        assert.match(text, /^retry: 2000\n/);
        assert.match(text, /\n: heartbeat\n\n/);
        await reader.cancel();

        const stream = await openStream(`${sts.url}/revocations/stream`);
        const id = await insertApproval(sts.handle.db);
        assert.equal(await revokeViaApi(sts, id), 200);
        const event = await stream.next((e) => e.data.approval_id === id, 2000);
        const { body } = await feed(sts.url);
        const entry = (body.revocations as Array<Record<string, unknown>>)[0]!;
        assert.equal(event.id, entry.cursor);
        assert.deepEqual(event.data, entry);
        stream.close();
      } finally {
        await sts.stop();
      }
    });

    test("resumes after Last-Event-ID (or ?after=) without loss or repetition", async () => {
      const sts = await start(engine);
      try {
        const ids = [await insertRevoked(sts), await insertRevoked(sts), await insertRevoked(sts)];
        const { body } = await feed(sts.url);
        const first = (body.revocations as Array<Record<string, unknown>>)[0]!;

        const resumed = await openStream(`${sts.url}/revocations/stream`, {
          "last-event-id": String(first.cursor),
        });
        await resumed.next((e) => e.data.approval_id === ids[2]);
        const live = await insertApproval(sts.handle.db);
        assert.equal(await revokeViaApi(sts, live), 200);
        await resumed.next((e) => e.data.approval_id === live);
        assert.deepEqual(
          resumed.events.map((e) => e.data.approval_id),
          [ids[1], ids[2], live],
        );
        resumed.close();

        const byQuery = await openStream(`${sts.url}/revocations/stream?after=0`);
        await byQuery.next((e) => e.data.approval_id === live);
        assert.deepEqual(
          byQuery.events.map((e) => e.data.approval_id),
          [...ids, live],
        );
        byQuery.close();

        const bad = await fetch(`${sts.url}/revocations/stream`, { headers: { "last-event-id": "x" } });
        assert.equal(bad.status, 400);
        assert.equal(((await bad.json()) as Record<string, unknown>).error, "invalid_request");
      } finally {
        await sts.stop();
      }
    });

    test("subscribers are bounded: beyond the maximum, 503 temporarily_unavailable (stream_subscribers_reached) with Retry-After", async () => {
      const sts = await start(engine, { max_stream_subscribers: 2 });
      try {
        const a = await openStream(`${sts.url}/revocations/stream`);
        const b = await openStream(`${sts.url}/revocations/stream`);
        const refused = await fetch(`${sts.url}/revocations/stream`);
        assert.equal(refused.status, 503);
        assert.equal(refused.headers.get("retry-after"), String(STREAMS_FULL_RETRY_AFTER_SECONDS));
        assert.equal(refused.headers.get("retry-after"), "5");
        assert.equal(refused.headers.get("cache-control"), "no-store");
        const body = await refused.json();
        assert.deepEqual(body, {
          error: "temporarily_unavailable",
          error_description: "too many revocation stream subscribers",
          reason: "stream_subscribers_reached",
        });
        streamsFullSchema.strict().parse(body);
        a.close();
        // Bounded wait (10 s) for the server to see the closed stream and free its slot.
        for (let i = 0; i < 500 && sts.app.revocations.hub.size > 1; i++) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const c = await openStream(`${sts.url}/revocations/stream`);
        assert.equal(c.status, 200);
        b.close();
        c.close();
      } finally {
        await sts.stop();
      }
    });

    test("shutdown with open streams: the server ends them itself, without waiting for its grace period to force them", {
      // Bounds the run only. Open streams never end by themselves: were they not ended by the drain,
      // this stop (whose grace period outlasts the timeout) would never finish.
      timeout: 60_000,
    }, async () => {
      const sts = await start(engine);
      try {
        const streams = await Promise.all([1, 2, 3].map(() => openStream(`${sts.url}/revocations/stream`)));
        for (const stream of streams) assert.equal(stream.status, 200);
        assert.equal(sts.app.revocations.hub.size, 3);
        await sts.running.stop(24 * 3600 * 1000);
        await Promise.all(streams.map((s) => s.ended));
        assert.equal(sts.app.revocations.hub.size, 0);
      } finally {
        await sts.stop();
      }
    });
  });
}

describe("on real Postgres", () => {
  test("cursor order is commit order: a slow revocation transaction delays, never skips", {
    skip: !process.env.DATABASE_URL && "DATABASE_URL not set",
  }, async () => {
    const sts = await start("postgres");
    try {
      const slow = await insertApproval(sts.handle.db, { status: "revoked" });
      const fast = await insertApproval(sts.handle.db, { status: "revoked" });
      let release!: () => void;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let inserted!: () => void;
      const slowInserted = new Promise<void>((resolve) => {
        inserted = resolve;
      });
      const slowTx = sts.handle.db.transaction().execute(async (trx) => {
        await trx.insertInto("revocations").values({ approval_id: slow, reason: "revoked" }).execute();
        inserted();
        await held;
      });
      await slowInserted;
      const fastInsert = sts.handle.db
        .insertInto("revocations")
        .values({ approval_id: fast, reason: "revoked" })
        .execute();
      await new Promise((resolve) => setTimeout(resolve, 200));
      // The second insert waits for the first transaction: a reader sees neither yet.
      assert.deepEqual((await feed(sts.url)).body.revocations, []);
      release();
      await slowTx;
      await fastInsert;
      const entries = (await feed(sts.url)).body.revocations as Array<Record<string, unknown>>;
      assert.deepEqual(
        entries.map((e) => e.approval_id),
        [slow, fast],
      );
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from revocations`.execute(
        sts.handle.db,
      );
      assert.equal(rows[0]?.n, 2);
    } finally {
      await sts.stop();
    }
  });
});
