import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { sql } from "kysely";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import { loadConfig } from "../../../sts/src/config/load.js";
import type { WebhookSummaryEvent } from "../../../sts/src/webhooks/dispatcher.js";
import { verifyWebhookSignature } from "../../../sts/src/webhooks/signature.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { Receiver } from "../../helpers/webhook_receiver.js";

const CRM = "https://crm.example.test";
const SECRET = "whsec-0123456789abcdefghijklmnopqrstuvwxyz";
const AGENTS = ["flood-agent", "quiet-agent", "other-agent"] as const;
type Agent = (typeof AGENTS)[number];

interface Answer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

interface Page {
  approvals: ApprovalJson[];
  next_cursor: string | null;
}

/** baseConfig with three more agents, and `approvals` as given (the defaults when undefined). */
function config(approvals: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}) {
  const { approvals: _lifted, ...base } = baseConfig();
  return {
    ...base,
    clients: [
      ...(base.clients as unknown[]),
      ...AGENTS.map((client_id) => ({
        client_id,
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_basic",
      })),
    ],
    ...(approvals === undefined ? {} : { approvals }),
    ...extra,
  };
}

/** A running STS with a token per agent and an approver token. */
class Harness {
  tokens = new Map<Agent, string>();
  alice = "";
  constructor(readonly sts: TestApp) {}

  static async start(options: Parameters<typeof startTestApp>[0]): Promise<Harness> {
    const harness = new Harness(await startTestApp(options));
    for (const agent of AGENTS) {
      const answer = await postForm(
        `${harness.sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth(agent, TEST_SECRET) },
      );
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      harness.tokens.set(agent, answer.body.access_token as string);
    }
    const devIssuer = harness.sts.app.services.devIssuer;
    assert.ok(devIssuer);
    harness.alice = await devIssuer.mint({ sub: "alice", usage: "approver" });
    return harness;
  }

  get db() {
    return this.sts.app.services.db;
  }

  async call<T = Record<string, unknown>>(
    method: string,
    pathname: string,
    token: string,
    body?: unknown,
  ): Promise<Answer<T>> {
    const response = await fetch(`${this.sts.url}${pathname}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: (text ? JSON.parse(text) : {}) as T };
  }

  request(agent: Agent, task = `task of ${agent}`, extra: Record<string, unknown> = {}) {
    const token = this.tokens.get(agent);
    assert.ok(token);
    return this.call<ApprovalJson>("POST", "/approvals", token, {
      resource: CRM,
      scope: "crm:read",
      task,
      ...extra,
    });
  }

  async pending(agent: Agent, task?: string, extra?: Record<string, unknown>): Promise<ApprovalJson> {
    const answer = await this.request(agent, task, extra);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body;
  }

  /** `count` requests from `agent`, `concurrency` at a time, in order of sending. */
  async flood(agent: Agent, count: number, concurrency = 10): Promise<Answer<ApprovalJson>[]> {
    const answers: Answer<ApprovalJson>[] = [];
    for (let sent = 0; sent < count; sent += concurrency) {
      const batch = Array.from({ length: Math.min(concurrency, count - sent) }, (_, i) =>
        this.request(agent, `flood ${sent + i}`),
      );
      answers.push(...(await Promise.all(batch)));
    }
    return answers;
  }

  list(query = "status=pending") {
    return this.call<Page>("GET", `/approvals?${query}`, this.alice);
  }

  async deny(id: string) {
    const answer = await this.call("POST", `/approvals/${id}/deny`, this.alice, {});
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }

  /** Rows of `approvals` per status for `agent`. */
  async rows(agent: Agent): Promise<number> {
    const row = await this.db
      .selectFrom("approvals")
      .select((eb) => eb.fn.countAll<string | number>().as("n"))
      .where("client_id", "=", agent)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** Forgets every approval, webhook delivery and counter (each test starts from nothing). */
  async reset(): Promise<void> {
    await sql`delete from webhook_deliveries`.execute(this.db);
    await sql`delete from audit_events`.execute(this.db);
    await sql`delete from approvals`.execute(this.db);
    await sql`delete from issuance_rate_limits`.execute(this.db);
  }

  /** The latest audit row. */
  async lastAudit() {
    return this.db
      .selectFrom("audit_events")
      .select(["event", "outcome", "reason", "client_id", "actor"])
      .orderBy("id", "desc")
      .limit(1)
      .executeTakeFirstOrThrow();
  }
}

/** The statuses of `answers`, counted: `{201: 10, 429: 290}`. */
function statuses(answers: readonly Answer<unknown>[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const answer of answers) counts[answer.status] = (counts[answer.status] ?? 0) + 1;
  return counts;
}

describe("approvals config", () => {
  test("defaults: 50 pending per agent, 1 request per second with bursts of 10, 10 webhook events per 300 s", () => {
    const parsed = loadConfig({ COUNTERSIGN_DATA_DIR: "/tmp/unused" }, { dev_mode: true });
    assert.deepEqual(parsed.approvals, {
      max_pending_per_agent: 50,
      request_rate_limit: { per_second: 1, burst: 10 },
      webhook_requested_limit: { events: 10, window_seconds: 300 },
    });
  });

  test("unknown keys and out-of-range values are refused, naming the key", () => {
    assert.throws(
      () => loadConfig({}, { approvals: { max_pending: 5 } }),
      /approvals: Unrecognized key: "max_pending"/,
    );
    assert.throws(
      () => loadConfig({}, { approvals: { max_pending_per_agent: 0 } }),
      /approvals\.max_pending_per_agent: /,
    );
    assert.throws(
      () => loadConfig({}, { approvals: { webhook_requested_limit: { events: 10 } } }),
      /approvals\.webhook_requested_limit\.window_seconds: /,
    );
  });
});

for (const engine of testEngines()) {
  describe(`approval requests per agent: the rate limit, on ${engine}`, () => {
    let h: Harness;
    before(async () => {
      // Bursts of 10 in a window of 1000 s: the flood below can never outlast the window.
      h = await Harness.start({
        engine,
        config: config({ request_rate_limit: { per_second: 0.01, burst: 10 } }),
      });
    });
    after(() => h.sts.stop());

    test("300 requests from one agent: 10 created, 290 answered 429 slow_down (request_rate_limited) with Retry-After", async () => {
      const answers = await h.flood("flood-agent", 300);
      assert.deepEqual(statuses(answers), { 201: 10, 429: 290 });
      assert.deepEqual(
        answers.slice(0, 10).map((a) => a.status),
        Array(10).fill(201),
        "the first burst is admitted",
      );
      for (const refused of answers.filter((a) => a.status === 429)) {
        const retryAfter = refused.headers.get("retry-after") ?? "";
        assert.match(retryAfter, /^[0-9]+$/);
        assert.ok(Number(retryAfter) > 900 && Number(retryAfter) <= 1000, retryAfter);
        assert.equal(refused.headers.get("cache-control"), null);
        assert.deepEqual(refused.body, {
          error: "slow_down",
          error_description: `too many approval requests from this agent; retry in ${retryAfter} s`,
        });
      }
      assert.equal(await h.rows("flood-agent"), 10);
      assert.deepEqual(await h.lastAudit(), {
        event: "approval.request",
        outcome: "refused",
        reason: "request_rate_limited",
        client_id: "flood-agent",
        actor: "flood-agent",
      });
      // Another agent has its own bucket.
      assert.equal((await h.request("quiet-agent")).status, 201);
    });

    test("a malformed request counts too (the rate is taken before the body is read)", async () => {
      const token = h.tokens.get("other-agent");
      assert.ok(token);
      for (let i = 0; i < 10; i++) {
        const malformed: Answer = await h.call("POST", "/approvals", token, { resource: CRM });
        assert.equal(malformed.status, 400, JSON.stringify(malformed.body));
      }
      const refused: Answer = await h.call("POST", "/approvals", token, {
        resource: CRM,
        scope: "crm:read",
        task: "well-formed",
      });
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error, "slow_down");
      assert.equal(await h.rows("other-agent"), 0);
    });
  });

  describe(`approval requests per agent: the pending cap and the pending list, on ${engine}`, () => {
    let h: Harness;
    before(async () => {
      h = await Harness.start({
        engine,
        config: config({
          max_pending_per_agent: 50,
          request_rate_limit: { per_second: 10_000, burst: 10_000 },
        }),
      });
    });
    beforeEach(() => h.reset());
    after(() => h.sts.stop());

    test("300 requests from one agent: 50 pending, 250 answered 429 too_many_pending (pending_cap_reached), Retry-After 60", async () => {
      const answers = await h.flood("flood-agent", 300);
      assert.deepEqual(statuses(answers), { 201: 50, 429: 250 });
      for (const refused of answers.filter((a) => a.status === 429)) {
        assert.equal(refused.headers.get("retry-after"), "60");
        assert.deepEqual(refused.body, {
          error: "too_many_pending",
          error_description:
            "this agent already has 50 pending approvals, the most allowed; retry when one is decided or expires (in 60 s at most)",
        });
      }
      assert.equal(await h.rows("flood-agent"), 50);
      assert.deepEqual(await h.lastAudit(), {
        event: "approval.request",
        outcome: "refused",
        reason: "pending_cap_reached",
        client_id: "flood-agent",
        actor: "flood-agent",
      });
      // Other agents are not capped by it.
      assert.equal((await h.request("quiet-agent")).status, 201);
    });

    test("a decision or an expiry frees a slot; Retry-After is the soonest expiry when that is sooner", async () => {
      const first = await h.pending("flood-agent", "expires first", { ttl_seconds: 30 });
      await h.flood("flood-agent", 49);
      const refused = await h.request("flood-agent");
      assert.equal(refused.status, 429);
      const retryAfter = Number(refused.headers.get("retry-after"));
      const untilExpiry = (Date.parse(first.expires_at) - Date.now()) / 1000;
      assert.ok(
        retryAfter >= 1 && retryAfter <= 30 && retryAfter >= Math.floor(untilExpiry),
        `${retryAfter}`,
      );
      // Denied: one slot.
      await h.deny(first.id);
      assert.equal((await h.request("flood-agent")).status, 201);
      assert.equal((await h.request("flood-agent")).status, 429);
      // Expired (moved into the past): one slot.
      await sql`update approvals set expires_at = now() - interval '1 second'
        where id = (select id from approvals where client_id = 'flood-agent' and status = 'pending'
          order by created_at limit 1)`.execute(h.db);
      assert.equal((await h.request("flood-agent")).status, 201);
      assert.equal((await h.request("flood-agent")).status, 429);
      assert.equal(await h.rows("flood-agent"), 52);
    });

    test("concurrent requests at the cap: of 20 sent at once with 5 slots left, exactly 5 are created", async () => {
      await h.flood("flood-agent", 45);
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => h.request("flood-agent", `race ${i}`)),
      );
      assert.deepEqual(statuses(answers), { 201: 5, 429: 15 });
      assert.equal(await h.rows("flood-agent"), 50);
      // Two at once with one slot left, several times: exactly one wins each time.
      for (let round = 0; round < 5; round++) {
        const [oldest] = (await h.list("status=pending&limit=200")).body.approvals.filter(
          (a) => a.client_id === "flood-agent",
        );
        assert.ok(oldest);
        await h.deny(oldest.id);
        const pair = await Promise.all([h.request("flood-agent"), h.request("flood-agent")]);
        assert.deepEqual(statuses(pair), { 201: 1, 429: 1 });
      }
      const pending = await h.db
        .selectFrom("approvals")
        .select((eb) => eb.fn.countAll<string | number>().as("n"))
        .where("client_id", "=", "flood-agent")
        .where("status", "=", "pending")
        .executeTakeFirstOrThrow();
      assert.equal(Number(pending.n), 50);
    });

    if (engine === "postgres") {
      test("two instances on one database hold one cap: 20 requests across both with 5 slots left, 5 created", async () => {
        const peer = await startTestApp({
          engine,
          database: h.sts.database,
          dataDir: h.sts.dataDir,
          config: config({
            max_pending_per_agent: 50,
            request_rate_limit: { per_second: 10_000, burst: 10_000 },
          }),
        });
        try {
          await h.flood("flood-agent", 45);
          const credential = await postForm(
            `${peer.url}/token`,
            { grant_type: "client_credentials", scope: "approvals:request" },
            { authorization: basicAuth("flood-agent", TEST_SECRET) },
          );
          const tokens = [h.tokens.get("flood-agent"), credential.body.access_token as string];
          const answers = await Promise.all(
            Array.from({ length: 20 }, async (_, i) => {
              const response = await fetch(`${i % 2 === 0 ? h.sts.url : peer.url}/approvals`, {
                method: "POST",
                headers: { authorization: `Bearer ${tokens[i % 2]}`, "content-type": "application/json" },
                body: JSON.stringify({ resource: CRM, scope: "crm:read", task: `across ${i}` }),
              });
              await response.arrayBuffer();
              return { status: response.status, headers: response.headers, body: {} };
            }),
          );
          assert.deepEqual(statuses(answers), { 201: 5, 429: 15 });
          assert.equal(await h.rows("flood-agent"), 50);
        } finally {
          await peer.stop({ keepDatabase: true, keepDataDir: true });
        }
      });
    }

    test("a flood after another agent's request does not push it off the first page (API and console)", async () => {
      const quiet = await h.pending("quiet-agent", "the legitimate one");
      await h.flood("flood-agent", 300);
      const page = await h.list();
      assert.equal(page.status, 200);
      assert.equal(page.body.approvals.length, 50);
      // Round 0 is each agent's newest, newest first: the flood's newest, then the quiet agent's request.
      assert.equal(page.body.approvals[0]?.client_id, "flood-agent");
      assert.equal(page.body.approvals[1]?.id, quiet.id);
      const console = await h.list("status=pending&limit=200");
      assert.equal(console.body.approvals[1]?.id, quiet.id);
      assert.equal(console.body.approvals.length, 51);
      assert.equal(console.body.next_cursor, null);
    });

    test("a flood before another agent's request does not hide it either: it leads the list", async () => {
      await h.flood("flood-agent", 300);
      const other = await h.pending("other-agent", "asked after the flood");
      const page = await h.list("status=pending&limit=1");
      assert.deepEqual(
        page.body.approvals.map((a) => a.id),
        [other.id],
      );
    });

    test("order: round by round (each agent's newest, then second newest, ...), newest first within a round", async () => {
      const made: ApprovalJson[] = [];
      // f0 q0 f1 f2 o0 q1 f3: flood-agent 4, quiet-agent 2, other-agent 1.
      for (const agent of [
        "flood-agent",
        "quiet-agent",
        "flood-agent",
        "flood-agent",
        "other-agent",
        "quiet-agent",
        "flood-agent",
      ] as const) {
        made.push(await h.pending(agent));
      }
      const [f0, q0, f1, f2, o0, q1, f3] = made as [ApprovalJson, ...ApprovalJson[]];
      const page = await h.list();
      assert.deepEqual(
        page.body.approvals.map((a) => a.id),
        [f3, q1, o0, f2, q0, f1, f0].map((a) => a?.id),
      );
    });

    test("pagination walks every approval pending throughout exactly once, in order, while others are requested and decided", async () => {
      for (const agent of AGENTS) await h.flood(agent, 20);
      const before = (await h.list("status=pending&limit=200")).body.approvals.map((a) => a.id);
      assert.equal(before.length, 60);
      const denied = new Set<string>();
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `status=pending&limit=7${cursor ? `&cursor=${cursor}` : ""}`;
        const page = await h.list(query);
        assert.equal(page.status, 200, JSON.stringify(page.body));
        assert.ok(page.body.approvals.length <= 7);
        seen.push(...page.body.approvals.map((a) => a.id));
        cursor = page.body.next_cursor;
        pages++;
        // Between pages: a new request from one agent (shifts its rounds), a decision on one seen and on
        // one not yet seen (both of other agents).
        await h.pending(AGENTS[pages % 3] as Agent, `between pages ${pages}`);
        const unseen = before.find((id) => !seen.includes(id) && !denied.has(id));
        const seenOne = seen.find((id) => !denied.has(id));
        for (const id of [unseen, seenOne]) {
          if (id === undefined || pages % 2 === 0) continue;
          await h.deny(id);
          denied.add(id);
        }
      } while (cursor);
      assert.equal(new Set(seen).size, seen.length, "no approval twice");
      const stayed = before.filter((id) => !denied.has(id));
      assert.deepEqual(
        seen.filter((id) => stayed.includes(id)),
        stayed,
        "every approval pending throughout, in the first page's order",
      );
      assert.ok(
        seen.every((id) => before.includes(id)),
        "nothing requested after the first page",
      );
      assert.ok(pages > 5);
    });

    test("a pending list's cursor is good for an hour", async () => {
      await h.flood("flood-agent", 3);
      const first = await h.list("status=pending&limit=1");
      const cursor = first.body.next_cursor;
      assert.ok(cursor);
      const [snapshot, ...rest] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as unknown[];
      assert.equal(typeof snapshot, "string");
      const old = Buffer.from(
        JSON.stringify([new Date(Date.now() - 3_601_000).toISOString(), ...rest]),
      ).toString("base64url");
      const answer = await h.list(`status=pending&limit=1&cursor=${old}`);
      assert.equal(answer.status, 400);
      assert.deepEqual(answer.body as unknown, {
        error: "invalid_request",
        error_description:
          "cursor: has expired (a pending list's cursor is good for an hour); list again without one",
      });
      // Another list's cursor is not a pending list's, nor the reverse.
      const approvedCursor = Buffer.from(
        JSON.stringify([new Date().toISOString(), first.body.approvals[0]?.id]),
      ).toString("base64url");
      assert.equal((await h.list(`status=pending&cursor=${approvedCursor}`)).status, 400);
      assert.equal((await h.list(`status=approved&cursor=${cursor}`)).status, 400);
      assert.equal((await h.list(`status=pending&limit=1&cursor=${cursor}`)).status, 200);
    });
  });

  describe(`approval requests per agent: webhook events, on ${engine}`, { timeout: 120_000 }, () => {
    const receiver = new Receiver();
    let h: Harness;
    let hook = "";
    before(async () => {
      await receiver.start();
      hook = `${receiver.url}/hook`;
      h = await Harness.start({
        engine,
        config: config(
          {
            max_pending_per_agent: 10_000,
            request_rate_limit: { per_second: 10_000, burst: 10_000 },
            webhook_requested_limit: { events: 10, window_seconds: 3600 },
          },
          { webhooks: [{ url: hook, secret: SECRET, events: ["approval.requested"] }] },
        ),
        appOptions: { webhookTuning: { pollIntervalMs: 25 } },
      });
    });
    after(async () => {
      await h.sts.stop();
      await receiver.stop();
    });

    test("300 requests from one agent: 10 deliveries one by one and one summary (folded 290), 11 rows and 11 POSTs", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 300; i++) ids.push((await h.pending("flood-agent", `flood ${i}`)).id);
      const outbox = () =>
        h.db
          .withTables<{ webhook_deliveries: { event_type: string; status: string; next_attempt_at: Date } }>()
          .selectFrom("webhook_deliveries")
          .select(["event_type", "status"])
          .orderBy("event_type")
          .execute();
      await receiver.until((all) => all.length >= 10);
      await h.sts.app.webhooks.flush();
      const rows = await outbox();
      assert.equal(rows.length, 11);
      assert.deepEqual(
        rows.map((r) => `${r.event_type} ${r.status}`),
        [...Array(10).fill("approval.requested delivered"), "approval.requested_summary pending"],
      );
      assert.equal(receiver.received.length, 10);
      assert.deepEqual(
        receiver.received.map((r) => (JSON.parse(r.body) as { approval: ApprovalJson }).approval.id).sort(),
        ids.slice(0, 10).sort(),
      );
      // The summary is sent when the window ends (here: moved to now).
      await sql`update webhook_deliveries set next_attempt_at = now()
        where event_type = 'approval.requested_summary'`.execute(h.db);
      await h.sts.app.webhooks.flush();
      await receiver.until((all) => all.length >= 11);
      assert.equal(receiver.received.length, 11);
      const summary = receiver.received[10];
      assert.ok(summary);
      assert.equal(summary.headers["countersign-event-type"], "approval.requested_summary");
      const event = JSON.parse(summary.body) as WebhookSummaryEvent;
      assert.equal(summary.headers["countersign-event-id"], event.id);
      assert.match(event.id, /^evt_[A-Za-z0-9_-]{22}$/);
      assert.deepEqual(
        { ...event, id: "", created_at: "", window_started_at: "", window_ends_at: "" },
        {
          type: "approval.requested_summary",
          id: "",
          created_at: "",
          client_id: "flood-agent",
          window_started_at: "",
          window_ends_at: "",
          folded: 290,
          latest_approval_id: ids[299],
        },
      );
      assert.equal(Date.parse(event.window_ends_at) - Date.parse(event.window_started_at), 3_600_000);
      assert.equal(
        verifyWebhookSignature(SECRET, summary.headers["countersign-signature"] as string, summary.body).ok,
        true,
      );
      // Another agent in the same window has its own count: its request is sent one by one.
      const quiet = await h.pending("quiet-agent");
      await receiver.until((all) => all.length >= 12);
      assert.equal(receiver.of("/hook", "approval.requested", quiet.id).length, 1);
      assert.equal((await outbox()).length, 12);
    });
  });
}
