import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import Koa from "koa";
import { sql } from "kysely";
import pg from "pg";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import type { ApprovalDecisionInput, ApproverPolicy } from "../../../sts/src/approvals/policy.js";
import { approvalRoutes } from "../../../sts/src/approvals/routes.js";
import { errorHandler } from "../../../sts/src/http/errors.js";
import { basicAuth, freePort, postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../../..");
const CRM = "https://crm.example.test";

interface Answer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

/** Calls the approval API with a Bearer token and an optional JSON body. */
async function call<T = Record<string, unknown>>(
  base: string,
  method: string,
  pathname: string,
  token: string | undefined,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer<T>> {
  const response = await fetch(`${base}${pathname}`, {
    method,
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: (text ? JSON.parse(text) : {}) as T };
}

function assertError(answer: Answer<object>, status: number, error: string, description?: string | RegExp) {
  const body = answer.body as Record<string, unknown>;
  assert.equal(answer.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
  assert.equal(typeof body.error_description, "string");
  if (typeof description === "string") assert.equal(body.error_description, description);
  else if (description) assert.match(body.error_description as string, description);
}

for (const engine of testEngines()) {
  describe(`approval API on ${engine}`, () => {
    let sts: TestApp;
    let billing: string;
    let post: string;
    let alice: string;
    let bob: string;

    const api = <T = Record<string, unknown>>(
      method: string,
      pathname: string,
      token: string | undefined,
      body?: unknown,
      headers?: Record<string, string>,
    ) => call<T>(sts.url, method, pathname, token, body, headers);

    async function clientCredentials(clientId: string, scope: string | null = "approvals:request") {
      const form: Record<string, string> = { grant_type: "client_credentials" };
      if (scope !== null) form.scope = scope;
      const answer =
        clientId === "billing-agent"
          ? await postForm(`${sts.url}/token`, form, { authorization: basicAuth(clientId, TEST_SECRET) })
          : await postForm(`${sts.url}/token`, { ...form, client_id: clientId, client_secret: TEST_SECRET });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return answer.body.access_token as string;
    }

    const request = (body: Record<string, unknown> = {}, token = billing) =>
      api<ApprovalJson>("POST", "/approvals", token, {
        resource: CRM,
        scope: "crm:read crm:write",
        task: "reconcile March invoices",
        ...body,
      });

    async function pending(body: Record<string, unknown> = {}): Promise<ApprovalJson> {
      const answer = await request(body);
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      return answer.body;
    }

    async function approved(body: Record<string, unknown> = {}): Promise<ApprovalJson> {
      const approval = await pending(body);
      const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, alice, {});
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return answer.body;
    }

    /** Moves an approval's clock: `expires_at` (and `created_at`) so many seconds into the past. */
    async function age(id: string, seconds: number) {
      await sql`update approvals set created_at = created_at - make_interval(secs => ${seconds}),
        expires_at = expires_at - make_interval(secs => ${seconds}) where id = ${id}`.execute(
        sts.app.services.db,
      );
    }

    async function auditFor(approvalId: string) {
      return sts.app.services.db
        .selectFrom("audit_events")
        .select(["event", "outcome", "reason", "actor", "client_id"])
        .where("approval_id", "=", approvalId)
        .orderBy("id")
        .execute();
    }

    before(async () => {
      sts = await startTestApp({ engine });
      billing = await clientCredentials("billing-agent");
      post = await clientCredentials("post-agent");
      const devIssuer = sts.app.services.devIssuer;
      assert.ok(devIssuer);
      alice = await devIssuer.mint({ sub: "alice", usage: "approver" });
      bob = await devIssuer.mint({ sub: "bob", usage: "approver" });
    });
    after(() => sts.stop());

    describe("POST /approvals", () => {
      test("an agent asks: 201, a pending approval with the documented fields and defaults", async () => {
        const answer = await request();
        assert.equal(answer.status, 201);
        const approval = answer.body;
        assert.match(approval.id, /^apr_[A-Za-z0-9_-]{22}$/);
        assert.equal(answer.headers.get("location"), `/approvals/${approval.id}`);
        assert.equal(answer.headers.get("cache-control"), "no-store");
        assert.deepEqual(
          { ...approval, id: "", created_at: "", expires_at: "" },
          {
            id: "",
            status: "pending",
            client_id: "billing-agent",
            resource: CRM,
            scope: "crm:read crm:write",
            task: "reconcile March invoices",
            subject: null,
            subject_issuer: null,
            max_tokens: 10,
            tokens_issued: 0,
            rate_limit: null,
            requested_by: "billing-agent",
            approved_by: null,
            created_at: "",
            decided_at: null,
            expires_at: "",
            requested_scope: "crm:read crm:write",
            decision_reason: null,
            revoked_at: null,
            tools: null,
            resources: null,
            prompts: null,
            call: null,
          },
        );
        const created = Date.parse(approval.created_at);
        assert.ok(Math.abs(created - Date.now()) < 10_000);
        assert.equal(Date.parse(approval.expires_at) - created, 3600 * 1000);
        assert.deepEqual(await auditFor(approval.id), [
          {
            event: "approval.requested",
            outcome: "granted",
            reason: null,
            actor: "billing-agent",
            client_id: "billing-agent",
          },
        ]);
      });

      test("every optional field is stored; ttl_seconds runs from creation; scope is normalised", async () => {
        const approval = await pending({
          scope: " crm:read  crm:read crm:delete ",
          max_tokens: 1_000_000,
          ttl_seconds: 60,
          subject: "user:alice",
          rate_limit: { per_second: 2.5, burst: 4 },
        });
        assert.equal(approval.scope, "crm:read crm:delete");
        assert.equal(approval.max_tokens, 1_000_000);
        assert.equal(approval.subject, "user:alice");
        assert.deepEqual(approval.rate_limit, { per_second: 2.5, burst: 4 });
        assert.equal(Date.parse(approval.expires_at) - Date.parse(approval.created_at), 60_000);
      });

      test("a resource that is not configured: 400 invalid_target", async () => {
        assertError(
          await request({ resource: "https://evil.example.test" }),
          400,
          "invalid_target",
          "resource: is not a configured resource",
        );
      });

      test("a scope outside the resource's: 400 invalid_scope naming it", async () => {
        assertError(
          await request({ scope: "crm:read mail:send" }),
          400,
          "invalid_scope",
          `scope: "mail:send" is not a scope of ${CRM}`,
        );
        assertError(await request({ scope: "   " }), 400, "invalid_scope", "scope: names no scope");
      });

      const invalid: [string, Record<string, unknown>, string | RegExp][] = [
        ["an unknown field", { admin: true }, 'unknown field "admin"'],
        ["two unknown fields", { admin: true, sudo: 1 }, 'unknown fields "admin", "sudo"'],
        [
          "an unknown rate_limit field",
          { rate_limit: { per_second: 1, burst: 1, x: 1 } },
          'rate_limit: unknown field "x"',
        ],
        ["a missing task", { task: undefined }, /^task: /],
        ["an empty task", { task: "  " }, "task: must not be empty"],
        ["a task over 2000 characters", { task: "x".repeat(2001) }, /^task: Too big/],
        ["a scope over 1024 characters", { scope: "crm:read ".repeat(120) }, /^scope: Too big/],
        ["max_tokens 0", { max_tokens: 0 }, /^max_tokens: Too small/],
        ["max_tokens above 1000000", { max_tokens: 1_000_001 }, /^max_tokens: Too big/],
        ["a fractional max_tokens", { max_tokens: 1.5 }, /^max_tokens: /],
        ["max_tokens as a string", { max_tokens: "5" }, /^max_tokens: /],
        ["ttl_seconds 0", { ttl_seconds: 0 }, /^ttl_seconds: Too small/],
        ["ttl_seconds above 30 days", { ttl_seconds: 2_592_001 }, /^ttl_seconds: Too big/],
        ["a subject over 255 characters", { subject: "s".repeat(256) }, /^subject: Too big/],
        ["a null subject", { subject: null }, /^subject: /],
        ["rate_limit per_second 0", { rate_limit: { per_second: 0, burst: 1 } }, /^rate_limit\.per_second: /],
        ["rate_limit burst 0", { rate_limit: { per_second: 1, burst: 0 } }, /^rate_limit\.burst: /],
        ["a fractional burst", { rate_limit: { per_second: 1, burst: 1.5 } }, /^rate_limit\.burst: /],
      ];
      for (const [name, body, description] of invalid) {
        test(`${name}: 400 invalid_request naming the field`, async () => {
          assertError(await request(body), 400, "invalid_request", description);
        });
      }

      test("a body that is not a JSON object, not JSON, not JSON-typed, or too large", async () => {
        assertError(await api("POST", "/approvals", billing, "[1]"), 400, "invalid_request", /^body: /);
        assertError(
          await api("POST", "/approvals", billing, "{"),
          400,
          "invalid_request",
          "the body is not valid JSON",
        );
        assertError(
          await api("POST", "/approvals", billing, "resource=x", {
            "content-type": "application/x-www-form-urlencoded",
          }),
          415,
          "invalid_request",
          "the body must be application/json",
        );
        assertError(
          await api("POST", "/approvals", billing, { task: "x".repeat(70_000) }),
          413,
          "invalid_request",
          "the body exceeds 65536 bytes",
        );
        assertError(await api("POST", "/approvals", billing), 400, "invalid_request", /^resource: /);
      });

      test("an approver may not ask: 403 insufficient_scope", async () => {
        const answer = await request({}, alice);
        assertError(
          answer,
          403,
          "insufficient_scope",
          "this call needs an agent's approvals:request token, not an approver's",
        );
        assert.match(
          answer.headers.get("www-authenticate") ?? "",
          /^Bearer realm="countersign", error="insufficient_scope"/,
        );
      });
    });

    describe("credentials", () => {
      test("none: 401 with a bare Bearer challenge (RFC 6750 §3.1)", async () => {
        const answer = await api("POST", "/approvals", undefined, {
          resource: CRM,
          scope: "crm:read",
          task: "t",
        });
        assertError(answer, 401, "invalid_request", "a Bearer token is required");
        assert.equal(answer.headers.get("www-authenticate"), 'Bearer realm="countersign"');
        const basic = await api("GET", "/approvals", undefined, undefined, {
          authorization: basicAuth("billing-agent", TEST_SECRET),
        });
        assertError(basic, 401, "invalid_request", "a Bearer token is required");
      });

      const bad: [string, () => Promise<string> | string, string][] = [
        ["garbage", () => "not-a-jwt", "the Bearer token is not a JWT"],
        [
          "a tampered agent token",
          // The signature's first character changed: all six of its bits are signature bits (the last
          // four characters set to AAAA left the bytes as they were for 1 signature in 2^20).
          () => {
            const at = billing.lastIndexOf(".") + 1;
            return `${billing.slice(0, at)}${billing[at] === "A" ? "B" : "A"}${billing.slice(at + 1)}`;
          },
          "the access token is invalid",
        ],
        [
          "an expired approver token",
          () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver", ttlSeconds: -120 }),
          "the approver token has expired",
        ],
        [
          "a dev subject token used as approver",
          () => sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
          "the token was not issued for approver use",
        ],
        [
          "an untrusted issuer's token",
          async () => {
            const { privateKey } = await generateKeyPair("ES256");
            return new SignJWT({})
              .setProtectedHeader({ alg: "ES256" })
              .setIssuer("https://idp.evil.test")
              .setSubject("mallory")
              .setAudience(sts.url)
              .setExpirationTime("5m")
              .sign(privateKey);
          },
          "the approver token's issuer is not trusted",
        ],
        [
          "a token forged with the dev issuer's name",
          async () => {
            const { privateKey } = await generateKeyPair("ES256");
            return new SignJWT({ usage: ["approver"], roles: ["approver"] })
              .setProtectedHeader({ alg: "ES256", kid: "countersign-dev" })
              .setIssuer(`${sts.url}/dev`)
              .setSubject("mallory")
              .setAudience(sts.url)
              .setExpirationTime("5m")
              .sign(privateKey);
          },
          "the approver token's signature is invalid",
        ],
      ];
      for (const [name, token, description] of bad) {
        test(`${name}: 401 invalid_token with a challenge`, async () => {
          const answer = await api("GET", "/approvals", await token());
          assertError(answer, 401, "invalid_token", description);
          assert.equal(
            answer.headers.get("www-authenticate"),
            `Bearer realm="countersign", error="invalid_token", error_description="${description}"`,
          );
        });
      }

      test("an agent token without approvals:request: 403 insufficient_scope naming the scope", async () => {
        const token = await clientCredentials("billing-agent", null);
        const answer = await request({}, token);
        assertError(answer, 403, "insufficient_scope", "the access token lacks the approvals:request scope");
        assert.match(
          answer.headers.get("www-authenticate") ?? "",
          /error="insufficient_scope".*scope="approvals:request"$/,
        );
      });

      test("an oversized Authorization header: 401 invalid_token, not parsed", async () => {
        assertError(
          await api("GET", "/approvals", "a".repeat(9000)),
          401,
          "invalid_token",
          "the Authorization header exceeds 8192 bytes",
        );
      });

      test("an unauthenticated refusal is logged with its reason code, never audited to the database, never logs the token", async () => {
        const before = await sts.app.services.db
          .selectFrom("audit_events")
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .executeTakeFirstOrThrow();
        await api("GET", "/approvals", "not-a-jwt");
        const after = await sts.app.services.db
          .selectFrom("audit_events")
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .executeTakeFirstOrThrow();
        assert.equal(Number(after.n), Number(before.n));
        const line = sts.logs.lines
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .findLast((l) => l.msg === "approval api refusal");
        assert.equal(line?.event, "approval.list");
        assert.equal(line?.reason, "credentials_invalid");
        assert.ok(!sts.logs.text.includes(billing));
        assert.ok(!sts.logs.text.includes(alice));
      });
    });

    describe("reading", () => {
      test("the asking agent and any approver read it; another agent gets 404", async () => {
        const approval = await pending();
        for (const token of [billing, alice, bob]) {
          const answer = await api<ApprovalJson>("GET", `/approvals/${approval.id}`, token);
          assert.equal(answer.status, 200);
          assert.deepEqual(answer.body, approval);
        }
        const other = await api("GET", `/approvals/${approval.id}`, post);
        assertError(other, 404, "not_found", "no such approval");
        // Audited under the caller, never under the victim's approval (whose trail it would fill).
        assert.equal((await auditFor(approval.id)).filter((e) => e.outcome === "refused").length, 0);
        const probe = await sts.app.services.db
          .selectFrom("audit_events")
          .select(["event", "outcome", "reason", "actor", "client_id", "approval_id"])
          .where("reason", "=", "not_owner")
          .where("client_id", "=", "post-agent")
          .orderBy("id", "desc")
          .executeTakeFirstOrThrow();
        assert.deepEqual(probe, {
          event: "approval.read",
          outcome: "refused",
          reason: "not_owner",
          actor: "post-agent",
          client_id: "post-agent",
          approval_id: null,
        });
        assertError(
          await api("GET", "/approvals/apr_AAAAAAAAAAAAAAAAAAAAAA", alice),
          404,
          "not_found",
          "no such approval",
        );
        assertError(await api("GET", "/approvals/..%2Fetc", alice), 404, "not_found");
      });

      test("GET /approvals lists pending ones for approvers, each agent's newest first, round by round; agents are refused", async () => {
        assertError(
          await api("GET", "/approvals", billing),
          403,
          "insufficient_scope",
          "this call needs an approver; agents may not decide approvals",
        );
        const mine = await pending({ task: "list me" });
        const answer = await api<{ approvals: ApprovalJson[]; next_cursor: string | null }>(
          "GET",
          "/approvals?status=pending",
          alice,
        );
        assert.equal(answer.status, 200);
        assert.ok(answer.body.approvals.every((a) => a.status === "pending"));
        assert.ok(answer.body.approvals.some((a) => a.id === mine.id));
        assert.equal(answer.body.approvals[0]?.id, mine.id, "the newest request of its agent leads");
        // Round r holds each agent's (r+1)-th newest; within a round, newest first.
        const seen = new Map<string, number>();
        const keys = answer.body.approvals.map((a) => {
          const round = seen.get(a.client_id) ?? 0;
          seen.set(a.client_id, round + 1);
          return { id: a.id, round, at: Date.parse(a.created_at) };
        });
        const ordered = [...keys].sort((x, y) => x.round - y.round || y.at - x.at || (x.id < y.id ? 1 : -1));
        assert.deepEqual(
          keys.map((k) => k.id),
          ordered.map((k) => k.id),
        );
        const byDefault = await api<{ approvals: ApprovalJson[] }>("GET", "/approvals", alice);
        assert.deepEqual(
          byDefault.body.approvals.map((a) => a.id),
          answer.body.approvals.map((a) => a.id),
        );
      });

      test("pagination: limit and next_cursor walk every row exactly once", async () => {
        const ids = new Set<string>();
        for (let i = 0; i < 5; i++) ids.add((await approved({ task: `page ${i}` })).id);
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const query: string = `/approvals?status=approved&limit=2${cursor ? `&cursor=${cursor}` : ""}`;
          const page = await api<{ approvals: ApprovalJson[]; next_cursor: string | null }>(
            "GET",
            query,
            alice,
          );
          assert.equal(page.status, 200);
          assert.ok(page.body.approvals.length <= 2);
          seen.push(...page.body.approvals.map((a) => a.id));
          cursor = page.body.next_cursor;
        } while (cursor);
        assert.equal(new Set(seen).size, seen.length);
        for (const id of ids) assert.ok(seen.includes(id));
      });

      test("a cursor holding a date the database cannot store: 400 invalid_request (cursor_invalid), not 500", async () => {
        const id = `apr_${"A".repeat(22)}`;
        const encode = (value: unknown[]) => Buffer.from(JSON.stringify(value)).toString("base64url");
        // A pending list's cursor is [snapshot, round, created_at, id]; the others' [created_at, id].
        const cursors = (createdAt: string) => [
          `status=denied&cursor=${encode([createdAt, id])}`,
          `cursor=${encode([new Date().toISOString(), 0, createdAt, id])}`,
          `cursor=${encode([createdAt, 0, new Date().toISOString(), id])}`,
        ];
        // JS Date's extremes (Postgres stores 4713 BC to 294276 AD), ISO years PGlite cannot send
        // (year 0, five digits), and a year JS Date cannot hold at all.
        const dates = [
          "-271821-04-20T00:00:00.000Z",
          "+275760-09-13T00:00:00.000Z",
          "+300000-01-01T00:00:00.000Z",
          "-004714-11-24T00:00:00.000Z",
          "0000-01-01T00:00:00.000Z",
          "+010000-01-01T00:00:00.000Z",
        ];
        // Alice's refusals of one kind are counted in one row per 10-second window.
        const refusals = async () => {
          const rows = await sts.app.services.db
            .selectFrom("audit_events")
            .select(["event", "outcome", "reason", "actor", "occurrences"])
            .where("actor", "=", "alice")
            .where("outcome", "=", "refused")
            .execute();
          const counts: Record<string, number> = {};
          for (const row of rows) {
            const kind = `${row.event} ${row.reason}`;
            counts[kind] = (counts[kind] ?? 0) + Number(row.occurrences);
          }
          return counts;
        };
        for (const query of dates.flatMap(cursors)) {
          const before = await refusals();
          assertError(
            await api("GET", `/approvals?${query}`, alice),
            400,
            "invalid_request",
            "cursor: is not a cursor this API returned",
          );
          const kind = "approval.list cursor_invalid";
          assert.deepEqual(await refusals(), { ...before, [kind]: (before[kind] ?? 0) + 1 }, query);
        }
        // The range's ends are still cursors (a pending list's snapshot must be recent: the third form).
        for (const createdAt of ["0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"]) {
          for (const query of cursors(createdAt).slice(0, 2)) {
            const answer = await api<{ approvals: ApprovalJson[] }>("GET", `/approvals?${query}`, alice);
            assert.equal(answer.status, 200, `${query} ${JSON.stringify(answer.body)}`);
          }
        }
      });

      test("bad list queries: 400 invalid_request", async () => {
        assertError(await api("GET", "/approvals?status=maybe", alice), 400, "invalid_request", /^status: /);
        assertError(await api("GET", "/approvals?limit=0", alice), 400, "invalid_request", /^limit: /);
        assertError(await api("GET", "/approvals?limit=201", alice), 400, "invalid_request", /^limit: /);
        assertError(
          await api("GET", "/approvals?limit=ten", alice),
          400,
          "invalid_request",
          "limit: must be an integer",
        );
        assertError(
          await api("GET", "/approvals?cursor=xyz", alice),
          400,
          "invalid_request",
          "cursor: is not a cursor this API returned",
        );
        assertError(
          await api("GET", "/approvals?status=pending&status=approved", alice),
          400,
          "invalid_request",
          /^status: /,
        );
        assertError(
          await api("GET", "/approvals?sort=desc", alice),
          400,
          "invalid_request",
          'unknown field "sort"',
        );
      });
    });

    describe("state machine", () => {
      test("pending → approved (by the approver) → revoked, with a revocations row and audit events", async () => {
        const approval = await pending();
        const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, alice);
        assert.equal(answer.status, 200);
        assert.equal(answer.body.status, "approved");
        assert.equal(answer.body.approved_by, "alice");
        assert.ok(answer.body.decided_at);
        assert.equal(answer.body.scope, approval.scope);
        assert.equal(answer.body.expires_at, approval.expires_at);

        const revoked = await api<ApprovalJson>("POST", `/approvals/${approval.id}/revoke`, bob, {
          reason: "task finished",
        });
        assert.equal(revoked.status, 200);
        assert.equal(revoked.body.status, "revoked");
        assert.equal(revoked.body.decision_reason, "task finished");
        assert.ok(revoked.body.revoked_at);
        assert.equal(revoked.body.approved_by, "alice");
        const rows = await sts.app.services.db
          .selectFrom("revocations")
          .selectAll()
          .where("approval_id", "=", approval.id)
          .execute();
        assert.equal(rows.length, 1);
        assert.equal(rows[0]?.reason, "revoked");
        assert.deepEqual(
          (await auditFor(approval.id)).map((e) => [e.event, e.outcome, e.actor]),
          [
            ["approval.requested", "granted", "billing-agent"],
            ["approval.approved", "granted", "alice"],
            ["approval.revoked", "granted", "bob"],
          ],
        );
      });

      test("pending → denied, with the reason", async () => {
        const approval = await pending();
        const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/deny`, alice, {
          reason: "not this month",
        });
        assert.equal(answer.status, 200);
        assert.equal(answer.body.status, "denied");
        assert.equal(answer.body.decision_reason, "not this month");
        assert.equal(answer.body.approved_by, null);
        assert.ok(answer.body.decided_at);
      });

      test("refused transitions: 409 invalid_state saying why, audited", async () => {
        const denied = await pending();
        await api("POST", `/approvals/${denied.id}/deny`, alice);
        const isApproved = await approved();
        const revoked = await approved();
        await api("POST", `/approvals/${revoked.id}/revoke`, alice);
        const stillPending = await pending();
        const cases: [string, string, string][] = [
          [denied.id, "approve", "the approval is denied; only a pending approval can be approved"],
          [denied.id, "deny", "the approval is denied; only a pending approval can be denied"],
          [denied.id, "revoke", "the approval is denied; only an approved approval can be revoked"],
          [isApproved.id, "approve", "the approval is approved; only a pending approval can be approved"],
          [isApproved.id, "deny", "the approval is approved; only a pending approval can be denied"],
          [revoked.id, "approve", "the approval is revoked; only a pending approval can be approved"],
          [revoked.id, "deny", "the approval is revoked; only a pending approval can be denied"],
          [revoked.id, "revoke", "the approval is revoked; only an approved approval can be revoked"],
          [
            stillPending.id,
            "revoke",
            "the approval is pending; only an approved approval can be revoked; deny a pending approval instead",
          ],
        ];
        for (const [id, action, description] of cases) {
          assertError(
            await api("POST", `/approvals/${id}/${action}`, alice),
            409,
            "invalid_state",
            description,
          );
        }
        const refusals = (await auditFor(denied.id)).filter((e) => e.outcome === "refused");
        assert.deepEqual(
          refusals.map((e) => [e.event, e.reason]),
          [
            ["approval.approve", "state_conflict"],
            ["approval.deny", "state_conflict"],
            ["approval.revoke", "state_conflict"],
          ],
        );
      });

      test("expired approvals read as expired and can be neither decided nor revoked", async () => {
        const wasPending = await pending({ ttl_seconds: 60 });
        const wasApproved = await approved({ ttl_seconds: 60 });
        await age(wasPending.id, 61);
        await age(wasApproved.id, 61);
        for (const id of [wasPending.id, wasApproved.id]) {
          const read = await api<ApprovalJson>("GET", `/approvals/${id}`, billing);
          assert.equal(read.body.status, "expired");
        }
        for (const action of ["approve", "deny"]) {
          assertError(
            await api("POST", `/approvals/${wasPending.id}/${action}`, alice),
            409,
            "invalid_state",
            "the approval has expired",
          );
        }
        assertError(
          await api("POST", `/approvals/${wasApproved.id}/revoke`, alice),
          409,
          "invalid_state",
          "the approval has expired",
        );
        const expired = await api<{ approvals: ApprovalJson[] }>(
          "GET",
          "/approvals?status=expired&limit=200",
          alice,
        );
        const ids = expired.body.approvals.map((a) => a.id);
        assert.ok(ids.includes(wasPending.id) && ids.includes(wasApproved.id));
        const pendingList = await api<{ approvals: ApprovalJson[] }>("GET", "/approvals?limit=200", alice);
        assert.ok(!pendingList.body.approvals.some((a) => a.id === wasPending.id));
        // Past its expiry, a refusal is recorded under an approval only if a human decided it (for a day):
        // an agent can make lapsed ones at its request rate and name each in turn. So alice's refusals
        // of the lapsed pending approval are under none, her refusal to revoke the approved one under it.
        assert.deepEqual(
          (await auditFor(wasPending.id)).filter((e) => e.outcome === "refused"),
          [],
        );
        const counted = await sts.app.services.db
          .selectFrom("audit_events")
          .select(["event", "approval_id"])
          .where("actor", "=", "alice")
          .where("reason", "=", "already_expired")
          .execute();
        assert.deepEqual([...new Set(counted.map((row) => `${row.event} ${row.approval_id}`))].sort(), [
          "approval.approve null",
          "approval.deny null",
          `approval.revoke ${wasApproved.id}`,
        ]);
      });

      test("decisions need an approver (403), an existing approval (404) and a valid body (400)", async () => {
        const approval = await pending();
        for (const action of ["approve", "deny", "revoke"]) {
          assertError(
            await api("POST", `/approvals/${approval.id}/${action}`, billing),
            403,
            "insufficient_scope",
          );
          assertError(
            await api("POST", `/approvals/apr_AAAAAAAAAAAAAAAAAAAAAA/${action}`, alice),
            404,
            "not_found",
            "no such approval",
          );
          assertError(
            await api("POST", `/approvals/${approval.id}/${action}`, alice, { because: "x" }),
            400,
            "invalid_request",
            'unknown field "because"',
          );
          assertError(
            await api("POST", `/approvals/${approval.id}/${action}`, undefined),
            401,
            "invalid_request",
          );
        }
        assertError(
          await api("POST", `/approvals/${approval.id}/deny`, alice, { reason: "r".repeat(501) }),
          400,
          "invalid_request",
          /^reason: Too big/,
        );
        assert.equal(
          (await api<ApprovalJson>("GET", `/approvals/${approval.id}`, alice)).body.status,
          "pending",
        );
      });

      test("two approvers deciding at once: exactly one wins, the other gets 409", async () => {
        for (let round = 0; round < 8; round++) {
          const approval = await pending();
          const answers = await Promise.all([
            api("POST", `/approvals/${approval.id}/approve`, alice),
            api("POST", `/approvals/${approval.id}/deny`, bob),
            api("POST", `/approvals/${approval.id}/approve`, bob),
            api("POST", `/approvals/${approval.id}/deny`, alice),
          ]);
          const statuses = answers.map((a) => a.status).sort();
          assert.deepEqual(statuses, [200, 409, 409, 409], JSON.stringify(answers.map((a) => a.body)));
          for (const answer of answers.filter((a) => a.status === 409))
            assert.equal(answer.body.error, "invalid_state");
          const granted = (await auditFor(approval.id)).filter((e) => e.outcome === "granted");
          assert.equal(granted.length, 2); // requested + exactly one decision
        }
      });
    });

    describe("approving may only narrow", () => {
      test("narrower scope, budget, lifetime and rate limit are applied", async () => {
        const approval = await pending({
          scope: "crm:read crm:write crm:delete",
          max_tokens: 50,
          ttl_seconds: 7200,
          rate_limit: { per_second: 5, burst: 10 },
        });
        const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, alice, {
          scope: "crm:read",
          max_tokens: 5,
          ttl_seconds: 600,
          rate_limit: { per_second: 0.5, burst: 10 },
        });
        assert.equal(answer.status, 200);
        assert.equal(answer.body.scope, "crm:read");
        assert.equal(answer.body.requested_scope, "crm:read crm:write crm:delete");
        assert.equal(answer.body.max_tokens, 5);
        assert.equal(Date.parse(answer.body.expires_at) - Date.parse(approval.created_at), 600_000);
        assert.deepEqual(answer.body.rate_limit, { per_second: 0.5, burst: 10 });
      });

      test("without a requested rate limit, any rate limit narrows", async () => {
        const approval = await pending();
        const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, alice, {
          rate_limit: { per_second: 100, burst: 100 },
        });
        assert.equal(answer.status, 200);
        assert.deepEqual(answer.body.rate_limit, { per_second: 100, burst: 100 });
      });

      test("widening anything: 400, and the approval stays pending", async () => {
        const approval = await pending({
          scope: "crm:read",
          max_tokens: 5,
          ttl_seconds: 600,
          rate_limit: { per_second: 1, burst: 2 },
        });
        const cases: [Record<string, unknown>, string, string][] = [
          [
            { scope: "crm:read crm:write" },
            "invalid_scope",
            'scope: may only narrow the requested scope "crm:read"; "crm:write" was not requested',
          ],
          [{ scope: " " }, "invalid_scope", "scope: names no scope"],
          [{ max_tokens: 6 }, "invalid_request", "max_tokens: may only narrow the requested 5"],
          [
            { ttl_seconds: 601 },
            "invalid_request",
            "ttl_seconds: may only shorten the requested 600 seconds (measured from creation)",
          ],
          [
            { rate_limit: { per_second: 2, burst: 2 } },
            "invalid_request",
            "rate_limit: may only narrow the requested per_second 1 and burst 2",
          ],
          [
            { rate_limit: { per_second: 1, burst: 3 } },
            "invalid_request",
            "rate_limit: may only narrow the requested per_second 1 and burst 2",
          ],
          [{ max_tokens: 0 }, "invalid_request", "max_tokens: Too small: expected number to be >=1"],
        ];
        for (const [body, error, description] of cases) {
          assertError(
            await api("POST", `/approvals/${approval.id}/approve`, alice, body),
            400,
            error,
            description,
          );
        }
        assert.equal(
          (await api<ApprovalJson>("GET", `/approvals/${approval.id}`, alice)).body.status,
          "pending",
        );
        // Each refusal is counted, under the approval and alice, in one row per kind and 10-second window.
        const refused = await sts.app.services.db
          .selectFrom("audit_events")
          .select(["reason", "actor", "occurrences"])
          .where("approval_id", "=", approval.id)
          .where("outcome", "=", "refused")
          .execute();
        const counts: Record<string, number> = {};
        for (const row of refused) {
          assert.equal(row.actor, "alice");
          counts[row.reason ?? ""] = (counts[row.reason ?? ""] ?? 0) + Number(row.occurrences);
        }
        // The body that fails validation (max_tokens 0) is refused before the approval is read: not under it.
        assert.deepEqual(counts, { not_narrowing: 5, scope_invalid: 1 });
      });

      test("a ttl_seconds that already ended: 400", async () => {
        const approval = await pending({ ttl_seconds: 3600 });
        await age(approval.id, 120);
        assertError(
          await api("POST", `/approvals/${approval.id}/approve`, alice, { ttl_seconds: 60 }),
          400,
          "invalid_request",
          "ttl_seconds: ends before now (it is measured from the approval's creation)",
        );
      });
    });

    describe("approver policy hook", () => {
      let server: import("node:http").Server;
      let base: string;
      const seen: ApprovalDecisionInput[] = [];
      before(async () => {
        const policy: ApproverPolicy = {
          async authorizeDecision(input) {
            seen.push(input);
            if (input.terms.scope.includes("crm:delete")) {
              return { allowed: false, policyId: "no-deletes", reason: "deletion needs two approvers" };
            }
            if (input.approver.subject === "broken") throw new Error("policy engine down");
            return { allowed: true };
          },
        };
        const koa = new Koa();
        koa.use(errorHandler(sts.app.logger, () => false));
        koa.use(approvalRoutes(sts.app.services, { policy }).routes());
        server = koa.listen(0, "127.0.0.1");
        await new Promise((resolve) => server.once("listening", resolve));
        base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      });
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));

      test("the policy sees the approver and the terms, and can forbid (403 access_denied naming it)", async () => {
        const approval = await pending({ scope: "crm:read crm:delete" });
        const refused = await call(base, "POST", `/approvals/${approval.id}/approve`, alice);
        assertError(
          refused,
          403,
          "access_denied",
          "policy no-deletes forbids this approval: deletion needs two approvers",
        );
        assert.equal(seen.at(-1)?.approver.subject, "alice");
        assert.equal(seen.at(-1)?.approval.id, approval.id);
        const narrowed = await call<ApprovalJson>(base, "POST", `/approvals/${approval.id}/approve`, alice, {
          scope: "crm:read",
        });
        assert.equal(narrowed.status, 200);
        assert.equal(narrowed.body.scope, "crm:read");
        assert.deepEqual(
          (await auditFor(approval.id)).map((e) => [e.event, e.outcome, e.reason]),
          [
            ["approval.requested", "granted", null],
            ["approval.approve", "refused", "policy_denied"],
            ["approval.approved", "granted", null],
          ],
        );
      });

      test("a failing policy fails closed", async () => {
        const approval = await pending();
        const broken = await sts.app.services.devIssuer!.mint({ sub: "broken", usage: "approver" });
        assertError(
          await call(base, "POST", `/approvals/${approval.id}/approve`, broken),
          403,
          "access_denied",
          "the approver policy could not be evaluated",
        );
        assert.equal(
          (await api<ApprovalJson>("GET", `/approvals/${approval.id}`, alice)).body.status,
          "pending",
        );
      });
    });

    test("revoking notifies countersign_revocations", {
      skip: engine !== "postgres" && "LISTEN needs a second connection (real Postgres)",
    }, async () => {
      const approval = await approved();
      const client = new pg.Client({ connectionString: sts.database.url });
      await client.connect();
      try {
        await client.query("listen countersign_revocations");
        const notified = new Promise<string | undefined>((resolve) =>
          client.once("notification", (n) => resolve(n.payload)),
        );
        assert.equal((await api("POST", `/approvals/${approval.id}/revoke`, alice)).status, 200);
        assert.equal(await notified, approval.id);
      } finally {
        await client.end();
      }
    });

    describe("countersign dev-token", () => {
      const cli = path.join(root, "bin/countersign.js");
      const env = () => {
        const { DATABASE_URL: _url, COUNTERSIGN_CONFIG: _config, ...rest } = process.env;
        const port = new URL(sts.url).port;
        return { ...rest, COUNTERSIGN_DATA_DIR: sts.dataDir, HOST: "127.0.0.1", PORT: port };
      };

      test("prints an approver token the running STS accepts", async () => {
        const { stdout } = await run(
          process.execPath,
          [cli, "dev-token", "--sub", "carol", "--usage", "approver"],
          { env: env(), timeout: 30_000 },
        );
        const token = stdout.trim();
        assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
        const approval = await pending();
        const answer = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, token);
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.approved_by, "carol");
      });

      test("--json and --ttl; a subject token is not an approver", async () => {
        const { stdout } = await run(
          process.execPath,
          [cli, "dev-token", "--sub", "dave", "--usage", "subject", "--ttl", "120", "--json"],
          { env: env(), timeout: 30_000 },
        );
        const out = JSON.parse(stdout) as Record<string, unknown>;
        assert.equal(out.sub, "dave");
        assert.equal(out.usage, "subject");
        assert.equal(out.expires_in, 120);
        assert.equal(out.issuer, `${sts.url}/dev`);
        assertError(
          await api("GET", "/approvals", out.token as string),
          401,
          "invalid_token",
          "the token was not issued for approver use",
        );
      });

      test("refused when dev_mode is false, and bad options are named", async () => {
        const dir = mkdtempSync(path.join(tmpdir(), "countersign-devtoken-"));
        const file = path.join(dir, "config.json");
        writeFileSync(file, JSON.stringify({ dev_mode: false }));
        try {
          await assert.rejects(
            run(process.execPath, [cli, "dev-token", "--sub", "alice", "--usage", "approver"], {
              env: { ...env(), COUNTERSIGN_CONFIG: file, COUNTERSIGN_DATA_DIR: dir },
              timeout: 30_000,
            }),
            (error: { code: number; stderr: string; stdout: string }) => {
              assert.equal(error.code, 1);
              assert.match(error.stderr, /dev-token is refused: dev_mode is false/);
              assert.equal(error.stdout, "");
              return true;
            },
          );
          await assert.rejects(
            run(process.execPath, [cli, "dev-token", "--sub", "alice", "--usage", "root"], {
              env: env(),
              timeout: 30_000,
            }),
            (error: { code: number; stderr: string }) => {
              assert.notEqual(error.code, 0);
              assert.match(error.stderr, /Allowed choices are approver, subject, actor/);
              return true;
            },
          );
          await assert.rejects(
            run(process.execPath, [cli, "dev-token", "--sub", "alice", "--usage", "actor", "--ttl", "0"], {
              env: env(),
              timeout: 30_000,
            }),
            (error: { stderr: string }) => /--ttl/.test(error.stderr),
          );
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    });

    test("a trusted issuer's approver must carry the approver claim", async () => {
      // A second app whose trusted issuer has static keys and approver_claim roles ∋ approver.
      const { privateKey, publicKey } = await generateKeyPair("ES256");
      const jwk = { ...(await exportJWK(publicKey)), kid: "idp-1", alg: "ES256" };
      const other = await startTestApp({
        engine,
        env: { COUNTERSIGN_KEK: randomBytes(32).toString("base64url") },
        config: {
          resources: [{ id: CRM, scopes: ["crm:read"] }],
          clients: [
            {
              client_id: "billing-agent",
              client_secret: TEST_SECRET,
              token_endpoint_auth_method: "client_secret_basic",
            },
          ],
          trusted_issuers: [
            {
              issuer: "https://down.example.test",
              jwks_uri: `http://127.0.0.1:${await freePort()}/jwks`,
              audience: "countersign",
              usage: ["approver"],
            },
            {
              issuer: "https://idp.example.test",
              jwks: { keys: [jwk] },
              audience: "countersign",
              usage: ["approver"],
              approver_claim: { name: "roles", value: "approver" },
            },
          ],
          dev_mode: false,
        },
      });
      try {
        const sign = (claims: Record<string, unknown>) =>
          new SignJWT(claims)
            .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
            .setIssuer("https://idp.example.test")
            .setSubject("erin@example.test")
            .setAudience("countersign")
            .setIssuedAt()
            .setExpirationTime("5m")
            .sign(privateKey);
        const withRole = await call<{ approvals: unknown[] }>(
          other.url,
          "GET",
          "/approvals",
          await sign({ roles: ["approver", "staff"] }),
        );
        assert.equal(withRole.status, 200);
        assert.deepEqual(withRole.body.approvals, []);
        // Authenticated but without the approver role: 403 insufficient_scope, not 401.
        const roleless = await call(other.url, "GET", "/approvals", await sign({ roles: ["staff"] }));
        assertError(
          roleless,
          403,
          "insufficient_scope",
          "the token's roles claim does not include approver: this account may not decide approvals",
        );
        assert.equal(
          roleless.headers.get("www-authenticate"),
          'Bearer realm="countersign", error="insufficient_scope", error_description="the token\'s roles claim does not include approver: this account may not decide approvals"',
        );
        const down = await new SignJWT({})
          .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
          .setIssuer("https://down.example.test")
          .setSubject("erin@example.test")
          .setAudience("countersign")
          .setExpirationTime("5m")
          .sign(privateKey);
        const unavailable = await call(other.url, "GET", "/approvals", down);
        assertError(
          unavailable,
          503,
          "temporarily_unavailable",
          "the approver token's issuer keys could not be fetched",
        );
        assert.equal(unavailable.headers.get("retry-after"), "5");
        const dev = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver" });
        assertError(
          await call(other.url, "GET", "/approvals", dev),
          401,
          "invalid_token",
          "the approver token's issuer is not trusted",
        );
      } finally {
        await other.stop();
      }
    });
  });
}
