import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Kysely, type KyselyPlugin, SelectQueryNode, sql, TableNode } from "kysely";
import { createVerifier } from "../../../gateway-verifier/src/index.js";
import { openDatabase } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import type { Database } from "../../../sts/src/db/schema.js";
import { REVOCATIONS_CHANNEL } from "../../../sts/src/revocations/channel.js";
import { addressKey, clientAddress } from "../../../sts/src/revocations/client_address.js";
import { ReplayBudget } from "../../../sts/src/revocations/replay_budget.js";
import { COMPACTION_BATCH, COMPACTION_BATCHES_PER_SWEEP } from "../../../sts/src/revocations/sweeper.js";
import { baseConfig, startTestApp, type TestApp } from "../../helpers/app.js";
import {
  createTestDatabase,
  type TestDatabase,
  type TestEngine,
  testEngines,
} from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";
import {
  allowAllPolicy,
  floodRevocations,
  getFeed,
  letTimePass,
  openStreamFrom,
  position,
  revokeViaApi,
} from "./support.js";

/** What else an app of these tests may be given. */
interface StartOptions {
  /** The clock of the stream's replay budget (`revocationsClock`). Default: real time. */
  readonly clock?: () => number;
  /** The database (e.g. one whose queries are counted). Default: a fresh one. */
  readonly database?: TestDatabase;
}

function start(
  engine: TestEngine,
  revocations: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
  options: StartOptions = {},
): Promise<TestApp> {
  return startTestApp({
    engine,
    database: options.database,
    config: { ...baseConfig(), revocations: { sweep_interval_seconds: 3600, ...revocations }, ...extra },
    appOptions: { exchangeGuards: { policy: allowAllPolicy }, revocationsClock: options.clock },
  });
}

/** Starts an app and waits for the sweep it runs at start, so a test's sweep() is its own. */
async function started(
  engine: TestEngine,
  revocations: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
  options: StartOptions = {},
): Promise<TestApp> {
  const sts = await start(engine, revocations, extra, options);
  await sts.app.revocations.sweep();
  return sts;
}

/**
 * A fresh database on `engine` whose handles count the statements reading the feed's state (a select
 * from `revocation_feed`: one per feed read of `GET /revocations` or of an instance's stream hub).
 */
async function countingFeedStateReads(
  engine: TestEngine,
): Promise<{ database: TestDatabase; reads: () => number }> {
  const inner = await createTestDatabase(engine);
  let reads = 0;
  const plugin: KyselyPlugin = {
    transformQuery({ node }) {
      if (
        SelectQueryNode.is(node) &&
        node.from?.froms.some(
          (from) => TableNode.is(from) && from.table.identifier.name === "revocation_feed",
        )
      ) {
        reads++;
      }
      return node;
    },
    transformResult: async ({ result }) => result,
  };
  const database: TestDatabase = {
    engine: inner.engine,
    url: inner.url,
    dispose: () => inner.dispose(),
    open: async () => {
      const handle = await inner.open();
      return { ...handle, db: handle.db.withPlugin(plugin) };
    },
  };
  return { database, reads: () => reads };
}

/**
 * Waits until the instance has finished every read it does by itself after starting (on Postgres the
 * LISTEN connection wakes the hub once connected): writes one entry, notifies, waits for the hub to
 * hold it and for its read to end. Returns the entry's approval id.
 */
async function quiesce(sts: TestApp): Promise<string> {
  const { db } = sts.handle;
  const [id] = await floodRevocations(db, 1, { prefix: "apr_quiet_" });
  await sql`select pg_notify(${REVOCATIONS_CHANNEL}, 'test')`.execute(db);
  await until(() => sts.app.revocations.hub.held === 1, "the hub to read the entry");
  await sts.app.revocations.hub.settled();
  return String(id);
}

async function count(db: Kysely<Database>): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from revocations`.execute(db);
  return rows[0]?.n ?? -1;
}

async function neededUntil(db: Kysely<Database>, approvalId: string): Promise<Date | null> {
  const rows = await db
    .selectFrom("revocations")
    .select("needed_until")
    .where("approval_id", "=", approvalId)
    .execute();
  assert.equal(rows.length, 1);
  return rows[0]?.needed_until ?? null;
}

async function revokedAt(db: Kysely<Database>, approvalId: string): Promise<Date> {
  const row = await db
    .selectFrom("revocations")
    .select("revoked_at")
    .where("approval_id", "=", approvalId)
    .executeTakeFirstOrThrow();
  return row.revoked_at;
}

/**
 * An approved approval under which tokens expiring at now + `exps` seconds were minted (their
 * `issued_tokens` rows), then revoked: its feed entry, written as the approval API writes it.
 */
async function revokedWithTokens(db: Kysely<Database>, exps: number[]): Promise<string> {
  const id = await insertApproval(db, { tokens_issued: exps.length, max_tokens: 10 });
  for (const [i, exp] of exps.entries()) {
    await sql`insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, iat, exp)
      values (${`${id}-${i}`}, ${id}, 'billing-agent', 'alice', 'https://crm.example.test', 'crm:read',
        now() - interval '1 hour', now() + make_interval(secs => ${exp}))`.execute(db);
  }
  await sql`update approvals set status = 'revoked', revoked_at = now() where id = ${id}`.execute(db);
  await db.insertInto("revocations").values({ approval_id: id, reason: "revoked" }).execute();
  return id;
}

async function cursorOf(db: Kysely<Database>, approvalId: string): Promise<bigint> {
  const row = await db
    .selectFrom("revocations")
    .select(sql<string>`"cursor"::text`.as("cursor"))
    .where("approval_id", "=", approvalId)
    .executeTakeFirstOrThrow();
  return BigInt(row.cursor);
}

function ids(body: Record<string, unknown>): string[] {
  return (body.revocations as Array<Record<string, unknown>>).map((entry) => String(entry.approval_id));
}

/** Waits (bounded) until `condition` holds. */
async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The 429 of a stream resumption past the address's replays. */
const REPLAYS_REFUSED = {
  error: "too_many_streams",
  error_description:
    "too many revocation stream replays for this address: resume less often, or poll GET /revocations",
  reason: "replay_rate_limited",
};

/** How many `GET /revocations` were answered 410 (from /metrics). */
async function resetsAnswered(sts: TestApp): Promise<number> {
  const text = await (await fetch(`${sts.url}/metrics`)).text();
  const match = /countersign_http_requests_total\{route="revocations",method="GET",status="410"\} (\d+)/.exec(
    text,
  );
  return match ? Number(match[1]) : 0;
}

for (const engine of testEngines()) {
  describe(`revocation feed compaction (${engine})`, () => {
    test("an entry is kept compaction_grace_seconds past the later of its writing and its approval's last token exp; compaction removes the oldest first and the low-water mark follows", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const minted = await revokedWithTokens(db, [50, 100]);
        const [noToken] = await floodRevocations(db, 1, { prefix: "apr_a_" });
        const alive = await revokedWithTokens(db, [400]);
        const [behind] = await floodRevocations(db, 1, { prefix: "apr_b_" });
        const expiredTokens = await revokedWithTokens(db, [-1000]);
        const mintedExp = await sql<{ exp: Date }>`select max(exp) as exp from issued_tokens
          where approval_id = ${minted}`.execute(db);
        assert.deepEqual(await neededUntil(db, minted), mintedExp.rows[0]?.exp);
        // Written now: kept past its writing even with no token, or with every token long expired.
        assert.deepEqual(await neededUntil(db, String(noToken)), await revokedAt(db, String(noToken)));
        assert.deepEqual(await neededUntil(db, expiredTokens), await revokedAt(db, expiredTokens));

        const epoch = sts.app.revocations.hub.epoch;
        const before = await getFeed(sts.url);
        assert.deepEqual(ids(before.body), [minted, noToken, alive, behind, expiredTokens]);
        assert.equal(before.body.low_water, `${epoch}.0`);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 0 });

        // 401 s on: the first two are 301 s past; the third has a token alive 300 s ago, so it and
        // everything after it stay.
        await letTimePass(db, 401);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 2 });
        assert.equal(await count(db), 3);
        const listed = before.body.revocations as Array<Record<string, unknown>>;
        const lowWater = `${epoch}.${position(listed[1]?.cursor)}`;
        const after = await getFeed(sts.url);
        assert.deepEqual(ids(after.body), [alive, behind, expiredTokens]);
        assert.equal(after.body.low_water, lowWater);
        const below = await getFeed(sts.url, `?after=${epoch}.0`);
        assert.equal(below.status, 410);
        assert.equal(below.body.cursor, lowWater);

        await letTimePass(db, 300);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 3 });
        assert.equal(await count(db), 0);
        const head = `${epoch}.${position(listed[4]?.cursor)}`;
        const empty = await getFeed(sts.url);
        assert.deepEqual(empty.body, { revocations: [], cursor: head, has_more: false, low_water: head });
        // A gateway at the head continues; one that had not read the last three must resynchronise.
        assert.equal((await getFeed(sts.url, `?after=${head}`)).status, 200);
        assert.equal((await getFeed(sts.url, `?after=${lowWater}`)).status, 410);
      } finally {
        await sts.stop();
      }
    });

    test("an entry whose issued_tokens rows are gone is kept until expires_at, or revoked_at + tokens.max_ttl_seconds, plus the grace", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const early = await insertApproval(db, { tokens_issued: 1, ttl_seconds: 100 });
        const late = await insertApproval(db, { tokens_issued: 1, ttl_seconds: 3600 });
        for (const id of [early, late]) {
          await sql`update approvals set status = 'revoked', revoked_at = now() where id = ${id}`.execute(db);
          await db.insertInto("revocations").values({ approval_id: id, reason: "revoked" }).execute();
          assert.equal(await neededUntil(db, id), null);
        }
        // early: expires_at (100 s) + 300 s; late: revoked_at + 900 s (tokens.max_ttl_seconds) + 300 s.
        // Compaction reads the database's now(), which a test cannot pin, and real time passes on top of
        // the time moved here: so each entry is seen kept 30 s before its end (a pause of up to 30 s on a
        // loaded machine, not a 1 s one, between the writes and the sweep) and removed 1 s after it.
        await letTimePass(db, 370);
        assert.equal((await sts.app.revocations.sweep()).compacted, 0);
        await letTimePass(db, 31);
        assert.equal((await sts.app.revocations.sweep()).compacted, 1);
        assert.deepEqual(ids((await getFeed(sts.url)).body), [late]);
        await letTimePass(db, 769);
        assert.equal((await sts.app.revocations.sweep()).compacted, 0);
        await letTimePass(db, 31);
        assert.equal((await sts.app.revocations.sweep()).compacted, 1);
        assert.equal(await count(db), 0);
      } finally {
        await sts.stop();
      }
    });

    test(`a flood is compacted in bounded batches: exactly ${COMPACTION_BATCH * COMPACTION_BATCHES_PER_SWEEP} entries per sweep`, async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const perSweep = COMPACTION_BATCH * COMPACTION_BATCHES_PER_SWEEP;
        const flood = await floodRevocations(db, perSweep + 500);
        await letTimePass(db, 301);
        const [kept] = await floodRevocations(db, 1, { prefix: "apr_kept_" });
        assert.equal(await count(db), perSweep + 501);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: perSweep });
        assert.equal(await count(db), 501);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 500 });
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 0 });
        const epoch = sts.app.revocations.hub.epoch;
        const { body } = await getFeed(sts.url);
        assert.deepEqual(ids(body), [kept]);
        assert.equal(body.low_water, `${epoch}.${await cursorOfCompacted(db, flood)}`);
      } finally {
        await sts.stop();
      }
    });

    test("the sweeper adds no entry for an approval that minted no token, and never writes back one compaction removed", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const minted = await insertApproval(db, { ttl_seconds: -10, tokens_issued: 1 });
        await insertApproval(db, { ttl_seconds: -10 });
        await insertApproval(db, { status: "pending", ttl_seconds: -10 });
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [minted], compacted: 0 });
        await letTimePass(db, 301);
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 1 });
        assert.deepEqual(await sts.app.revocations.sweep(), { expired: [], compacted: 0 });
        assert.deepEqual(ids((await getFeed(sts.url)).body), []);
      } finally {
        await sts.stop();
      }
    });

    test("a revocation through the API after an exchange keeps its entry until the minted token's exp", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const approvalId = await insertApproval(db, { scope: "crm:read", max_tokens: 5 });
        for (let i = 0; i < 2; i++) {
          const issued = await exchange(sts.url, {
            subject_token,
            scope: "crm:read",
            authorization_details: agentTask(approvalId),
          });
          assert.equal(issued.status, 200, JSON.stringify(issued.body));
        }
        assert.equal(await revokeViaApi(sts, approvalId), 200);
        const { rows } = await sql<{ exp: Date }>`select max(exp) as exp from issued_tokens
          where approval_id = ${approvalId}`.execute(db);
        assert.ok(rows[0]?.exp instanceof Date);
        assert.deepEqual(await neededUntil(db, approvalId), rows[0]?.exp);
      } finally {
        await sts.stop();
      }
    });
  });

  describe(`revocation feed cursors and epochs (${engine})`, () => {
    test("410 cursor_reset for a cursor of another epoch, below the low-water mark or ahead of the head, on the feed and the stream; plain cursors work where valid", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const old = await floodRevocations(db, 3);
        await letTimePass(db, 301);
        const live = await floodRevocations(db, 2, { prefix: "apr_live_" });
        assert.equal((await sts.app.revocations.sweep()).compacted, 3);
        const epoch = sts.app.revocations.hub.epoch;
        const low = await cursorOfCompacted(db, old);
        const head = await cursorOf(db, String(live[1]));
        const restart = `${epoch}.${low}`;

        for (const after of [`${epoch}.${low}`, `${low}`]) {
          const page = await getFeed(sts.url, `?after=${after}`);
          assert.equal(page.status, 200, after);
          assert.deepEqual(ids(page.body), live, after);
        }
        const other = epoch === "0123456789abcdef" ? "fedcba9876543210" : "0123456789abcdef";
        const cases: Array<[string, Record<string, unknown>]> = [
          [
            `${other}.${low}`,
            {
              error: "cursor_reset",
              error_description:
                "the cursor is from another epoch of the feed (the database was restored or replaced)",
              reason: "cursor_epoch_mismatch",
              cursor: restart,
            },
          ],
          [
            `${epoch}.${low - 1n}`,
            {
              error: "cursor_reset",
              error_description:
                "the cursor is below the feed's low-water mark: older entries were compacted away",
              reason: "cursor_below_low_water",
              cursor: restart,
            },
          ],
          [
            "0",
            {
              error: "cursor_reset",
              error_description:
                "the cursor is below the feed's low-water mark: older entries were compacted away",
              reason: "cursor_below_low_water",
              cursor: restart,
            },
          ],
          [
            `${epoch}.${head + 1n}`,
            {
              error: "cursor_reset",
              error_description:
                "the cursor is ahead of the feed's head (the database was restored to an earlier point)",
              reason: "cursor_ahead_of_head",
              cursor: restart,
            },
          ],
        ];
        for (const [after, expected] of cases) {
          const answer = await getFeed(sts.url, `?after=${after}`);
          assert.equal(answer.status, 410, after);
          assert.equal(answer.headers.get("cache-control"), "no-store");
          assert.deepEqual(answer.body, expected, after);
          for (const request of [{ headers: { "last-event-id": after } }, { query: `?after=${after}` }]) {
            const stream = await openStreamFrom(sts.url, request);
            assert.equal(stream.status, 410, after);
            assert.deepEqual(stream.refusal, expected, after);
          }
        }
        assert.equal(sts.app.revocations.hub.size, 0);
      } finally {
        await sts.stop();
      }
    });

    test("each database draws its own random epoch", async () => {
      const epochs: string[] = [];
      for (let i = 0; i < 2; i++) {
        const database = engine === "pglite" ? undefined : await createTestDatabase("postgres");
        const handle = database
          ? await database.open()
          : await openDatabase({ url: undefined, dataDir: "memory://" });
        try {
          await migrateToLatest(handle.db);
          const rows = await handle.db.selectFrom("revocation_feed").select("epoch").execute();
          assert.equal(rows.length, 1);
          epochs.push(String(rows[0]?.epoch));
        } finally {
          await handle.close();
          await database?.dispose();
        }
      }
      for (const epoch of epochs) assert.match(epoch, /^[0-9a-f]{16}$/);
      assert.notEqual(epochs[0], epochs[1]);
    });

    test("a restore to an earlier point: new entries get cursors above every cursor seen before it; a cursor ahead of the restored head is told to restart", async () => {
      const sts = await started(engine, { poll_interval_seconds: 3600 });
      const { db } = sts.handle;
      try {
        const entries = await floodRevocations(db, 3);
        const epoch = sts.app.revocations.hub.epoch;
        const first = await cursorOf(db, String(entries[0]));
        const seen = await cursorOf(db, String(entries[2]));
        // The restore: the last two entries and the cursor sequence go back to where the first was.
        await sql`delete from revocations where "cursor" > ${first.toString()}::bigint`.execute(db);
        await sql`select setval(pg_get_serial_sequence('revocations', 'cursor'), ${first.toString()}::bigint)`.execute(
          db,
        );
        const ahead = await getFeed(sts.url, `?after=${epoch}.${seen}`);
        assert.equal(ahead.status, 410);
        assert.equal(ahead.body.reason, "cursor_ahead_of_head");
        assert.equal(ahead.body.cursor, `${epoch}.0`);

        const [revokedAfter] = await floodRevocations(db, 1, { prefix: "apr_after_" });
        assert.ok((await cursorOf(db, String(revokedAfter))) > seen);
        const resumed = await getFeed(sts.url, `?after=${epoch}.${seen}`);
        assert.equal(resumed.status, 200);
        assert.deepEqual(ids(resumed.body), [revokedAfter]);
      } finally {
        await sts.stop();
      }
    });

    test("an instance that sees the head move back draws a new epoch and ends its streams; old cursors answer 410", async () => {
      const sts = await started(engine, { poll_interval_seconds: 3600 });
      const { db } = sts.handle;
      try {
        const entries = await floodRevocations(db, 3);
        await sts.app.revocations.hub.refresh();
        const epoch = sts.app.revocations.hub.epoch;
        const seen = await cursorOf(db, String(entries[2]));
        const stream = await openStreamFrom(sts.url, { headers: { "last-event-id": `${epoch}.${seen}` } });
        assert.equal(stream.status, 200);
        await sql`delete from revocations where approval_id = ${String(entries[2])}`.execute(db);
        await sts.app.revocations.hub.refresh();
        const rotated = sts.app.revocations.hub.epoch;
        assert.notEqual(rotated, epoch);
        assert.match(rotated, /^[0-9a-f]{16}$/);
        await stream.ended;
        assert.equal(sts.app.revocations.hub.size, 0);
        assert.equal(sts.logs.text.includes('"event":"revocations.head_moved_back"'), true);
        const answer = await getFeed(sts.url, `?after=${epoch}.${seen}`);
        assert.equal(answer.status, 410);
        assert.equal(answer.body.reason, "cursor_epoch_mismatch");
        assert.equal(answer.body.cursor, `${rotated}.0`);
        const snapshot = await getFeed(sts.url, `?after=${rotated}.0`);
        assert.deepEqual(ids(snapshot.body), entries.slice(0, 2));
      } finally {
        await sts.stop();
      }
    });
  });

  describe(`revocation stream bounds (${engine})`, () => {
    test("a resuming subscriber is replayed at most max_replay_entries, exactly the entries after its cursor, from memory; one further behind is told to read the feed", async () => {
      const sts = await started(engine, { max_replay_entries: 250, max_streams_per_address: 100 });
      const { db } = sts.handle;
      try {
        const entries = await floodRevocations(db, 300);
        await sts.app.revocations.hub.refresh();
        assert.equal(sts.app.revocations.hub.held, 250);
        const epoch = sts.app.revocations.hub.epoch;
        const at = async (index: number) => `${epoch}.${await cursorOf(db, String(entries[index]))}`;

        // From the oldest entry replayed (250 behind) to the newest (nothing to replay), across the
        // blocks replays are written in; three subscribers at each.
        const starts = [49, 99, 100, 150, 298, 299];
        const subscribers = await Promise.all(
          starts.flatMap((index) =>
            [1, 2, 3].map(async () => ({
              index,
              stream: await openStreamFrom(sts.url, { headers: { "last-event-id": await at(index) } }),
            })),
          ),
        );
        const live = await openStreamFrom(sts.url);
        for (const { stream } of subscribers) assert.equal(stream.status, 200);
        assert.equal(live.status, 200);
        await Promise.all(
          subscribers
            .filter(({ index }) => index < 299)
            .map(({ stream }) => stream.next((e) => e.data.approval_id === entries[299])),
        );
        const liveId = await insertApproval(db);
        assert.equal(await revokeViaApi(sts, liveId), 200);
        for (const { stream } of [...subscribers, { stream: live }]) {
          await stream.next((e) => e.data.approval_id === liveId);
          stream.close();
        }
        for (const { index, stream } of subscribers) {
          assert.deepEqual(
            stream.events.map((e) => e.data.approval_id),
            [...entries.slice(index + 1), liveId],
            `resumed after entry ${index}`,
          );
        }
        assert.deepEqual(
          live.events.map((e) => e.data.approval_id),
          [liveId],
        );

        const at48 = await at(48);
        for (const after of [at48, "0", `${epoch}.0`]) {
          const refused = await openStreamFrom(sts.url, { headers: { "last-event-id": after } });
          assert.equal(refused.status, 410, after);
          assert.deepEqual(refused.refusal, {
            error: "cursor_reset",
            error_description:
              "the cursor is more than 250 entries behind: read GET /revocations after the cursor given, then resume the stream",
            reason: "cursor_beyond_replay",
            cursor: after === "0" ? `${epoch}.0` : after,
          });
        }
        const read = await getFeed(sts.url, `?after=${at48}`);
        assert.deepEqual(ids(read.body), [...entries.slice(49), liveId]);
      } finally {
        await sts.stop();
      }
    });

    test("slots per client address: exactly max_streams_per_address, then 429 too_many_streams with Retry-After; X-Forwarded-For is ignored; other addresses are unaffected", async () => {
      const sts = await started(engine, { max_streams_per_address: 3 });
      try {
        const open = await Promise.all([1, 2, 3].map(() => openStreamFrom(sts.url)));
        for (const stream of open) assert.equal(stream.status, 200);
        for (const headers of [{} as Record<string, string>, { "x-forwarded-for": "198.51.100.7" }]) {
          const refused = await openStreamFrom(sts.url, { headers });
          assert.equal(refused.status, 429);
          assert.equal(refused.headers.get("retry-after"), "10");
          assert.equal(refused.headers.get("cache-control"), "no-store");
          assert.deepEqual(refused.refusal, {
            error: "too_many_streams",
            error_description:
              "too many revocation streams from this address: close one, or poll GET /revocations",
            reason: "streams_per_address_reached",
          });
        }
        const other = await Promise.all(
          [1, 2, 3].map(() => openStreamFrom(sts.url, { localAddress: "127.0.0.2" })),
        );
        for (const stream of other) assert.equal(stream.status, 200);
        assert.equal((await openStreamFrom(sts.url, { localAddress: "127.0.0.2" })).status, 429);
        assert.equal(sts.app.revocations.hub.size, 6);

        open[0]?.close();
        await until(() => sts.app.revocations.hub.size === 5, "the closed stream's slot");
        const again = await openStreamFrom(sts.url);
        assert.equal(again.status, 200);
        assert.equal((await openStreamFrom(sts.url)).status, 429);
        for (const stream of [...open, ...other, again]) stream.close();
      } finally {
        await sts.stop();
      }
    });

    test("replays per client address: bursts of max_streams_per_address, then max_replays_per_address_per_minute, else 429 too_many_streams with Retry-After; live streams and empty backlogs are not replays", async () => {
      let now = 1_000_000;
      const sts = await started(
        engine,
        { max_streams_per_address: 3, max_replays_per_address_per_minute: 2 },
        {},
        { clock: () => now },
      );
      const { db } = sts.handle;
      try {
        const entries = await floodRevocations(db, 5);
        await sts.app.revocations.hub.refresh();
        const epoch = sts.app.revocations.hub.epoch;
        const first = `${epoch}.${await cursorOf(db, String(entries[0]))}`;
        const last = `${epoch}.${await cursorOf(db, String(entries[4]))}`;
        for (let i = 0; i < 3; i++) {
          const stream = await openStreamFrom(sts.url, { headers: { "last-event-id": first } });
          assert.equal(stream.status, 200);
          await stream.next((e) => e.data.approval_id === entries[4]);
          assert.equal(stream.events.length, 4);
          stream.close();
          await until(() => sts.app.revocations.hub.size === 0, "the stream to close");
        }
        const refused = await openStreamFrom(sts.url, { headers: { "last-event-id": first } });
        assert.equal(refused.status, 429);
        // Two replays a minute: one more in 30 s (the clock stands still).
        assert.equal(refused.headers.get("retry-after"), "30");
        assert.equal(refused.headers.get("cache-control"), "no-store");
        assert.deepEqual(refused.refusal, REPLAYS_REFUSED);
        now += 15_000;
        const later = await openStreamFrom(sts.url, { headers: { "last-event-id": first } });
        assert.equal(later.status, 429);
        assert.equal(later.headers.get("retry-after"), "15");
        assert.deepEqual(later.refusal, REPLAYS_REFUSED);
        const live = await openStreamFrom(sts.url);
        const atHead = await openStreamFrom(sts.url, { headers: { "last-event-id": last } });
        const elsewhere = await openStreamFrom(sts.url, {
          localAddress: "127.0.0.2",
          headers: { "last-event-id": first },
        });
        assert.deepEqual([live.status, atHead.status, elsewhere.status], [200, 200, 200]);
        await elsewhere.next((e) => e.data.approval_id === entries[4]);
        for (const stream of [live, atHead, elsewhere]) stream.close();
        await until(() => sts.app.revocations.hub.size === 0, "the streams to close");
        now += 15_000;
        const refilled = await openStreamFrom(sts.url, { headers: { "last-event-id": first } });
        assert.equal(refilled.status, 200);
        await refilled.next((e) => e.data.approval_id === entries[4]);
        refilled.close();
      } finally {
        await sts.stop();
      }
    });

    test("a reconnect loop with a cursor ahead of the head or of another epoch: each re-read of the feed costs a replay; past them 429 too_many_streams (replay_rate_limited) with Retry-After, and nothing is read", async () => {
      let now = 1_000_000;
      const counted = await countingFeedStateReads(engine);
      const sts = await started(
        engine,
        { max_streams_per_address: 3, max_replays_per_address_per_minute: 2, poll_interval_seconds: 3600 },
        {},
        { clock: () => now, database: counted.database },
      );
      try {
        const id = await quiesce(sts);
        const epoch = sts.app.revocations.hub.epoch;
        const head = await cursorOf(sts.handle.db, id);
        const ahead = `${epoch}.${head + 1n}`;
        const other = epoch === "0123456789abcdef" ? "fedcba9876543210" : "0123456789abcdef";
        const reset = {
          error: "cursor_reset",
          error_description:
            "the cursor is ahead of the feed's head (the database was restored to an earlier point)",
          reason: "cursor_ahead_of_head",
          cursor: `${epoch}.0`,
        };

        // A flood of 10 sequential reconnects from one address: the first 3 (the burst) re-read the
        // feed and are told to restart; the other 7 are refused without reading anything.
        const before = counted.reads();
        const statuses: number[] = [];
        for (let i = 0; i < 10; i++) {
          const answer = await openStreamFrom(sts.url, { headers: { "last-event-id": ahead } });
          statuses.push(answer.status);
          if (i < 3) {
            assert.deepEqual(answer.refusal, reset);
          } else {
            assert.equal(answer.headers.get("retry-after"), "30");
            assert.equal(answer.headers.get("cache-control"), "no-store");
            assert.deepEqual(answer.refusal, REPLAYS_REFUSED);
          }
        }
        assert.deepEqual(statuses, [410, 410, 410, 429, 429, 429, 429, 429, 429, 429]);
        assert.equal(counted.reads() - before, 3);

        // Another epoch, by header or query: the same budget, still nothing read.
        for (const request of [
          { headers: { "last-event-id": `${other}.1` } },
          { query: `?after=${other}.1` },
        ]) {
          const refused = await openStreamFrom(sts.url, request);
          assert.equal(refused.status, 429);
          assert.equal(refused.headers.get("retry-after"), "30");
          assert.deepEqual(refused.refusal, REPLAYS_REFUSED);
        }
        assert.equal(counted.reads() - before, 3);

        // A live stream, or one resuming at the head, costs nothing and is admitted.
        for (const headers of [{} as Record<string, string>, { "last-event-id": `${epoch}.${head}` }]) {
          const stream = await openStreamFrom(sts.url, { headers });
          assert.equal(stream.status, 200);
          stream.close();
          await until(() => sts.app.revocations.hub.size === 0, "the stream to close");
        }
        // Another address has its own budget.
        const elsewhere = await openStreamFrom(sts.url, {
          localAddress: "127.0.0.2",
          headers: { "last-event-id": `${other}.1` },
        });
        assert.equal(elsewhere.status, 410);
        assert.equal(elsewhere.refusal?.reason, "cursor_epoch_mismatch");
        assert.equal(counted.reads() - before, 4);

        // 30 s on, one replay is back: one more re-read, then refused again.
        now += 30_000;
        const again = await openStreamFrom(sts.url, { headers: { "last-event-id": ahead } });
        assert.deepEqual([again.status, again.refusal], [410, reset]);
        const refusedAgain = await openStreamFrom(sts.url, { headers: { "last-event-id": ahead } });
        assert.equal(refusedAgain.status, 429);
        assert.equal(refusedAgain.headers.get("retry-after"), "30");
        assert.deepEqual(refusedAgain.refusal, REPLAYS_REFUSED);
        assert.equal(counted.reads() - before, 5);
        assert.equal(sts.app.revocations.hub.size, 0);
      } finally {
        await sts.stop();
        await counted.database.dispose();
      }
    });

    test("trust_proxy: the address is the X-Forwarded-For entry the proxy appended, never one the client wrote", async () => {
      const sts = await started(engine, { max_streams_per_address: 2, trust_proxy: true });
      try {
        const via = (forwarded?: string) =>
          openStreamFrom(
            sts.url,
            forwarded === undefined ? {} : { headers: { "x-forwarded-for": forwarded } },
          );
        const statuses: number[] = [];
        const streams = [];
        for (const forwarded of [
          "203.0.113.7",
          "203.0.113.7",
          "203.0.113.7",
          "198.51.100.1, 203.0.113.7",
          "203.0.113.7, 198.51.100.1",
          "not-an-address",
          undefined,
          undefined,
        ]) {
          const stream = await via(forwarded);
          statuses.push(stream.status);
          streams.push(stream);
        }
        assert.deepEqual(statuses, [200, 200, 429, 429, 200, 200, 200, 429]);
        for (const stream of streams) stream.close();
      } finally {
        await sts.stop();
      }
    });
  });

  describe(`a gateway verifier across a feed reset (${engine})`, () => {
    async function withVerifier(
      sts: TestApp,
      run: (
        verify: (token: string) => Promise<{ ok: boolean; reason?: string; status?: number }>,
        errors: Error[],
      ) => Promise<void>,
    ): Promise<void> {
      const errors: Error[] = [];
      const verifier = createVerifier({
        issuer: sts.url,
        audience: "https://crm.example.test",
        jwksUri: `${sts.url}/jwks`,
        rateLimit: false,
        revocation: { url: `${sts.url}/revocations`, intervalMs: 25 },
        onBackgroundError: (error) => errors.push(error),
      });
      try {
        await verifier.ready?.();
        await run(async (token) => {
          const result = await verifier.verify({
            authorization: `Bearer ${token}`,
            method: "GET",
            url: "https://crm.example.test/contacts",
            requiredScopes: ["crm:read"],
          });
          return result.ok ? { ok: true } : { ok: false, reason: result.reason, status: result.status };
        }, errors);
      } finally {
        verifier.close();
      }
    }

    async function mint(sts: TestApp): Promise<{ approvalId: string; token: string }> {
      const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const approvalId = await insertApproval(sts.handle.db, { scope: "crm:read", max_tokens: 5 });
      const issued = await exchange(sts.url, {
        subject_token,
        scope: "crm:read",
        authorization_details: agentTask(approvalId),
      });
      assert.equal(issued.status, 200, JSON.stringify(issued.body));
      return { approvalId, token: String(issued.body.access_token) };
    }

    test("a cursor from another epoch (database replaced): the verifier resynchronises by itself and refuses a token revoked after the reset", async () => {
      const sts = await started(engine);
      const { db } = sts.handle;
      try {
        const before = await mint(sts);
        const after = await mint(sts);
        await withVerifier(sts, async (verify, errors) => {
          assert.equal(await revokeViaApi(sts, before.approvalId), 200);
          await until(async () => !(await verify(before.token)).ok, "the first revocation");
          assert.deepEqual(await verify(after.token), { ok: true });

          // Another database behind the same STS: another epoch, another feed.
          await sql`delete from revocations`.execute(db);
          await db
            .updateTable("revocation_feed")
            .set({ epoch: "abcdefabcdef0123", compacted_through: "0" })
            .execute();
          await until(async () => (await resetsAnswered(sts)) >= 1, "the verifier's poll to be reset");
          assert.equal(await revokeViaApi(sts, after.approvalId), 200);
          await until(async () => !(await verify(after.token)).ok, "the revocation after the reset");
          assert.deepEqual(await verify(after.token), { ok: false, reason: "approval_revoked", status: 401 });
          // Kept: a revocation the new feed does not list is never forgotten early.
          assert.deepEqual(await verify(before.token), {
            ok: false,
            reason: "approval_revoked",
            status: 401,
          });
          assert.deepEqual(errors, []);
        });
      } finally {
        await sts.stop();
      }
    });

    test("a cursor ahead of a restored feed's head: the verifier resynchronises by itself and refuses a token revoked after the restore", async () => {
      const sts = await started(engine, { poll_interval_seconds: 3600 });
      const { db } = sts.handle;
      try {
        const before = await mint(sts);
        const after = await mint(sts);
        await withVerifier(sts, async (verify, errors) => {
          assert.equal(await revokeViaApi(sts, before.approvalId), 200);
          await until(async () => !(await verify(before.token)).ok, "the first revocation");
          // The restore: back to before that revocation (its entry and the cursor sequence).
          await sql`delete from revocations`.execute(db);
          await sql`select setval(pg_get_serial_sequence('revocations', 'cursor'), 1)`.execute(db);
          await until(async () => (await resetsAnswered(sts)) >= 1, "the verifier's poll to be reset");
          assert.equal(await revokeViaApi(sts, after.approvalId), 200);
          await until(async () => !(await verify(after.token)).ok, "the revocation after the restore");
          assert.deepEqual(await verify(after.token), { ok: false, reason: "approval_revoked", status: 401 });
          assert.deepEqual(errors, []);
        });
      } finally {
        await sts.stop();
      }
    });
  });
}

/** The cursor of the last of `approvalIds`, which compaction removed: the feed's low-water mark. */
async function cursorOfCompacted(db: Kysely<Database>, approvalIds: string[]): Promise<bigint> {
  assert.equal(
    (
      await db
        .selectFrom("revocations")
        .select("approval_id")
        .where("approval_id", "in", approvalIds)
        .execute()
    ).length,
    0,
  );
  const row = await db
    .selectFrom("revocation_feed")
    .select(sql<string>`compacted_through::text`.as("compacted_through"))
    .executeTakeFirstOrThrow();
  return BigInt(row.compacted_through);
}

describe("replay budget", () => {
  test("a token bucket per address: bursts of `burst`, refilled at perMinute; refusals say the seconds to wait and take nothing", () => {
    let now = 1_000_000;
    const budget = new ReplayBudget(2, 3, 2, () => now);
    assert.deepEqual([budget.take("a"), budget.take("a"), budget.take("a"), budget.take("a")], [0, 0, 0, 30]);
    now += 15_000;
    assert.equal(budget.take("a"), 15);
    now += 15_000;
    assert.deepEqual([budget.take("a"), budget.take("a")], [0, 30]);
    now += 600_000;
    assert.deepEqual([budget.take("a"), budget.take("a"), budget.take("a"), budget.take("a")], [0, 0, 0, 30]);
    assert.equal(budget.take("b"), 0);
    // Two addresses are remembered: a third evicts the least recently used ("a"), which starts afresh.
    assert.equal(budget.take("c"), 0);
    assert.equal(budget.take("a"), 0);
  });
});

describe("client address", () => {
  test("the peer address unless trust_proxy; IPv4-mapped as IPv4; IPv6 by /64", () => {
    assert.equal(clientAddress("127.0.0.1", "203.0.113.7", false), "127.0.0.1");
    assert.equal(clientAddress("::ffff:127.0.0.1", undefined, true), "127.0.0.1");
    assert.equal(clientAddress("2001:db8:1:2:3:4:5:6", undefined, false), "2001:db8:1:2::/64");
    assert.equal(clientAddress("2001:db8:1:2::9", undefined, false), "2001:db8:1:2::/64");
    assert.equal(clientAddress("10.0.0.1", "198.51.100.9, 203.0.113.7", true), "203.0.113.7");
    assert.equal(clientAddress("10.0.0.1", "198.51.100.9, 203.0.113.7, 10.0.0.2", 2), "203.0.113.7");
    assert.equal(clientAddress("10.0.0.1", ["198.51.100.9", "203.0.113.7"], 1), "203.0.113.7");
    assert.equal(clientAddress("10.0.0.1", "203.0.113.7", 2), "10.0.0.1");
    assert.equal(clientAddress("10.0.0.1", "unknown", true), "10.0.0.1");
    assert.equal(clientAddress("10.0.0.1", "", true), "10.0.0.1");
    assert.equal(clientAddress("10.0.0.1", "[2001:db8::1]:443", true), "2001:db8:0:0::/64");
    assert.equal(clientAddress("10.0.0.1", "203.0.113.7:5000", true), "203.0.113.7");
    assert.equal(clientAddress(undefined, undefined, false), "unknown");
  });

  test("addressKey: IPv6 forms of one /64 count together; non-addresses are undefined", () => {
    assert.equal(addressKey("2001:DB8:0:0:ffff::1"), "2001:db8:0:0::/64");
    assert.equal(addressKey("2001:db8::"), "2001:db8:0:0::/64");
    assert.equal(addressKey("::1"), "0:0:0:0::/64");
    assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
    assert.equal(addressKey("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/64");
    assert.equal(addressKey("1.2.3"), undefined);
    assert.equal(addressKey("example.test"), undefined);
  });
});
