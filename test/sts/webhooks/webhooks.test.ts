import assert from "node:assert/strict";
import type http from "node:http";
import { after, before, describe, test } from "node:test";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import type { WebhookEvent } from "../../../sts/src/webhooks/dispatcher.js";
import { createWebhookDispatcher, retryDelayMs } from "../../../sts/src/webhooks/dispatcher.js";
import {
  computeSignature,
  signWebhookPayload,
  verifyWebhookSignature,
} from "../../../sts/src/webhooks/signature.js";
import { deliveriesOf } from "../../../sts/src/webhooks/store.js";
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
const OTHER_SECRET = "whsec-other-0123456789abcdefghijklmnopqrstuv";

describe("webhook signatures", () => {
  const body = '{"type":"approval.requested","id":"evt_1"}';
  const now = 1_800_000_000_000;
  const t = now / 1000;

  test("a header made by signWebhookPayload verifies; the HMAC is over `<t>.<raw body>`", () => {
    const header = signWebhookPayload(SECRET, body, t);
    assert.equal(header, `t=${t},v1=${computeSignature(SECRET, t, body)}`);
    assert.match(header, /^t=1800000000,v1=[0-9a-f]{64}$/);
    assert.deepEqual(verifyWebhookSignature(SECRET, header, body, 300, now), { ok: true, timestamp: t });
    assert.deepEqual(verifyWebhookSignature(SECRET, header, Buffer.from(body), 300, now), {
      ok: true,
      timestamp: t,
    });
  });

  test("a tampered body, another secret or a forged timestamp is a signature_mismatch", () => {
    const header = signWebhookPayload(SECRET, body, t);
    const mismatch = { ok: false, reason: "signature_mismatch" };
    assert.deepEqual(
      verifyWebhookSignature(SECRET, header, body.replace("evt_1", "evt_2"), 300, now),
      mismatch,
    );
    assert.deepEqual(verifyWebhookSignature(SECRET, header, `${body} `, 300, now), mismatch);
    assert.deepEqual(verifyWebhookSignature(OTHER_SECRET, header, body, 300, now), mismatch);
    const forged = header.replace(`t=${t}`, `t=${t + 1}`);
    assert.deepEqual(verifyWebhookSignature(SECRET, forged, body, 300, now), mismatch);
  });

  test("a timestamp beyond the tolerance, either way, is refused even with a valid signature", () => {
    const old = signWebhookPayload(SECRET, body, t - 301);
    assert.deepEqual(verifyWebhookSignature(SECRET, old, body, 300, now), {
      ok: false,
      reason: "timestamp_outside_tolerance",
    });
    const future = signWebhookPayload(SECRET, body, t + 301);
    assert.deepEqual(verifyWebhookSignature(SECRET, future, body, 300, now), {
      ok: false,
      reason: "timestamp_outside_tolerance",
    });
    assert.equal(
      verifyWebhookSignature(SECRET, signWebhookPayload(SECRET, body, t - 300), body, 300, now).ok,
      true,
    );
    // The default tolerance is 5 minutes.
    assert.equal(verifyWebhookSignature(SECRET, old, body, undefined, now).ok, false);
  });

  test("missing and malformed headers; any of several v1 signatures may match (secret rotation)", () => {
    assert.deepEqual(verifyWebhookSignature(SECRET, undefined, body), {
      ok: false,
      reason: "header_missing",
    });
    assert.deepEqual(verifyWebhookSignature(SECRET, "", body), { ok: false, reason: "header_missing" });
    for (const header of ["v1=abc", `t=${t}`, `t=abc,v1=${"0".repeat(64)}`, `t=${t},v1=XYZ`, "garbage"]) {
      assert.deepEqual(verifyWebhookSignature(SECRET, header, body, 300, now), {
        ok: false,
        reason: "header_malformed",
      });
    }
    const both = `t=${t},v1=${computeSignature(OTHER_SECRET, t, body)},v1=${computeSignature(SECRET, t, body)}`;
    assert.deepEqual(verifyWebhookSignature(SECRET, both, body, 300, now), { ok: true, timestamp: t });
  });

  test("retry delays grow exponentially, capped, with equal jitter", () => {
    const tuning = {
      maxAttempts: 5,
      baseDelayMs: 1000,
      maxDelayMs: 5000,
      timeoutMs: 1000,
      pollIntervalMs: 1000,
      concurrency: 1,
    };
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((n) => retryDelayMs(n, tuning, () => 0)),
      [500, 1000, 2000, 2500, 2500],
    );
    assert.deepEqual(
      [1, 2, 3, 4].map((n) => retryDelayMs(n, tuning, () => 1)),
      [1000, 2000, 4000, 5000],
    );
  });
});

for (const engine of testEngines()) {
  describe(`webhooks on ${engine}`, { timeout: 60_000 }, () => {
    const receiver = new Receiver();
    let sts: TestApp;
    let agent: string;
    let alice: string;

    async function api(method: string, pathname: string, token: string, body?: unknown) {
      const response = await fetch(`${sts.url}${pathname}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as ApprovalJson };
    }

    async function requestApproval(): Promise<ApprovalJson> {
      const answer = await api("POST", "/approvals", agent, {
        resource: CRM,
        scope: "crm:read",
        task: "sync",
      });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      return answer.body;
    }

    before(async () => {
      await receiver.start();
      sts = await startTestApp({
        engine,
        config: {
          ...baseConfig(),
          webhooks: [
            { url: `${receiver.url}/all?token=query-secret`, secret: SECRET },
            { url: `${receiver.url}/approved`, secret: OTHER_SECRET, events: ["approval.approved"] },
          ],
        },
        appOptions: {
          webhookTuning: { baseDelayMs: 10, maxDelayMs: 40, pollIntervalMs: 25, maxAttempts: 4 },
        },
      });
      const credential = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      agent = credential.body.access_token as string;
      const devIssuer = sts.app.services.devIssuer;
      assert.ok(devIssuer);
      alice = await devIssuer.mint({ sub: "alice", usage: "approver" });
    });
    after(async () => {
      await sts.stop();
      await receiver.stop();
    });

    test("approval.requested is POSTed, signed, with the event id header and the approval", async () => {
      const approval = await requestApproval();
      await receiver.until(
        () => receiver.of("/all?token=query-secret", "approval.requested", approval.id).length > 0,
      );
      const [delivery] = receiver.of("/all?token=query-secret", "approval.requested", approval.id);
      assert.ok(delivery);
      const event = JSON.parse(delivery.body) as WebhookEvent;
      assert.deepEqual(Object.keys(event), ["type", "id", "created_at", "approval"]);
      assert.equal(event.type, "approval.requested");
      assert.match(event.id, /^evt_[A-Za-z0-9_-]{22}$/);
      assert.equal(delivery.headers["countersign-event-id"], event.id);
      assert.equal(delivery.headers["countersign-event-type"], "approval.requested");
      assert.equal(delivery.headers["content-type"], "application/json");
      assert.deepEqual(event.approval, approval);
      assert.ok(Math.abs(Date.parse(event.created_at) - Date.now()) < 60_000);
      const signature = delivery.headers["countersign-signature"] as string;
      assert.deepEqual(verifyWebhookSignature(SECRET, signature, delivery.body), {
        ok: true,
        timestamp: Number(/^t=([0-9]+),/.exec(signature)?.[1]),
      });
      assert.equal(verifyWebhookSignature(OTHER_SECRET, signature, delivery.body).ok, false);
      // The approved-only webhook is not told of requests.
      assert.equal(receiver.of("/approved", "approval.requested", approval.id).length, 0);
    });

    test("a call approval's event carries the digest and at most 1 KiB of the arguments, not all of them", async () => {
      const large = { body: "é".repeat(1500), to: "bob@example.test" };
      const small = { to: "bob@example.test" };
      const events: WebhookEvent[] = [];
      const answers: ApprovalJson[] = [];
      for (const args of [large, small]) {
        const answer = await api("POST", "/approvals", agent, {
          resource: CRM,
          scope: "crm:write",
          task: "email Bob",
          call: { tool: "send_email", arguments: args },
        });
        assert.equal(answer.status, 201, JSON.stringify(answer.body));
        answers.push(answer.body);
        const all = "/all?token=query-secret";
        await receiver.until(() => receiver.of(all, "approval.requested", answer.body.id).length > 0);
        events.push(
          JSON.parse(receiver.of(all, "approval.requested", answer.body.id)[0]?.body ?? "{}") as WebhookEvent,
        );
      }
      const [largeAnswer, smallAnswer] = answers;
      const [largeEvent, smallEvent] = events;
      // The API still shows the exact arguments to whoever decides.
      assert.deepEqual(largeAnswer?.call?.arguments, large);
      const canonical = JSON.stringify(large);
      // 1024 bytes: the 9 ASCII bytes of `{"body":"` and 507 two-byte `é` (the 508th would not fit).
      assert.deepEqual(largeEvent?.approval.call, {
        tool: "send_email",
        arguments_digest: largeAnswer?.call?.arguments_digest,
        arguments_preview: `{"body":"${"é".repeat(507)}`,
        arguments_truncated: true,
        arguments_bytes: Buffer.byteLength(canonical, "utf8"),
      });
      assert.deepEqual({ ...largeEvent?.approval, call: null }, { ...largeAnswer, call: null });
      assert.deepEqual(smallEvent?.approval.call, {
        tool: "send_email",
        arguments_digest: smallAnswer?.call?.arguments_digest,
        arguments_preview: '{"to":"bob@example.test"}',
        arguments_truncated: false,
        arguments_bytes: 25,
      });
      assert.ok(
        Buffer.byteLength(
          receiver.of("/all?token=query-secret", "approval.requested", largeAnswer!.id)[0]!.body,
        ) < 4096,
      );
    });

    test("a receiver answering 500 twice gets the same event again, then it is delivered", async () => {
      receiver.plans.set("/all?token=query-secret", [500, 500]);
      const approval = await requestApproval();
      await receiver.until(
        () => receiver.of("/all?token=query-secret", "approval.requested", approval.id).length === 3,
      );
      const attempts = receiver.of("/all?token=query-secret", "approval.requested", approval.id);
      assert.deepEqual(
        attempts.map((a) => a.status),
        [500, 500, 200],
      );
      const ids = new Set(attempts.map((a) => a.headers["countersign-event-id"]));
      assert.equal(ids.size, 1);
      assert.equal(new Set(attempts.map((a) => a.body)).size, 1, "retries are byte-identical");
      for (const attempt of attempts) {
        assert.equal(
          verifyWebhookSignature(SECRET, attempt.headers["countersign-signature"] as string, attempt.body).ok,
          true,
        );
      }
      const [eventId] = [...ids] as string[];
      assert.ok(eventId);
      // The outbox row says so (delivered after the 200 is recorded).
      await sts.app.webhooks.flush();
      const rows = await deliveriesOf(sts.app.services.db, eventId);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.status, "delivered");
      assert.equal(rows[0]?.attempts, 3);
      // Failures are logged with the URL's origin and path only; no secret reaches the logs.
      assert.match(sts.logs.text, /webhook delivery failed; will retry/);
      assert.doesNotMatch(sts.logs.text, /query-secret/);
      assert.doesNotMatch(sts.logs.text, new RegExp(SECRET));
    });

    test("approve, deny and revoke are sent; the approved-only webhook gets approval.approved alone", async () => {
      const first = await requestApproval();
      const second = await requestApproval();
      const approved = await api("POST", `/approvals/${first.id}/approve`, alice, {});
      assert.equal(approved.status, 200);
      const revoked = await api("POST", `/approvals/${first.id}/revoke`, alice, { reason: "done" });
      assert.equal(revoked.status, 200);
      const denied = await api("POST", `/approvals/${second.id}/deny`, alice, { reason: "no" });
      assert.equal(denied.status, 200);
      const all = "/all?token=query-secret";
      await receiver.until(
        () =>
          receiver.of(all, "approval.approved", first.id).length > 0 &&
          receiver.of(all, "approval.revoked", first.id).length > 0 &&
          receiver.of(all, "approval.denied", second.id).length > 0 &&
          receiver.of("/approved", "approval.approved", first.id).length > 0,
      );
      const revokedEvent = JSON.parse(
        receiver.of(all, "approval.revoked", first.id)[0]?.body ?? "{}",
      ) as WebhookEvent;
      assert.deepEqual(revokedEvent.approval, revoked.body);
      assert.equal(revokedEvent.approval.status, "revoked");
      const deniedEvent = JSON.parse(
        receiver.of(all, "approval.denied", second.id)[0]?.body ?? "{}",
      ) as WebhookEvent;
      assert.equal(deniedEvent.approval.decision_reason, "no");
      const onlyApproved = receiver.received.filter((r) => r.path === "/approved");
      assert.ok(onlyApproved.every((r) => (JSON.parse(r.body) as WebhookEvent).type === "approval.approved"));
      const toApproved = receiver.of("/approved", "approval.approved", first.id)[0];
      assert.ok(toApproved);
      assert.equal(
        verifyWebhookSignature(
          OTHER_SECRET,
          toApproved.headers["countersign-signature"] as string,
          toApproved.body,
        ).ok,
        true,
      );
    });

    test("a receiver that keeps failing is given up after maxAttempts; the API call never failed", async () => {
      receiver.plans.set("/all?token=query-secret", [503, 503, 503, 503, 503]);
      const approval = await requestApproval();
      await receiver.until(
        () => receiver.of("/all?token=query-secret", "approval.requested", approval.id).length === 4,
      );
      const eventId = receiver.of("/all?token=query-secret", "approval.requested", approval.id)[0]?.headers[
        "countersign-event-id"
      ] as string;
      await sts.app.webhooks.flush();
      const [row] = await deliveriesOf(sts.app.services.db, eventId);
      assert.equal(row?.status, "failed");
      assert.equal(row?.attempts, 4);
      assert.equal(row?.last_error, "HTTP 503");
      assert.match(sts.logs.text, /webhook delivery failed; giving up/);
      receiver.plans.delete("/all?token=query-secret");
    });
  });
}

describe("webhooks: an unreachable receiver and a restart", () => {
  test("the API answers while the receiver is down; the outbox row is delivered by a new dispatcher", {
    timeout: 60_000,
  }, async () => {
    const receiver = new Receiver();
    await receiver.start();
    const url = `${receiver.url}/hook`;
    const port = Number(new URL(url).port);
    await receiver.stop();
    const config = { ...baseConfig(), webhooks: [{ url, secret: SECRET, events: ["approval.requested"] }] };
    const sts = await startTestApp({
      engine: testEngines().at(-1) ?? "pglite",
      config,
      appOptions: { webhookTuning: { baseDelayMs: 3_600_000, maxDelayMs: 3_600_000, pollIntervalMs: 25 } },
    });
    const back = new Receiver();
    try {
      const credential = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      const response = await fetch(`${sts.url}/approvals`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${credential.body.access_token as string}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ resource: CRM, scope: "crm:read", task: "sync" }),
      });
      assert.equal(response.status, 201);
      const approval = (await response.json()) as ApprovalJson;
      const db = sts.app.services.db;
      const outbox = () =>
        db
          .withTables<{ webhook_deliveries: { approval_id: string; attempts: number; status: string } }>()
          .selectFrom("webhook_deliveries")
          .select(["attempts", "status"])
          .where("approval_id", "=", approval.id)
          .executeTakeFirst();
      // The first attempt is refused (connection refused) and recorded; the retry is an hour away.
      for (let i = 0; i < 1000 && ((await outbox())?.attempts ?? 0) < 1; i++) {
        await sts.app.webhooks.flush();
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.deepEqual(await outbox(), { attempts: 1, status: "pending" });
      assert.match(sts.logs.text, /"error":"ECONNREFUSED"/);
      // This instance's dispatcher stops (as at a shutdown); the row stays in the outbox.
      await sts.app.webhooks.close();
      await (back as unknown as { server: http.Server }).server.listen(port, "127.0.0.1");
      await new Promise((resolve) => setImmediate(resolve));
      // A new dispatcher (a restarted or another instance) on the same database delivers it once due.
      await db
        .withTables<{ webhook_deliveries: { next_attempt_at: Date } }>()
        .updateTable("webhook_deliveries")
        .set({ next_attempt_at: new Date(0) })
        .execute();
      const restarted = createWebhookDispatcher({
        db,
        webhooks: sts.config.webhooks,
        logger: sts.app.logger,
        tuning: { pollIntervalMs: 25 },
      });
      try {
        await back.until((all) => all.length > 0);
        const [delivery] = back.received;
        assert.ok(delivery);
        assert.equal((JSON.parse(delivery.body) as WebhookEvent).approval.id, approval.id);
        assert.equal(
          verifyWebhookSignature(SECRET, delivery.headers["countersign-signature"] as string, delivery.body)
            .ok,
          true,
        );
        await restarted.flush();
        assert.deepEqual(await outbox(), { attempts: 2, status: "delivered" });
      } finally {
        await restarted.close();
      }
    } finally {
      await back.stop().catch(() => {});
      await sts.stop();
    }
  });
});
