import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { MAX_AUDIT_EVENTS } from "../../../sts/src/approvals/audit_routes.js";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import {
  boundedDetailJson,
  MAX_REFUSAL_DETAIL_BYTES,
  recordAudit,
} from "../../../sts/src/audit/audit_log.js";
import { REFUSAL_WINDOW_SECONDS, recordRefusal } from "../../../sts/src/audit/refusals.js";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";
import { windowsTouched } from "../../helpers/refusal_windows.js";

const CRM = "https://crm.example.test";
const OWNER = { id: "billing-agent", secret: TEST_SECRET };
const MALLORY = { id: "mallory-agent", secret: TEST_SECRET };
/** Refusals each flood sends. */
const FLOOD = 600;
/** A scope parameter of ~40 KB: request text a refusal's description would echo. */
const HUGE_SCOPE = Array.from({ length: 4000 }, (_, i) => `x:${String(i).padStart(7, "0")}`).join(" ");

interface Row {
  event: string;
  outcome: string;
  reason: string | null;
  approval_id: string | null;
  occurrences: number;
  window_seconds: number | null;
  detail: Record<string, unknown> | null;
  bytes: number;
}

/** Sends `count` requests, `parallel` at a time; returns every answer. */
async function flood<T>(count: number, parallel: number, send: () => Promise<T>): Promise<T[]> {
  const answers: T[] = [];
  for (let sent = 0; sent < count; sent += parallel) {
    answers.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - sent) }, send))));
  }
  return answers;
}

test("boundedDetailJson: 40 KB of request text is cut to at most 512 bytes, ending in …; too many members are left out and marked", () => {
  const cut = boundedDetailJson({ error: "invalid_scope", description: `scope not within: ${HUGE_SCOPE}` });
  assert.ok(Buffer.byteLength(cut) <= MAX_REFUSAL_DETAIL_BYTES, `${Buffer.byteLength(cut)} bytes`);
  const parsed = JSON.parse(cut) as Record<string, string>;
  assert.equal(parsed.error, "invalid_scope");
  assert.match(parsed.description as string, /^scope not within: x:0000000 x:0000001 .*…$/);

  const multibyte = JSON.parse(boundedDetailJson({ description: "é".repeat(1000) })) as Record<
    string,
    string
  >;
  assert.equal(Buffer.byteLength(multibyte.description as string), 255);
  assert.equal(multibyte.description, `${"é".repeat(126)}…`);

  const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v".repeat(100)]));
  const bounded = boundedDetailJson(many);
  assert.ok(Buffer.byteLength(bounded) <= MAX_REFUSAL_DETAIL_BYTES);
  assert.deepEqual(Object.keys(JSON.parse(bounded) as object), ["k0", "k1", "k2", "k3", "truncated"]);

  assert.equal(boundedDetailJson({ error: "x\u0000y" }), '{"error":"x\ufffdy"}');
  assert.equal(boundedDetailJson({ error: "short" }), '{"error":"short"}');
});

for (const engine of testEngines()) {
  describe(`refusals are counted and bounded, on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;

    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      const { migrateToLatest } = await import("../../../sts/src/db/migrate.js");
      await migrateToLatest(handle.db);
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    /** A window long enough that a test never straddles two (so the counts are exact). */
    const LONG_WINDOW = 1_000_000_000;

    test("50 concurrent refusals of one key make one row counting 50; another agent's approval is recorded as none", async () => {
      const own = await insertApproval(handle.db, { client_id: "billing-agent" });
      const theirs = await insertApproval(handle.db, { client_id: "other-agent" });
      const refusal = (approvalId: string | null, reason = "approval_used_up") =>
        recordRefusal(
          handle.db,
          {
            event: "token_exchange",
            reason,
            clientId: "billing-agent",
            claimedApprovalId: approvalId,
            detail: { error: "invalid_grant", description: HUGE_SCOPE },
          },
          LONG_WINDOW,
        );
      await Promise.all(Array.from({ length: 50 }, () => refusal(own)));
      await Promise.all(Array.from({ length: 30 }, () => refusal(theirs)));
      await refusal("apr_not-an-approval-of-anyone!");
      await refusal(own, "scope_not_approved");
      await refusal(null, "scope_not_approved");

      const rows = await sql<Row>`
        select event, outcome, reason, approval_id, occurrences, window_seconds, detail,
          octet_length(detail::text) as bytes
        from audit_events where client_id = 'billing-agent' order by id`.execute(handle.db);
      assert.deepEqual(
        rows.rows.map((row) => [row.reason, row.approval_id, row.occurrences, row.window_seconds]),
        [
          ["approval_used_up", own, 50, LONG_WINDOW],
          ["approval_used_up", null, 31, LONG_WINDOW],
          ["scope_not_approved", own, 1, LONG_WINDOW],
          ["scope_not_approved", null, 1, LONG_WINDOW],
        ],
      );
      for (const row of rows.rows) {
        assert.equal(row.outcome, "refused");
        assert.ok(Buffer.byteLength(JSON.stringify(row.detail)) <= MAX_REFUSAL_DETAIL_BYTES);
      }
      const none = await sql<{ n: number }>`
        select count(*)::int as n from audit_events where approval_id = ${theirs}`.execute(handle.db);
      assert.equal(none.rows[0]?.n, 0);
    });

    test("a refusal in a later window starts a new row; the earlier window's row is left as it was", async () => {
      const refusal = {
        event: "token_exchange",
        reason: "approval_pending",
        clientId: "window-agent",
        claimedApprovalId: null,
        detail: { error: "authorization_pending" },
      };
      // One transaction: now() is its start for every statement, so the refusals land in the window
      // after the inserted row's however slowly they run (a 10 s boundary passing between the statements
      // put them 20 s after it, or in two rows).
      await handle.db.transaction().execute(async (trx) => {
        // The same key's row of the previous 10-second window, as a refusal then would have left it.
        await sql`insert into audit_events
            (at, event, outcome, reason, client_id, actor, occurrences, last_at, window_seconds)
          values (to_timestamp(floor(extract(epoch from now()) / 10) * 10 - 10), 'token_exchange', 'refused',
            'approval_pending', 'window-agent', 'window-agent', 7, now() - interval '10 seconds', 10)`.execute(
          trx,
        );
        await recordRefusal(trx, refusal);
        await recordRefusal(trx, refusal);
      });
      const rows = await sql<{ at: Date; occurrences: number }>`
        select at, occurrences from audit_events where client_id = 'window-agent' order by at`.execute(
        handle.db,
      );
      assert.deepEqual(
        rows.rows.map((row) => row.occurrences),
        [7, 2],
      );
      assert.equal((rows.rows[1]?.at.getTime() ?? 0) - (rows.rows[0]?.at.getTime() ?? 0), 10_000);
    });

    test("recordAudit bounds a refusal's detail (the approval API's refusals too), not a grant's", async () => {
      await recordAudit(handle.db, {
        event: "approval.approve",
        outcome: "refused",
        reason: "invalid_state",
        client_id: "bounded-agent",
        detail: { status: 409, error: HUGE_SCOPE },
      });
      await recordAudit(handle.db, {
        event: "approval.requested",
        outcome: "granted",
        client_id: "bounded-agent",
        detail: { scope: "a".repeat(2000) },
      });
      const rows = await sql<{ outcome: string; detail: Record<string, unknown> }>`
        select outcome, detail from audit_events where client_id = 'bounded-agent' order by id`.execute(
        handle.db,
      );
      assert.equal(rows.rows.length, 2);
      assert.ok(Buffer.byteLength(JSON.stringify(rows.rows[0]?.detail)) <= MAX_REFUSAL_DETAIL_BYTES);
      assert.equal(rows.rows[0]?.detail.status, 409);
      assert.equal(rows.rows[1]?.detail.scope, "a".repeat(2000));
    });
  });

  describe(`a hostile agent cannot forge or flood another agent's audit trail, on ${engine}`, () => {
    let sts: TestApp;
    let approver: string;

    before(async () => {
      const config = baseConfig();
      sts = await startTestApp({
        engine,
        config: {
          ...config,
          clients: [
            ...(config.clients as object[]),
            {
              client_id: MALLORY.id,
              client_secret: MALLORY.secret,
              token_endpoint_auth_method: "client_secret_basic",
            },
          ],
          // The flood must reach the audit write, not the issuance limits.
          issuance_limits: {
            per_client: { per_second: 100_000, burst: 100_000 },
            per_approval: { per_second: 100_000, burst: 100_000 },
          },
        },
      });
      approver = await sts.app.services.devIssuer!.mint({ sub: "carol", usage: "approver" });
    });
    after(() => sts.stop());

    const subjectToken = () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });

    async function api<T>(method: string, pathname: string, token: string, body?: unknown) {
      const response = await fetch(`${sts.url}${pathname}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as T };
    }

    /** An approval of billing-agent through the API (so its lifecycle is audited), approved, one token minted. */
    async function ownersApproval(): Promise<string> {
      const credential = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth(OWNER.id, OWNER.secret) },
      );
      assert.equal(credential.status, 200, JSON.stringify(credential.body));
      const requested = await api<ApprovalJson>(
        "POST",
        "/approvals",
        credential.body.access_token as string,
        {
          resource: CRM,
          scope: "crm:read",
          task: "sync contacts",
          max_tokens: 5,
          subject: "alice",
        },
      );
      assert.equal(requested.status, 201, JSON.stringify(requested.body));
      const approved = await api<ApprovalJson>(
        "POST",
        `/approvals/${requested.body.id}/approve`,
        approver,
        {},
      );
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      const granted = await exchange(
        sts.url,
        {
          subject_token: await subjectToken(),
          scope: "crm:read",
          authorization_details: agentTask(requested.body.id),
        },
        OWNER,
      );
      assert.equal(granted.status, 200, JSON.stringify(granted.body));
      return requested.body.id;
    }

    async function rowsOf(clientId: string): Promise<Row[]> {
      const { rows } = await sql<Row>`
        select event, outcome, reason, approval_id, occurrences, window_seconds, detail,
          pg_column_size(e.*) as bytes
        from audit_events e where client_id = ${clientId} and outcome = 'refused' order by id`.execute(
        sts.handle.db,
      );
      return rows;
    }

    async function trail(approvalId: string) {
      return api<{
        events: { event: string; outcome: string; reason: string | null; count?: number }[];
        truncated: boolean;
      }>("GET", `/approvals/${approvalId}/audit`, approver);
    }

    test(`${FLOOD} refused exchanges naming another agent's approval: none is written under it, they are counted in a handful of rows, its audit trail is intact`, async () => {
      const victim = await ownersApproval();
      const started = Date.now();
      const answers = await flood(FLOOD, 20, async () =>
        exchange(
          sts.url,
          {
            subject_token: await subjectToken(),
            scope: HUGE_SCOPE,
            authorization_details: agentTask(victim),
          },
          MALLORY,
        ),
      );
      const seconds = (Date.now() - started) / 1000;
      for (const answer of answers) {
        assert.equal(answer.status, 400);
        assert.deepEqual(answer.body, {
          error: "invalid_grant",
          error_description: "no such approval for this client",
        });
      }

      const under = await sql<{ event: string; outcome: string; client_id: string }>`
        select event, outcome, client_id from audit_events where approval_id = ${victim} order by id`.execute(
        sts.handle.db,
      );
      assert.deepEqual(
        under.rows.map((row) => [row.event, row.outcome, row.client_id]),
        [
          ["approval.requested", "granted", OWNER.id],
          ["approval.approved", "granted", OWNER.id],
          ["token_exchange", "granted", OWNER.id],
        ],
      );

      const rows = await rowsOf(MALLORY.id);
      assert.ok(
        rows.length >= 1 && rows.length <= windowsTouched(seconds),
        `${rows.length} rows in ${seconds} s`,
      );
      assert.equal(
        rows.reduce((sum, row) => sum + row.occurrences, 0),
        FLOOD,
      );
      for (const row of rows) {
        assert.deepEqual(
          [row.event, row.reason, row.approval_id, row.window_seconds],
          ["token_exchange", "approval_not_found", null, REFUSAL_WINDOW_SECONDS],
        );
        assert.ok(row.bytes < 1024, `a counted row is ${row.bytes} bytes`);
      }

      const view = await trail(victim);
      assert.equal(view.status, 200);
      assert.equal(view.body.truncated, false);
      assert.deepEqual(
        view.body.events.map((event) => [event.event, event.outcome, event.reason]),
        [
          ["approval.requested", "granted", null],
          ["approval.approved", "granted", null],
          ["token_exchange", "granted", null],
        ],
      );
    });

    test("an agent using its approved approval after it expired: the refusal is recorded under it (a human decided it)", async () => {
      const approved = await insertApproval(sts.handle.db, { client_id: MALLORY.id, ttl_seconds: -60 });
      const answer = await exchange(
        sts.url,
        { subject_token: await subjectToken(), authorization_details: agentTask(approved) },
        MALLORY,
      );
      assert.equal(answer.status, 400);
      assert.deepEqual(answer.body, {
        error: "invalid_grant",
        error_description: "the approval has expired",
      });
      const under = await sql<{ event: string; reason: string; occurrences: number }>`
        select event, reason, occurrences from audit_events
        where approval_id = ${approved} and outcome = 'refused'`.execute(sts.handle.db);
      assert.deepEqual(under.rows, [{ event: "token_exchange", reason: "approval_expired", occurrences: 1 }]);
    });

    test("an agent naming each of its own 300 lapsed approvals in turn: counted under none, so the rows stay a handful", async () => {
      const count = 300;
      const expired: string[] = [];
      for (let i = 0; i < count; i++) {
        // Requested and never decided: what an agent can make at its request rate.
        expired.push(
          await insertApproval(sts.handle.db, { client_id: MALLORY.id, status: "pending", ttl_seconds: -60 }),
        );
      }
      const before = (await rowsOf(MALLORY.id)).length;
      const started = Date.now();
      let next = 0;
      const answers = await flood(count, 20, async () =>
        exchange(
          sts.url,
          {
            subject_token: await subjectToken(),
            authorization_details: agentTask(expired[next++] as string),
          },
          MALLORY,
        ),
      );
      const seconds = (Date.now() - started) / 1000;
      for (const answer of answers) {
        assert.equal(answer.status, 400);
        assert.deepEqual(answer.body, {
          error: "invalid_grant",
          error_description: "the approval has expired",
        });
      }
      const rows = (await rowsOf(MALLORY.id)).slice(before);
      assert.ok(
        rows.length >= 1 && rows.length <= windowsTouched(seconds),
        `${rows.length} rows in ${seconds} s`,
      );
      assert.equal(
        rows.reduce((sum, row) => sum + row.occurrences, 0),
        count,
      );
      for (const row of rows) {
        assert.deepEqual(
          [row.event, row.reason, row.approval_id],
          ["token_exchange", "approval_expired", null],
        );
      }
    });

    test(`${FLOOD} of an agent's own refusals echoing 40 KB of scope: counted rows of at most 512 bytes of detail, shown with their count after the lifecycle`, async () => {
      const own = await ownersApproval();
      const started = Date.now();
      const answers = await flood(FLOOD, 20, async () =>
        exchange(
          sts.url,
          { subject_token: await subjectToken(), scope: HUGE_SCOPE, authorization_details: agentTask(own) },
          OWNER,
        ),
      );
      const seconds = (Date.now() - started) / 1000;
      for (const answer of answers) {
        assert.equal(answer.status, 400);
        assert.equal(answer.body.error, "invalid_scope");
      }
      const rows = (await rowsOf(OWNER.id)).filter((row) => row.approval_id === own);
      assert.ok(
        rows.length >= 1 && rows.length <= windowsTouched(seconds),
        `${rows.length} rows in ${seconds} s`,
      );
      assert.equal(
        rows.reduce((sum, row) => sum + row.occurrences, 0),
        FLOOD,
      );
      for (const row of rows) {
        assert.equal(row.reason, "scope_not_approved");
        const detail = JSON.stringify(row.detail);
        assert.ok(Buffer.byteLength(detail) <= MAX_REFUSAL_DETAIL_BYTES, `${detail.length} bytes of detail`);
        assert.match(String(row.detail?.description), /^scope not within the approval: x:0000000 .*…$/);
        assert.ok(row.bytes < 1024, `a counted row is ${row.bytes} bytes`);
      }

      const view = await trail(own);
      assert.equal(view.body.truncated, false);
      const events = view.body.events;
      assert.deepEqual(
        events.slice(0, 3).map((event) => [event.event, event.outcome]),
        [
          ["approval.requested", "granted"],
          ["approval.approved", "granted"],
          ["token_exchange", "granted"],
        ],
      );
      const counted = events.slice(3);
      assert.equal(counted.length, rows.length);
      assert.equal(
        counted.reduce((sum, event) => sum + (event.count ?? 1), 0),
        FLOOD,
      );
      for (const event of counted) assert.equal(event.reason, "scope_not_approved");
    });

    test(`an approval with more than ${MAX_AUDIT_EVENTS} events: its trail keeps its lifecycle and first and last grants, then the latest`, async () => {
      const id = await ownersApproval();
      // 700 more granted exchanges' rows, then a revocation.
      await sql`insert into audit_events (event, outcome, approval_id, client_id, actor)
        select 'token_exchange', 'granted', ${id}, ${OWNER.id}, ${OWNER.id} from generate_series(1, 700)`.execute(
        sts.handle.db,
      );
      await recordAudit(sts.handle.db, {
        event: "approval.revoked",
        outcome: "granted",
        approval_id: id,
        actor: "carol",
      });
      const all = await sql<{ id: string; event: string }>`
        select id::text as id, event from audit_events where approval_id = ${id} order by id`.execute(
        sts.handle.db,
      );
      assert.equal(all.rows.length, 704);

      const view = await trail(id);
      assert.equal(view.status, 200);
      assert.equal(view.body.truncated, true);
      const events = view.body.events;
      assert.equal(events.length, MAX_AUDIT_EVENTS);
      // requested, approved, the first grant (the real exchange), then the latest 497 (ending in the revocation).
      assert.deepEqual(
        events.slice(0, 3).map((event) => event.event),
        ["approval.requested", "approval.approved", "token_exchange"],
      );
      assert.equal(events.at(-1)?.event, "approval.revoked");
      assert.equal(events.filter((event) => event.event === "token_exchange").length, MAX_AUDIT_EVENTS - 3);
    });
  });
}
