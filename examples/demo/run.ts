/**
 * `npm run demo`: the whole Countersign story in one terminal.
 *
 * Starts the STS in-process on the embedded database (PGlite, in a temporary data directory) and two
 * small APIs behind the gateway verifier (a CRM and a billing API), then narrates: an agent asks for a
 * task, a human approves a narrower one, the agent exchanges and calls the API, and is then stopped
 * for each reason in turn — over scope, wrong service, stale token, budget used up, burst, revoked —
 * showing the gateway's (or the STS's) actual answer. Exits 0 when every step ends as expected, 1
 * otherwise. Everything listens on 127.0.0.1 on free ports and is removed at the end.
 */
import { randomBytes } from "node:crypto";
import { createVerifier, type Verifier } from "../../gateway-verifier/src/index.js";
import {
  createNarrator,
  type DemoOptions,
  type DemoSts,
  LogBuffer,
  runWhenMain,
  sleep,
  startDemoSts,
} from "../demo_harness.js";
import { type DemoApi, startDemoApi } from "./demo_api.js";

export type { DemoOptions };

const CRM = "https://crm.example.test";
const BILLING = "https://billing.example.test";
const AGENT = "billing-agent";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt";
/** The stricter gateway's token age limit on the export route, in seconds. */
const EXPORT_MAX_AGE_SECONDS = 2;

interface HttpAnswer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function request(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<HttpAnswer> {
  const response = await fetch(url, init);
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    body = { text };
  }
  return { status: response.status, headers: response.headers, body };
}

/** The unverified claims of a JWT (for narration only; the gateway verifies). */
function claimsOf(token: string): Record<string, unknown> {
  const payload = token.split(".")[1] ?? "";
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
}

/** Runs the demo; resolves with true when every step ended as expected. */
export async function runDemo(options: DemoOptions = {}): Promise<boolean> {
  const narrator = createNarrator(options);
  const { paint, line, say, step, expect } = narrator;
  /** Prints an HTTP answer: status, error, reason, description, and the headers that matter. */
  const show = (who: string, answer: HttpAnswer) => {
    const { error, reason, error_description: description } = answer.body;
    const parts = [`HTTP ${answer.status}`];
    if (typeof error === "string") parts.push(error);
    if (typeof reason === "string") parts.push(`reason=${reason}`);
    say(`${who} → ${parts.join(" ")}${typeof description === "string" ? ` — "${description}"` : ""}`);
    for (const header of ["www-authenticate", "retry-after"]) {
      const value = answer.headers.get(header);
      if (value) say(`    ${header}: ${value}`);
    }
  };
  const outcome = (answer: HttpAnswer) =>
    `HTTP ${answer.status} ${String(answer.body.error ?? "")} ${String(answer.body.reason ?? "")}`.trim();

  const logs = new LogBuffer();
  const secret = randomBytes(24).toString("base64url");
  let sts: DemoSts | undefined;
  const verifiers: Verifier[] = [];
  const apis: DemoApi[] = [];

  try {
    line(paint("1", "Countersign demo: a human approval boundary for an AI agent, enforced at the gateway"));
    line("Starting the STS on the embedded database, three gateway verifiers and two demo APIs…");
    // ---- set-up -------------------------------------------------------------------------------
    sts = await startDemoSts({
      dataDirPrefix: "countersign-demo-",
      logs,
      config: {
        resources: [
          { id: CRM, scopes: ["crm:read", "crm:write", "crm:delete"], max_ttl_seconds: 300 },
          { id: BILLING, scopes: ["billing:read", "billing:charge"], max_ttl_seconds: 300 },
        ],
        clients: [
          {
            client_id: AGENT,
            client_secret: secret,
            token_endpoint_auth_method: "client_secret_basic",
            client_name: "Billing agent",
          },
        ],
        trusted_issuers: [],
        dev_mode: true,
        revocations: { poll_interval_seconds: 0.25 },
      },
    });
    const { url: stsUrl, devIssuer, dataDir } = sts;

    const feed = { url: `${stsUrl}/revocations`, intervalMs: 250, stream: true };
    const crmGateway = createVerifier({ issuer: stsUrl, audience: CRM, revocation: feed });
    // Sensitive routes get a stricter gateway: only tokens minted in the last two seconds.
    const exportGateway = createVerifier({
      issuer: stsUrl,
      audience: CRM,
      revocation: feed,
      maxTokenAgeSeconds: EXPORT_MAX_AGE_SECONDS,
      clockToleranceSeconds: 0,
    });
    const billingGateway = createVerifier({ issuer: stsUrl, audience: BILLING, revocation: feed });
    verifiers.push(crmGateway, exportGateway, billingGateway);
    await Promise.all(verifiers.map((verifier) => verifier.ready()));

    const crmApi = await startDemoApi("CRM API", [
      {
        method: "GET",
        path: "/contacts",
        requiredScopes: ["crm:read"],
        verifier: crmGateway,
        answer: (subject) => ({ contacts: [{ name: "Ada Lovelace", owner: subject }], count: 1 }),
      },
      {
        method: "POST",
        path: "/contacts",
        requiredScopes: ["crm:write"],
        verifier: crmGateway,
        answer: () => ({ created: true }),
      },
      {
        method: "GET",
        path: "/contacts/export",
        requiredScopes: ["crm:read"],
        verifier: exportGateway,
        answer: () => ({ export: "contacts.csv", rows: 1 }),
      },
    ]);
    const billingApi = await startDemoApi("billing API", [
      {
        method: "GET",
        path: "/invoices",
        requiredScopes: ["billing:read"],
        verifier: billingGateway,
        answer: () => ({ invoices: [] }),
      },
    ]);
    apis.push(crmApi, billingApi);

    say(`STS (embedded Postgres in ${dataDir})     ${stsUrl}`);
    say(`approval console                       ${stsUrl}/console`);
    say(`CRM API behind the gateway verifier    ${crmApi.url}   (audience ${CRM})`);
    say(`billing API behind the gateway verifier ${billingApi.url}   (audience ${BILLING})`);
    say(
      `gateways learn revocations from         ${feed.url} (polling every ${feed.intervalMs} ms + /stream)`,
    );

    const basic = `Basic ${Buffer.from(`${AGENT}:${secret}`).toString("base64")}`;
    const form = (body: Record<string, string>) => ({
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: basic },
      body: new URLSearchParams(body).toString(),
    });
    const subjectToken = await devIssuer.mint({ sub: "alice", usage: "subject" });
    const approverToken = await devIssuer.mint({ sub: "carol", usage: "approver" });
    const exchange = (approvalId: string, scope: string) =>
      request(
        `${stsUrl}/token`,
        form({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: JWT_TOKEN_TYPE,
          resource: CRM,
          scope,
          authorization_details: JSON.stringify([{ type: "agent_task", approval_id: approvalId }]),
        }),
      );
    const call = (api: DemoApi, method: string, route: string, token: string) =>
      request(`${api.url}${route}`, { method, headers: { authorization: `Bearer ${token}` } });
    const json = (method: string, url: string, token: string, body?: unknown) =>
      request(url, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });

    // ---- 1. the agent asks ---------------------------------------------------------------------
    step("An agent asks for a task");
    const credential = await request(
      `${stsUrl}/token`,
      form({ grant_type: "client_credentials", scope: "approvals:request" }),
    );
    expect(
      "the agent gets an approval API credential (HTTP 200)",
      credential.status === 200,
      outcome(credential),
    );
    const agentToken = String(credential.body.access_token);
    const task = {
      resource: CRM,
      scope: "crm:read crm:write",
      task: "Reconcile the March invoices against the CRM contacts",
      subject: "alice",
      max_tokens: 5,
      rate_limit: { per_second: 2, burst: 5 },
    };
    say(`${AGENT} → POST /approvals ${JSON.stringify(task)}`);
    const asked = await json("POST", `${stsUrl}/approvals`, agentToken, task);
    const approvalId = String(asked.body.id);
    say(`STS → HTTP ${asked.status}, approval ${approvalId} is ${String(asked.body.status)}`);
    expect(
      "the request is pending (HTTP 201)",
      asked.status === 201 && asked.body.status === "pending",
      outcome(asked),
    );
    const early = await exchange(approvalId, "crm:read");
    show("agent exchanges before anyone decided", early);
    expect(
      "no token yet: HTTP 400 authorization_pending",
      early.status === 400 && early.body.error === "authorization_pending",
      outcome(early),
    );

    // ---- 2. a human approves less --------------------------------------------------------------
    step("A human approves a narrower task");
    say(`carol (an approver, e.g. in the console at ${stsUrl}/console) reads the task and grants less:`);
    const narrowed = { scope: "crm:read", max_tokens: 3, rate_limit: { per_second: 1, burst: 3 } };
    say(`carol → POST /approvals/${approvalId}/approve ${JSON.stringify(narrowed)}`);
    const approved = await json("POST", `${stsUrl}/approvals/${approvalId}/approve`, approverToken, narrowed);
    say(
      `STS → HTTP ${approved.status}: ${String(approved.body.status)}, scope "${String(approved.body.scope)}", ` +
        `budget ${String(approved.body.max_tokens)} tokens, rate ${JSON.stringify(approved.body.rate_limit)}`,
    );
    expect(
      "approved with crm:read only, 3 tokens, 1/s burst 3",
      approved.status === 200 && approved.body.scope === "crm:read" && approved.body.max_tokens === 3,
      outcome(approved),
    );

    // ---- 3. exchange and call ------------------------------------------------------------------
    step("The agent exchanges for a task token and calls the CRM API");
    const first = await exchange(approvalId, "crm:read");
    const token1 = String(first.body.access_token);
    expect("token exchange succeeds (HTTP 200)", first.status === 200, outcome(first));
    const claims = claimsOf(token1);
    say(
      `token: sub=${String(claims.sub)} aud=${String(claims.aud)} scope="${String(claims.scope)}" ` +
        `approval_id=${String(claims.approval_id)} expires in ${String(first.body.expires_in)} s`,
    );
    const read = await call(crmApi, "GET", "/contacts", token1);
    show("GET /contacts (needs crm:read)", read);
    expect("the gateway lets it through: HTTP 200", read.status === 200, outcome(read));

    // ---- 4. over scope -------------------------------------------------------------------------
    step("Stopped: over scope");
    const write1 = await call(crmApi, "POST", "/contacts", token1);
    show("POST /contacts (needs crm:write, which carol did not grant)", write1);
    expect(
      "HTTP 403 insufficient_scope",
      write1.status === 403 && write1.body.error === "insufficient_scope",
      outcome(write1),
    );
    const wider = await exchange(approvalId, "crm:read crm:write");
    show("and the STS will not mint a crm:write token either", wider);
    expect(
      "HTTP 400 invalid_scope",
      wider.status === 400 && wider.body.error === "invalid_scope",
      outcome(wider),
    );

    // ---- 5. wrong service ----------------------------------------------------------------------
    step("Stopped: wrong service");
    const billing = await call(billingApi, "GET", "/invoices", token1);
    show(`GET ${billingApi.name} /invoices with the CRM token (aud ${CRM})`, billing);
    expect(
      "HTTP 401 invalid_token, reason invalid_audience",
      billing.status === 401 && billing.body.reason === "invalid_audience",
      outcome(billing),
    );

    // ---- 6. stale token ------------------------------------------------------------------------
    step("Stopped: stale token");
    say(
      `The export route sits behind a stricter gateway (maxTokenAgeSeconds ${EXPORT_MAX_AGE_SECONDS}): ` +
        "a token minted longer ago is stale there, whatever its exp says.",
    );
    const iat = Number(claims.iat);
    for (let i = 0; i < 40 && Date.now() - iat * 1000 <= (EXPORT_MAX_AGE_SECONDS + 0.2) * 1000; i += 1) {
      await sleep(100);
    }
    say(
      `the first token is now ${((Date.now() - iat * 1000) / 1000).toFixed(1)} s old (exp still ` +
        `${Math.round(Number(claims.exp) - Date.now() / 1000)} s away)`,
    );
    const stale = await call(crmApi, "GET", "/contacts/export", token1);
    show("GET /contacts/export with it", stale);
    expect(
      "HTTP 401 invalid_token, reason token_stale",
      stale.status === 401 && stale.body.reason === "token_stale",
      outcome(stale),
    );
    const second = await exchange(approvalId, "crm:read");
    const token2 = String(second.body.access_token);
    const fresh = await call(crmApi, "GET", "/contacts/export", token2);
    show("a freshly exchanged token (2 of 3 in the budget) on the same route", fresh);
    expect("HTTP 200 with a fresh token", second.status === 200 && fresh.status === 200, outcome(fresh));

    // ---- 7. budget used up ---------------------------------------------------------------------
    step("Stopped: budget used up");
    const third = await exchange(approvalId, "crm:read");
    expect("token 3 of 3 is minted (HTTP 200)", third.status === 200, outcome(third));
    const token3 = String(third.body.access_token);
    const fourth = await exchange(approvalId, "crm:read");
    show("the agent asks for a fourth token", fourth);
    expect(
      "HTTP 400 invalid_grant: the budget is used up",
      fourth.status === 400 &&
        fourth.body.error === "invalid_grant" &&
        /used up/.test(String(fourth.body.error_description)),
      outcome(fourth),
    );
    const state = await json("GET", `${stsUrl}/approvals/${approvalId}`, agentToken);
    say(
      `approval ${approvalId}: ${String(state.body.tokens_issued)} of ${String(state.body.max_tokens)} tokens issued`,
    );

    // ---- 8. burst ------------------------------------------------------------------------------
    step("Stopped: burst");
    say("carol allowed 1 request per second with a burst of 3; the agent fires 6 requests at once:");
    const burst: HttpAnswer[] = [];
    for (let i = 0; i < 6; i += 1) burst.push(await call(crmApi, "GET", "/contacts", token3));
    say(`statuses: ${burst.map((answer) => answer.status).join(" ")}`);
    const limited = burst.find((answer) => answer.status === 429);
    if (limited) show("the first refused request", limited);
    const firstLimited = burst.findIndex((answer) => answer.status === 429);
    expect(
      "HTTP 200 up to the burst, then HTTP 429 rate_limited with Retry-After",
      limited !== undefined &&
        firstLimited > 0 &&
        burst.slice(0, firstLimited).every((answer) => answer.status === 200) &&
        limited.body.reason === "rate_limited" &&
        limited.headers.get("retry-after") !== null,
      burst.map(outcome).join(", "),
    );

    // ---- 9. revoked ----------------------------------------------------------------------------
    step("Stopped: revoked");
    const revoked = await json("POST", `${stsUrl}/approvals/${approvalId}/revoke`, approverToken, {
      reason: "the reconciliation is done",
    });
    say(
      `carol → POST /approvals/${approvalId}/revoke → HTTP ${revoked.status}, ${String(revoked.body.status)}`,
    );
    expect(
      "the approval is revoked (HTTP 200)",
      revoked.status === 200 && revoked.body.status === "revoked",
      outcome(revoked),
    );
    const afterRevoke = await exchange(approvalId, "crm:read");
    show("the agent asks for another token", afterRevoke);
    expect(
      'HTTP 400 invalid_grant "the approval was revoked"',
      afterRevoke.status === 400 &&
        afterRevoke.body.error === "invalid_grant" &&
        afterRevoke.body.error_description === "the approval was revoked",
      outcome(afterRevoke),
    );
    const revokedAt = Date.now();
    let gateway = await call(crmApi, "GET", "/contacts", token3);
    for (let i = 0; i < 50 && gateway.body.reason !== "approval_revoked"; i += 1) {
      await sleep(100);
      gateway = await call(crmApi, "GET", "/contacts", token3);
    }
    show("the token it already holds (still unexpired) at the CRM gateway", gateway);
    say(`the gateway learned the revocation from the feed within ${Date.now() - revokedAt} ms`);
    expect(
      "HTTP 401 invalid_token, reason approval_revoked",
      gateway.status === 401 && gateway.body.reason === "approval_revoked",
      outcome(gateway),
    );
  } catch (error) {
    narrator.fail(`the demo stopped: ${(error as Error).stack ?? String(error)}`);
  } finally {
    for (const verifier of verifiers) verifier.close();
    await Promise.all(apis.map((api) => api.stop()));
    await sts?.stop();
  }
  return narrator.finish(logs);
}

runWhenMain(import.meta.url, () => runDemo());
