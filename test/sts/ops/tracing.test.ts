import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { propagation, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { createVerifier } from "../../../gateway-verifier/src/index.js";
import { newApprovalId } from "../../../sts/src/approvals/model.js";
import { loadConfig } from "../../../sts/src/config/load.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

// What an operator's SDK does: a tracer provider and the W3C propagator, registered globally.
const exporter = new InMemorySpanExporter();
const tracerProvider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
trace.setGlobalTracerProvider(tracerProvider);
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

const CRM = "https://crm.example.test";
const WRONG_SECRET = "wrong-secret-Zq8vXk2LmN4pR7tY";

/** The finished spans, once exported (the processor exports asynchronously). */
async function finishedSpans(): Promise<ReadableSpan[]> {
  await tracerProvider.forceFlush();
  return exporter.getFinishedSpans();
}

/** The finished spans named `name` since `from` spans had finished. */
async function spansNamed(name: string, from: number): Promise<ReadableSpan[]> {
  await tracerProvider.forceFlush();
  return exporter
    .getFinishedSpans()
    .slice(from)
    .filter((span) => span.name === name);
}

/** A caller's W3C trace context: its `traceparent` header and the ids in it. */
function callerTrace() {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

for (const engine of testEngines()) {
  describe(`tracing on ${engine}`, () => {
    let sts: TestApp;
    /** Every token and secret the tests handled: no span attribute may contain one. */
    const secrets: string[] = [TEST_SECRET, WRONG_SECRET];

    before(async () => {
      sts = await startTestApp({
        engine,
        config: { ...baseConfig(), tracing: { trust_incoming_context: true } },
      });
    });
    after(() => sts.stop());

    async function approvalsToken(): Promise<string> {
      const { status, body } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(status, 200);
      secrets.push(body.access_token as string);
      return body.access_token as string;
    }

    async function exchangedToken(): Promise<string> {
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      secrets.push(subjectToken);
      const approvalId = await insertApproval(sts.handle.db);
      const { status, body } = await exchange(sts.url, {
        subject_token: subjectToken,
        scope: "crm:read",
        authorization_details: agentTask(approvalId),
      });
      assert.equal(status, 200, JSON.stringify(body));
      secrets.push(body.access_token as string);
      return body.access_token as string;
    }

    test("POST /token is one span, a child of the caller's traceparent (trust_incoming_context), with grant, client and outcome", async () => {
      const from = (await finishedSpans()).length;
      const caller = callerTrace();
      const { status, body } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials" },
        { authorization: basicAuth("billing-agent", TEST_SECRET), traceparent: caller.traceparent },
      );
      assert.equal(status, 200);
      secrets.push(body.access_token as string);
      const spans = await spansNamed("POST /token", from);
      assert.equal(spans.length, 1);
      const [span] = spans;
      assert.equal(span!.spanContext().traceId, caller.traceId);
      assert.equal(span!.parentSpanContext?.spanId, caller.spanId);
      assert.equal(span!.parentSpanContext?.isRemote, true);
      assert.equal(span!.kind, SpanKind.SERVER);
      assert.equal(span!.status.code, SpanStatusCode.UNSET);
      assert.deepEqual(span!.attributes, {
        "http.request.method": "POST",
        "http.route": "/token",
        "countersign.grant_type": "client_credentials",
        "countersign.outcome": "issued",
        "countersign.client_id": "billing-agent",
        "http.response.status_code": 200,
      });
    });

    test("a refused token exchange's span carries its error and reason code", async () => {
      const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      secrets.push(subjectToken);
      const from = (await finishedSpans()).length;
      const { status, body } = await exchange(sts.url, {
        subject_token: subjectToken,
        authorization_details: agentTask(newApprovalId()),
      });
      assert.equal(status, 400);
      assert.equal(body.error, "invalid_grant");
      const spans = await spansNamed("POST /token", from);
      assert.equal(spans.length, 1);
      // Without a traceparent the span starts a trace of its own.
      assert.equal(spans[0]!.parentSpanContext, undefined);
      assert.deepEqual(spans[0]!.attributes, {
        "http.request.method": "POST",
        "http.route": "/token",
        "countersign.grant_type": "token_exchange",
        "countersign.outcome": "refused",
        "countersign.client_id": "billing-agent",
        "error.type": "invalid_grant",
        "countersign.reason": "approval_not_found",
        "http.response.status_code": 400,
      });
    });

    test("a wrong client secret's span has reason client_auth_failed", async () => {
      const from = (await finishedSpans()).length;
      const { status } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials" },
        { authorization: basicAuth("billing-agent", WRONG_SECRET) },
      );
      assert.equal(status, 401);
      const spans = await spansNamed("POST /token", from);
      assert.equal(spans.length, 1);
      assert.deepEqual(spans[0]!.attributes, {
        "http.request.method": "POST",
        "http.route": "/token",
        "countersign.grant_type": "client_credentials",
        "countersign.outcome": "refused",
        "countersign.client_id": "billing-agent",
        "error.type": "invalid_client",
        "countersign.reason": "client_auth_failed",
        "http.response.status_code": 401,
      });
    });

    test("each approval API call is one span: route template, status, reason", async () => {
      const token = await approvalsToken();
      const caller = callerTrace();
      const from = (await finishedSpans()).length;
      const created = await fetch(`${sts.url}/approvals`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          traceparent: caller.traceparent,
        },
        body: JSON.stringify({ resource: CRM, scope: "crm:read", task: "read the March invoices" }),
      });
      assert.equal(created.status, 201);
      const { id } = (await created.json()) as { id: string };
      const refused = await fetch(`${sts.url}/approvals/${id}/approve`, { method: "POST" });
      assert.equal(refused.status, 401);

      const requested = await spansNamed("POST /approvals", from);
      assert.equal(requested.length, 1);
      assert.equal(requested[0]!.parentSpanContext?.spanId, caller.spanId);
      assert.equal(requested[0]!.spanContext().traceId, caller.traceId);
      assert.deepEqual(requested[0]!.attributes, {
        "http.request.method": "POST",
        "http.route": "/approvals",
        "countersign.outcome": "ok",
        "http.response.status_code": 201,
      });
      const approve = await spansNamed("POST /approvals/:id/approve", from);
      assert.equal(approve.length, 1);
      assert.equal(approve[0]!.status.code, SpanStatusCode.UNSET);
      assert.deepEqual(approve[0]!.attributes, {
        "http.request.method": "POST",
        "http.route": "/approvals/:id/approve",
        "countersign.outcome": "refused",
        "countersign.reason": "credentials_missing",
        "error.type": "invalid_request",
        "http.response.status_code": 401,
      });
    });

    test("GET /approvals/{id}/audit is one span like the other approval routes, refused or answered", async () => {
      const approver = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "approver" });
      secrets.push(approver);
      const token = await approvalsToken();
      const id = await insertApproval(sts.handle.db, { status: "pending" });
      const from = (await finishedSpans()).length;
      const byAgent = await fetch(`${sts.url}/approvals/${id}/audit`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(byAgent.status, 403);
      const trail = await fetch(`${sts.url}/approvals/${id}/audit`, {
        headers: { authorization: `Bearer ${approver}` },
      });
      assert.equal(trail.status, 200);

      const spans = await spansNamed("GET /approvals/:id/audit", from);
      assert.deepEqual(
        spans.map((span) => span.attributes),
        [
          {
            "http.request.method": "GET",
            "http.route": "/approvals/:id/audit",
            "countersign.outcome": "refused",
            "countersign.reason": "role_approver_required",
            "error.type": "insufficient_scope",
            "http.response.status_code": 403,
          },
          {
            "http.request.method": "GET",
            "http.route": "/approvals/:id/audit",
            "countersign.outcome": "ok",
            "http.response.status_code": 200,
          },
        ],
      );
    });

    test("the gateway verifier's verify() is one span with its outcome and reason", async () => {
      const token = await exchangedToken();
      const verifier = createVerifier({
        issuer: sts.url,
        audience: CRM,
        revocation: false,
        tracer: trace.getTracer("gateway-test"),
      });
      try {
        const from = (await finishedSpans()).length;
        const allowed = await verifier.verify({ authorization: `Bearer ${token}` });
        assert.equal(allowed.ok, true);
        const denied = await verifier.verify({ authorization: "Bearer not-a-jwt" });
        assert.equal(denied.ok, false);
        const spans = await spansNamed("countersign.verify", from);
        assert.deepEqual(
          spans.map((span) => span.attributes),
          [
            { "countersign.outcome": "allow" },
            {
              "countersign.outcome": "deny",
              "countersign.reason": "malformed_token",
              "error.type": "invalid_token",
              "http.response.status_code": 401,
            },
          ],
        );
        assert.deepEqual(
          spans.map((span) => span.instrumentationScope.name),
          ["gateway-test", "gateway-test"],
        );
      } finally {
        verifier.close();
      }
    });

    test("a verifier without a tracer makes no span; a tracer that throws changes no outcome", async () => {
      const token = await exchangedToken();
      const from = (await finishedSpans()).length;
      const untraced = createVerifier({ issuer: sts.url, audience: CRM, revocation: false });
      const broken = createVerifier({
        issuer: sts.url,
        audience: CRM,
        revocation: false,
        tracer: {
          startSpan: () => {
            throw new Error("the tracer broke");
          },
        },
      });
      try {
        assert.equal((await untraced.verify({ authorization: `Bearer ${token}` })).ok, true);
        assert.equal((await broken.verify({ authorization: `Bearer ${token}` })).ok, true);
        assert.equal((await spansNamed("countersign.verify", from)).length, 0);
      } finally {
        untraced.close();
        broken.close();
      }
      assert.throws(
        () => createVerifier({ issuer: sts.url, audience: CRM, tracer: {} as never }),
        /tracer: must be an OpenTelemetry Tracer \(with startSpan\)/,
      );
    });

    test("no span attribute holds a token or a secret", async () => {
      const spans = await finishedSpans();
      assert.ok(spans.length >= 8);
      assert.ok(secrets.length >= 6);
      for (const span of spans) {
        for (const [key, value] of Object.entries(span.attributes)) {
          const text = String(value);
          assert.ok(!/eyJ[\w-]+\.[\w-]+\./.test(text), `${span.name} ${key} looks like a JWT`);
          for (const secret of secrets) {
            assert.ok(!text.includes(secret), `${span.name} ${key} holds a token or secret`);
          }
        }
      }
    });
  });
}

describe("tracing without tracing.trust_incoming_context (the default)", () => {
  test("a caller's sampled traceparent is not the parent: each span starts its own trace, linked to the caller's", async () => {
    const sts = await startTestApp({ engine: "pglite" });
    try {
      const from = (await finishedSpans()).length;
      const caller = callerTrace();
      const issued = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET), traceparent: caller.traceparent },
      );
      assert.equal(issued.status, 200);
      const created = await fetch(`${sts.url}/approvals`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${issued.body.access_token as string}`,
          "content-type": "application/json",
          traceparent: caller.traceparent,
        },
        body: JSON.stringify({ resource: CRM, scope: "crm:read", task: "read the March invoices" }),
      });
      assert.equal(created.status, 201);

      const spans = [
        ...(await spansNamed("POST /token", from)),
        ...(await spansNamed("POST /approvals", from)),
      ];
      assert.equal(spans.length, 2);
      for (const span of spans) {
        assert.equal(span.parentSpanContext, undefined, span.name);
        assert.notEqual(span.spanContext().traceId, caller.traceId, span.name);
        assert.equal(span.kind, SpanKind.SERVER, span.name);
        assert.deepEqual(
          span.links.map((link) => [link.context.traceId, link.context.spanId, link.context.isRemote]),
          [[caller.traceId, caller.spanId, true]],
          span.name,
        );
      }
    } finally {
      await sts.stop();
    }
  });

  test("the config key defaults to false and takes only a boolean", () => {
    const defaults = loadConfig({}, {});
    assert.deepEqual(defaults.tracing, { trust_incoming_context: false });
    assert.throws(
      () => loadConfig({}, { tracing: { trust_incoming_context: "yes" } }),
      /tracing\.trust_incoming_context/,
    );
  });
});
