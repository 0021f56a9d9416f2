import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { CONSOLE_CSP } from "../../sts/src/console/routes.js";
import {
  baseConfig,
  basicAuth,
  type LogCapture,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../helpers/app.js";
import { agentTask, exchange } from "../helpers/exchange.js";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOTS = path.join(process.cwd(), "test-results", "console");
const CRM = "https://crm.example.test";
/** Upper bound for any wait on the page, in milliseconds (a bound, not a timing assertion). */
const WAIT_MS = 20_000;

/** The approval API credential of `billing-agent` (client_credentials, scope approvals:request). */
async function agentToken(url: string): Promise<string> {
  const answer = await postForm(
    `${url}/token`,
    { grant_type: "client_credentials", scope: "approvals:request" },
    { authorization: basicAuth("billing-agent", TEST_SECRET) },
  );
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.access_token as string;
}

async function requestApproval(url: string, token: string, body: Record<string, unknown>) {
  const response = await fetch(`${url}/approvals`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = (await response.json()) as Record<string, unknown>;
  assert.equal(response.status, 201, JSON.stringify(json));
  return json;
}

async function getJson(url: string, token?: string) {
  const response = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** The facts of a card as one line: "Agent billing-agent Resource https://… …". */
async function factsOf(card: Locator): Promise<string> {
  const parts = await card.locator("dl.facts > dt, dl.facts > dd").allTextContents();
  return parts.join(" ").replace(/\s+/g, " ").trim();
}

/** The card of the approval `id` in one of the page's lists. */
function card(page: Page, list: "pending" | "approved" | "closed", id: string): Locator {
  return page.locator(`#${list}-list > li[data-approval-id="${id}"]`);
}

/**
 * Browser-side (a function's source, run by `page.evaluate`): the characters of `element` whose visual
 * order differs from their stored order. Walks its text in logical order and measures each visible
 * character; on one line each must stand right of the one before (the text tested is left to right).
 * Returns the offending pairs, e.g. `["d>o"]`; empty when the text reads as stored.
 */
const VISUAL_ORDER_BREAKS = `(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const boxes = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.data.length; i++) {
      if (/\\s/.test(node.data[i])) continue;
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getBoundingClientRect();
      if (rect.width === 0) continue;
      boxes.push({ char: node.data[i], left: rect.left, top: rect.top, bottom: rect.bottom });
    }
  }
  const breaks = [];
  for (let k = 1; k < boxes.length; k++) {
    const a = boxes[k - 1];
    const b = boxes[k];
    const nextLine = b.top >= a.bottom - 2;
    if (!nextLine && b.left <= a.left) breaks.push(a.char + ">" + b.char);
  }
  return boxes.length === 0 ? ["no visible text"] : breaks;
}`;

/** Browser-side: the left edge of the first occurrence of `needle` (inside one text node) in `element`. */
const LEFT_OF = `(element, needle) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + needle.length);
    return range.getBoundingClientRect().left;
  }
  return null;
}`;

/** Browser-side: `unicode-bidi`, `direction` and `background-color` as computed, and the `dir` attribute. */
const BIDI_STYLE = `(element) => {
  const style = getComputedStyle(element);
  return {
    dir: element.getAttribute("dir"),
    unicodeBidi: style.unicodeBidi,
    direction: style.direction,
    background: style.backgroundColor,
  };
}`;

/** Runs the browser-side function `source` on the first element matching `selector`, with `args`. */
function onElement<T>(page: Page, source: string, selector: string, ...args: unknown[]): Promise<T> {
  const argList = args.map((arg) => JSON.stringify(arg)).join(", ");
  return page.evaluate(
    `(${source})(document.querySelector(${JSON.stringify(selector)})${argList ? `, ${argList}` : ""})`,
  ) as Promise<T>;
}

describe("approval console: HTTP", () => {
  let sts: TestApp;
  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
  });
  after(async () => {
    await sts.stop();
  });

  test("GET /console serves the page and its modules with strict security headers", async () => {
    const page = await fetch(`${sts.url}/console`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.equal(page.headers.get("content-security-policy"), CONSOLE_CSP);
    assert.match(CONSOLE_CSP, /default-src 'self'; script-src 'self'; style-src 'self'/);
    assert.match(CONSOLE_CSP, /frame-ancestors 'none'/);
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    assert.equal(page.headers.get("referrer-policy"), "no-referrer");
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    const html = await page.text();
    assert.match(html, /<meta name="countersign-dev-mode" content="true"/);
    // No inline script or style, nothing from another origin.
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/);
    assert.doesNotMatch(html, /<style|style="/);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);

    for (const [name, type] of [
      ["console.js", /^text\/javascript/],
      ["api.js", /^text\/javascript/],
      ["view.js", /^text\/javascript/],
      ["console.css", /^text\/css/],
    ] as const) {
      const asset = await fetch(`${sts.url}/console/assets/${name}`);
      assert.equal(asset.status, 200, name);
      assert.match(asset.headers.get("content-type") ?? "", type);
      assert.equal(asset.headers.get("content-security-policy"), CONSOLE_CSP);
      assert.equal(asset.headers.get("x-content-type-options"), "nosniff");
      const text = await asset.text();
      assert.doesNotMatch(
        text,
        /\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|localStorage\.|document\.cookie/,
        name,
      );
    }
    assert.equal((await fetch(`${sts.url}/console/assets/..%2Fapp.ts`)).status, 404);
    assert.equal((await fetch(`${sts.url}/console/assets/secret.js`)).status, 404);
    const slash = await fetch(`${sts.url}/console/`, { redirect: "manual" });
    assert.equal(slash.status, 308);
  });

  test("POST /console/dev-token mints a short-lived approver token in dev mode, JSON only", async () => {
    const minted = await fetch(`${sts.url}/console/dev-token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sub: "carol" }),
    });
    assert.equal(minted.status, 200);
    assert.equal(minted.headers.get("cache-control"), "no-store");
    const body = (await minted.json()) as { access_token: string; expires_in: number; token_type: string };
    assert.equal(body.token_type, "Bearer");
    assert.equal(body.expires_in, 900);
    const listed = await getJson(`${sts.url}/approvals?status=pending`, body.access_token);
    assert.equal(listed.status, 200);

    // A cross-site form post (text/plain) is refused; so are missing and odd names.
    const form = await fetch(`${sts.url}/console/dev-token`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify({ sub: "carol" }),
    });
    assert.equal(form.status, 415);
    for (const bad of [{}, { sub: "" }, { sub: "a b" }, { sub: "carol", usage: "subject" }]) {
      const refused = await fetch(`${sts.url}/console/dev-token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(bad),
      });
      assert.equal(refused.status, 400, JSON.stringify(bad));
      assert.equal(((await refused.json()) as { error: string }).error, "invalid_request");
    }
  });

  test("GET /approvals/{id}/audit: approvers only, 404 for unknown ids, no details", async () => {
    const token = await agentToken(sts.url);
    const approval = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:read",
      task: "audit me",
    });
    const id = approval.id as string;
    const approver = await sts.app.services.devIssuer!.mint({ sub: "carol", usage: "approver" });

    const none = await getJson(`${sts.url}/approvals/${id}/audit`);
    assert.equal(none.status, 401);
    assert.equal(none.body.error, "invalid_request");
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer realm="countersign"/);

    const byAgent = await getJson(`${sts.url}/approvals/${id}/audit`, token);
    assert.equal(byAgent.status, 403);
    assert.equal(byAgent.body.error, "insufficient_scope");

    const missing = await getJson(`${sts.url}/approvals/apr_AAAAAAAAAAAAAAAAAAAAAA/audit`, approver);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error, "not_found");
    assert.equal((await getJson(`${sts.url}/approvals/nope/audit`, approver)).status, 404);

    const trail = await getJson(`${sts.url}/approvals/${id}/audit`, approver);
    assert.equal(trail.status, 200);
    assert.equal(trail.headers.get("cache-control"), "no-store");
    assert.equal(trail.body.truncated, false);
    assert.equal(trail.body.events.length, 1);
    const [event] = trail.body.events;
    assert.deepEqual(Object.keys(event).sort(), ["actor", "at", "event", "outcome", "reason"]);
    assert.equal(event.event, "approval.requested");
    assert.equal(event.outcome, "granted");
    assert.equal(event.actor, "billing-agent");
    assert.equal(event.reason, null);
    assert.ok(!Number.isNaN(Date.parse(event.at)));
  });
});

/**
 * POSTs `{"sub": "carol"}` to `/console/dev-token` with the given `Host` header (fetch cannot set it),
 * from `localAddress` when given (the address the STS sees as the peer), with `extraHeaders`.
 */
function devTokenWithHost(
  base: string,
  host: string,
  localAddress?: string,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const url = new URL("/console/dev-token", base);
  const body = JSON.stringify({ sub: "carol" });
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        hostname: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        ...(localAddress ? { localAddress } : {}),
        headers: {
          ...extraHeaders,
          host,
          "content-type": "application/json",
          "content-length": String(Buffer.byteLength(body)),
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>,
          }),
        );
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

/** The log lines of `logs` about refused development tokens. */
function hostRefusals(logs: LogCapture): Record<string, unknown>[] {
  return logs.lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.event === "console.dev_token" && line.reason === "host_not_allowed");
}

describe("approval console: dev-token answers only loopback and issuer Host names (DNS rebinding)", () => {
  const DESCRIPTION =
    "dev-token: the Host header must name 127.0.0.1, [::1], localhost or the issuer's host and port";

  test("a forged Host (a rebound name, the issuer's name on another port) is 403 access_denied, logged", async () => {
    const sts = await startTestApp({
      engine: "pglite",
      config: { ...baseConfig(), issuer: "https://countersign.dev.test:8443" },
    });
    try {
      const port = new URL(sts.url).port;
      for (const host of [
        `127.0.0.1:${port}`,
        "127.0.0.1",
        `localhost:${port}`,
        "LOCALHOST:1",
        `[::1]:${port}`,
        "countersign.dev.test:8443",
        "COUNTERSIGN.dev.test:8443",
      ]) {
        const minted = await devTokenWithHost(sts.url, host);
        assert.equal(minted.status, 200, `${host}: ${JSON.stringify(minted.body)}`);
        assert.equal(minted.body.token_type, "Bearer");
      }
      assert.deepEqual(hostRefusals(sts.logs), []);

      const forged = [
        `evil.example:${port}`,
        "evil.example",
        "countersign.dev.test",
        "countersign.dev.test:443",
        `127.0.0.1.evil.example:${port}`,
        `localhost.evil.example:${port}`,
        `evil.example@127.0.0.1:${port}`,
        `127.0.0.1:${port}/x`,
        "[::2]",
      ];
      for (const host of forged) {
        const refused = await devTokenWithHost(sts.url, host);
        assert.equal(refused.status, 403, `${host}: ${JSON.stringify(refused.body)}`);
        assert.deepEqual(refused.body, { error: "access_denied", error_description: DESCRIPTION }, host);
      }

      const logged = hostRefusals(sts.logs);
      assert.deepEqual(
        logged.map((line) => line.host),
        forged,
      );
      assert.ok(logged.every((line) => line.level === 40));
    } finally {
      await sts.stop();
    }
  });
});

/** An IPv4 address of this machine outside loopback, if it has one. */
const NON_LOOPBACK_IPV4 = Object.values(networkInterfaces())
  .flat()
  .find((entry) => entry !== undefined && entry.family === "IPv4" && !entry.internal)?.address;

describe("approval console: dev-token answers only loopback peers", () => {
  test("a peer outside loopback is 403 access_denied, logged with its address, whatever X-Forwarded-For says", {
    skip: NON_LOOPBACK_IPV4 === undefined && "this machine has no non-loopback IPv4 address",
  }, async () => {
    // The STS listens on 127.0.0.1 only; the request leaves from the machine's other address, so
    // the socket's remote address is not loopback although the Host header names 127.0.0.1.
    const sts = await startTestApp({ engine: "pglite" });
    try {
      const port = new URL(sts.url).port;
      const refused = await devTokenWithHost(sts.url, `127.0.0.1:${port}`, NON_LOOPBACK_IPV4, {
        "x-forwarded-for": "127.0.0.1",
        forwarded: "for=127.0.0.1",
      });
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, {
        error: "access_denied",
        error_description:
          "dev-token: only a loopback peer (127.0.0.0/8 or ::1) may ask for a development token; run it on the STS's machine",
      });
      const logged = sts.logs.lines
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.event === "console.dev_token" && line.reason === "peer_not_loopback");
      assert.deepEqual(
        logged.map((line) => [line.level, line.peer]),
        [[40, NON_LOOPBACK_IPV4]],
      );
      const minted = await devTokenWithHost(sts.url, `127.0.0.1:${port}`);
      assert.equal(minted.status, 200);
    } finally {
      await sts.stop();
    }
  });
});

describe("approval console: without dev mode", () => {
  test("POST /console/dev-token does not exist (404) and the page offers no dev sign-in", async () => {
    const sts = await startTestApp({ engine: "pglite", config: { ...baseConfig(), dev_mode: false } });
    try {
      const refused = await fetch(`${sts.url}/console/dev-token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sub: "carol" }),
      });
      assert.equal(refused.status, 404);
      const html = await (await fetch(`${sts.url}/console`)).text();
      assert.match(html, /<meta name="countersign-dev-mode" content="false"/);
    } finally {
      await sts.stop();
    }
  });
});

describe("approval console in headless Chromium", {
  skip: existsSync(CHROMIUM) ? false : "chromium not installed",
}, () => {
  let sts: TestApp;
  let context: BrowserContext;
  let profile: string;
  const consoleErrors: string[] = [];

  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    sts = await startTestApp({ engine: "pglite" });
    profile = mkdtempSync(path.join(tmpdir(), "countersign-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 900 },
    });
    context.setDefaultTimeout(WAIT_MS);
  });

  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await sts?.stop();
  });

  test("sign in, a request appears live, narrow and approve, exchange, audit, revoke, exchange refused", async () => {
    const page = await context.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(error.message));

    // 1. Sign in as a development approver.
    await page.goto(`${sts.url}/console`);
    await page.getByRole("heading", { name: "Sign in to approve agent tasks" }).waitFor();
    await shot(page, "01-sign-in");
    await page.getByLabel("Approver name").fill("carol");
    await page.getByRole("button", { name: "Sign in as dev approver" }).click();
    await page.getByRole("heading", { name: /Pending requests/ }).waitFor();
    assert.equal(await page.locator("#who").textContent(), "carol");
    await page.getByText("No pending requests.").waitFor();
    // The token is in sessionStorage, not localStorage, not a cookie.
    const storage = (await page.evaluate(
      '({ session: sessionStorage.getItem("countersign.approver_token"), local: localStorage.length, cookie: document.cookie })',
    )) as { session: string | null; local: number; cookie: string };
    assert.match(storage.session ?? "", /^ey/);
    assert.equal(storage.local, 0);
    assert.equal(storage.cookie, "");
    assert.equal((await context.cookies()).length, 0);
    await shot(page, "02-signed-in-empty");

    // 2. The agent asks; the request appears without a reload (polling).
    const token = await agentToken(sts.url);
    const task = 'Reconcile the <b>March</b> invoices <img src=x onerror="alert(1)">';
    const requested = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:read crm:write",
      task,
      max_tokens: 5,
      subject: "alice",
      rate_limit: { per_second: 5, burst: 10 },
    });
    const id = requested.id as string;
    const pending = card(page, "pending", id);
    await pending.waitFor();
    // Rendered as text: no markup from the agent becomes an element.
    assert.equal(await pending.getByRole("heading", { level: 3 }).textContent(), task);
    assert.equal(await pending.locator("h3 b, h3 img").count(), 0);
    await page.locator("#announcer", { hasText: "New request from billing-agent" }).waitFor();
    assert.equal(await page.locator("#pending-count").textContent(), "1");
    const facts = await factsOf(pending);
    assert.match(facts, /Agent billing-agent/);
    assert.match(facts, /Resource https:\/\/crm\.example\.test/);
    assert.match(facts, /crm:read crm:write/);
    assert.match(facts, /On behalf of alice/);
    assert.match(facts, /0 of 5 tokens issued/);
    assert.match(facts, /5 per second, burst 10/);
    await shot(page, "03-pending-request");

    // 3. Narrow: drop crm:write, budget 3, a tighter burst; approve.
    await pending.getByRole("checkbox", { name: "crm:write" }).uncheck();
    await pending.getByLabel("Token budget").fill("3");
    await pending.getByLabel("Burst").fill("4");
    // A widening value is caught on the page before it reaches the API.
    await pending.getByLabel("Lifetime (seconds from the request)").fill("999999");
    await pending.getByRole("button", { name: "Approve" }).click();
    await pending.getByText("The lifetime must be a whole number of seconds from 1 to 3600.").waitFor();
    assert.equal(
      await pending.getByLabel("Lifetime (seconds from the request)").getAttribute("aria-invalid"),
      "true",
    );
    await pending.getByLabel("Lifetime (seconds from the request)").fill("1800");
    await shot(page, "04-narrowing");
    await pending.getByRole("button", { name: "Approve" }).click();
    const approved = card(page, "approved", id);
    await approved.waitFor();
    await pending.waitFor({ state: "detached" });
    const approvedFacts = await factsOf(approved);
    assert.match(approvedFacts, /Scopes granted crm:read asked for crm:read crm:write/);
    assert.match(approvedFacts, /0 of 3 tokens issued/);
    assert.match(approvedFacts, /5 per second, burst 4/);
    assert.match(approvedFacts, /Approved by carol/);

    const approverToken = await sts.app.services.devIssuer!.mint({ sub: "carol", usage: "approver" });
    const stored = await getJson(`${sts.url}/approvals/${id}`, approverToken);
    assert.equal(stored.body.status, "approved");
    assert.equal(stored.body.scope, "crm:read");
    assert.equal(stored.body.max_tokens, 3);
    assert.deepEqual(stored.body.rate_limit, { per_second: 5, burst: 4 });
    assert.equal(Date.parse(stored.body.expires_at) - Date.parse(stored.body.created_at), 1_800_000);

    // 4. The agent's exchange succeeds, within the narrowed scope only.
    const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
    const wide = await exchange(sts.url, {
      subject_token: subjectToken,
      authorization_details: agentTask(id),
      scope: "crm:write",
    });
    assert.equal(wide.status, 400);
    assert.equal(wide.body.error, "invalid_scope");
    const granted = await exchange(sts.url, {
      subject_token: subjectToken,
      authorization_details: agentTask(id),
      scope: "crm:read",
    });
    assert.equal(granted.status, 200, JSON.stringify(granted.body));
    assert.equal(granted.body.scope, "crm:read");
    await approved.getByText("1 of 3 tokens issued").waitFor();

    // 5. The audit trail, on the page.
    await approved.getByRole("button", { name: "Show audit trail" }).click();
    const trail = approved.getByRole("table", { name: "Audit trail" });
    await trail.getByRole("cell", { name: "token_exchange" }).first().waitFor();
    const rows = await trail.locator("tbody tr").allInnerTexts();
    const events = rows.map((row) => row.split("\t")[1]);
    assert.deepEqual(events.slice(0, 2), ["approval.requested", "approval.approved"]);
    assert.ok(events.includes("token_exchange"), events.join(","));
    assert.ok(
      rows.some((row) => /approval\.approved\tgranted\t—\tcarol/.test(row)),
      rows.join("\n"),
    );
    assert.equal(
      await approved.getByRole("button", { name: "Hide audit trail" }).getAttribute("aria-expanded"),
      "true",
    );
    await shot(page, "05-approved-with-audit");

    // 6. Revoke from the page; the card moves to the closed list.
    await approved.getByLabel("Reason to revoke (optional)").fill("the invoices are done");
    await approved.getByRole("button", { name: "Revoke" }).click();
    const closed = card(page, "closed", id);
    await closed.waitFor();
    await closed.locator(".badge", { hasText: "revoked" }).waitFor();
    assert.match(await factsOf(closed), /Reason the invoices are done/);
    await page.locator("#announcer", { hasText: "Revoked" }).waitFor();
    await shot(page, "06-revoked");

    // 7. The next exchange is refused.
    const refused = await exchange(sts.url, {
      subject_token: subjectToken,
      authorization_details: agentTask(id),
      scope: "crm:read",
    });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, "invalid_grant");
    assert.equal(refused.body.error_description, "the approval was revoked");

    // 8. Deny works too, and the keyboard reaches every control (focus is visible).
    const second = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:delete",
      task: "Delete stale leads",
    });
    const secondCard = card(page, "pending", second.id as string);
    await secondCard.waitFor();
    await secondCard.getByLabel("Reason to deny (optional)").focus();
    await page.keyboard.type("too broad");
    await page.keyboard.press("Tab");
    const focused = page.locator(":focus");
    assert.equal(await focused.textContent(), "Deny");
    const outline = await focused.evaluate(
      (element) =>
        (
          globalThis as unknown as { getComputedStyle(node: unknown): { outlineStyle: string } }
        ).getComputedStyle(element).outlineStyle,
    );
    assert.equal(outline, "solid");
    await page.keyboard.press("Enter");
    await card(page, "closed", second.id as string)
      .locator(".badge", { hasText: "denied" })
      .waitFor();
    assert.equal(await page.locator("#pending-count").textContent(), "0");
    await shot(page, "07-denied");

    // 9. A reload keeps the session (sessionStorage); signing out forgets it.
    await page.reload();
    await page.getByRole("heading", { name: /Pending requests/ }).waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to approve agent tasks" }).waitFor();
    assert.equal(await page.evaluate("sessionStorage.length"), 0);

    // 10. A bad token is refused with the server's reason.
    await page.getByLabel("Approver token (JWT)").fill("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
    await page.getByRole("button", { name: "Sign in with token" }).click();
    await page.locator("#sign-in-error", { hasText: "Sign-in failed" }).waitFor();
    await shot(page, "08-bad-token");

    // Only the expected 401 from the bad token reached the browser console.
    assert.deepEqual(
      consoleErrors.filter((message) => !/401/.test(message)),
      [],
      consoleErrors.join("\n"),
    );
  });

  test("a task with bidi overrides and zero-width characters: markers show them, every agent field is its own isolate, nothing reads reordered, and what is stored and approved is unchanged", async () => {
    const page = await context.newPage();
    await page.goto(`${sts.url}/console`);
    await page.getByLabel("Approver name").fill("erin");
    await page.getByRole("button", { name: "Sign in as dev approver" }).click();
    await page.getByRole("heading", { name: /Pending requests/ }).waitFor();

    // Trojan Source in a task: under U+202E "eteled ton od" displays as "do not delete"; zero-width
    // characters hide between letters; an unterminated U+2067 tries to reach the text after it.
    const task =
      "Read invoices, then \u202Eeteled ton od\u202C and \u200Bexport\u200D them\u2060\uFEFF \u2067tail";
    const shown =
      "Read invoices, then ⟨U+202E⟩eteled ton od⟨U+202C⟩ and ⟨U+200B⟩export⟨U+200D⟩ them⟨U+2060⟩⟨U+FEFF⟩ ⟨U+2067⟩tail";
    const args = {
      to: "finance@example.test",
      note: "\u202Eeteled\u202C",
      "\u05E9\u05DD": "\u05D3\u05D5\u05D3 42",
    };
    const requested = await requestApproval(sts.url, await agentToken(sts.url), {
      resource: CRM,
      scope: "crm:read",
      task,
      subject: "ali\u202Ece",
      call: { tool: "send_report", arguments: args },
      resources: ["file:///srv/invoices.csv"],
      prompts: ["summarise"],
    });
    const id = requested.id as string;
    // The API keeps the task and the arguments exactly as the agent sent them (refusing only NUL and
    // lone surrogates in a task): the console must show them, not rewrite them.
    assert.equal(requested.task, task);
    assert.deepEqual((requested.call as { arguments: unknown }).arguments, args);

    const pending = card(page, "pending", id);
    await pending.waitFor();
    const cardSelector = `#pending-list > li[data-approval-id="${id}"]`;
    const title = pending.getByRole("heading", { level: 3 });

    // 1. The hidden characters are visible markers, in their own style.
    assert.equal(await title.textContent(), shown);
    assert.deepEqual(await title.locator(".hidden-char").allTextContents(), [
      "⟨U+202E⟩",
      "⟨U+202C⟩",
      "⟨U+200B⟩",
      "⟨U+200D⟩",
      "⟨U+2060⟩",
      "⟨U+FEFF⟩",
      "⟨U+2067⟩",
    ]);
    const marker = await onElement<Record<string, string>>(
      page,
      BIDI_STYLE,
      `${cardSelector} h3 .hidden-char`,
    );
    assert.deepEqual(marker, {
      dir: "ltr",
      unicodeBidi: "isolate",
      direction: "ltr",
      background: "rgb(251, 230, 228)",
    });

    // 2. Every agent field is its own isolate, its direction from its own text.
    for (const selector of [
      `${cardSelector} h3`,
      `${cardSelector} dl.facts code`,
      `${cardSelector} pre.call-arguments .json-string`,
    ]) {
      const style = await onElement<Record<string, string>>(page, BIDI_STYLE, selector);
      assert.equal(style.dir, "auto", selector);
      assert.equal(style.unicodeBidi, "isolate", selector);
    }
    const isolated = await pending
      .locator("h3, dl.facts code, dl.facts li, pre.call-arguments .json-string")
      .evaluateAll((nodes) => nodes.filter((node) => node.getAttribute("dir") !== "auto").length);
    assert.equal(isolated, 0);
    assert.equal(await pending.locator("dl.facts code", { hasText: "ali" }).textContent(), "ali⟨U+202E⟩ce");
    // The MCP names the approval is limited to are listed too.
    const facts = await factsOf(pending);
    assert.match(facts, /Tools send_report/);
    assert.match(facts, /MCP resources file:\/\/\/srv\/invoices\.csv/);
    assert.match(facts, /Prompts summarise/);

    // 3. The task reads in the order it is stored: no character stands left of one before it.
    assert.deepEqual(await onElement(page, VISUAL_ORDER_BREAKS, `${cardSelector} h3`), []);
    // The arguments keep their JSON layout; each string is isolated, so the Hebrew key stays left of
    // its Hebrew value (without isolation the two trade places: "42 דוד" :"שם").
    const pre = pending.locator("pre.call-arguments");
    const answer = await getJson(
      `${sts.url}/approvals/${id}`,
      await sts.app.services.devIssuer!.mint({
        sub: "erin",
        usage: "approver",
      }),
    );
    const layout = JSON.stringify(answer.body.call.arguments, null, 2)
      .replace("\u202E", "⟨U+202E⟩")
      .replace("\u202C", "⟨U+202C⟩");
    assert.equal(await pre.textContent(), layout);
    const keyLeft = await onElement<number>(
      page,
      LEFT_OF,
      `${cardSelector} pre.call-arguments`,
      "\u05E9\u05DD",
    );
    const valueLeft = await onElement<number>(
      page,
      LEFT_OF,
      `${cardSelector} pre.call-arguments`,
      "\u05D3\u05D5\u05D3",
    );
    assert.ok(keyLeft < valueLeft, `key at ${keyLeft}, value at ${valueLeft}`);

    // 4. Nothing outside the card is reordered: the card's id, the next fact, the list's heading read
    // in order, and no hidden character of the task reached any text or attribute of the page (form
    // labels and announcements carry the markers too).
    for (const selector of [`${cardSelector} .card-id`, `${cardSelector} dl.facts dt`, "#pending-title"]) {
      assert.deepEqual(await onElement(page, VISUAL_ORDER_BREAKS, selector), [], selector);
    }
    await page.locator("#announcer", { hasText: `“${shown}”` }).waitFor();
    const raw = (await page.evaluate(`(() => {
      const hidden = /[\\u200B-\\u200F\\u202A-\\u202E\\u2060\\u2066-\\u2069\\uFEFF]/u;
      const found = [];
      const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
      for (let node = walker.currentNode; node; node = walker.nextNode()) {
        if (node.nodeType === Node.TEXT_NODE && hidden.test(node.data)) found.push(node.parentElement.tagName);
        if (node.nodeType === Node.ELEMENT_NODE)
          for (const attribute of node.attributes) if (hidden.test(attribute.value)) found.push(attribute.name);
      }
      return found;
    })()`)) as string[];
    assert.deepEqual(raw, []);
    assert.equal(await pending.locator("form.approve-form").getAttribute("aria-label"), `Approve ${shown}`);
    await shot(page, "09-bidi-task");

    // 5. A call approval's one tool is not offered for narrowing (the card shows the call); approving
    // from the console approves the approval as stored: the same task, the same call.
    assert.equal(await pending.locator('form.approve-form input[name="tools"]').count(), 0);
    await pending.getByRole("button", { name: "Approve" }).click();
    await card(page, "approved", id).waitFor();
    const approved = await getJson(
      `${sts.url}/approvals/${id}`,
      await sts.app.services.devIssuer!.mint({
        sub: "erin",
        usage: "approver",
      }),
    );
    assert.equal(approved.body.status, "approved");
    assert.equal(approved.body.task, task);
    assert.equal(approved.body.subject, "ali\u202Ece");
    assert.deepEqual(approved.body.call.arguments, args);
    assert.equal(
      approved.body.call.arguments_digest,
      (requested.call as { arguments_digest: string }).arguments_digest,
    );
    await page.close();
  });

  test("narrowing MCP tools: unchecking delete_all approves tools exactly [read_file]; an empty list is stopped on the page; an untouched approve keeps the requested tools", async () => {
    const page = await context.newPage();
    await page.goto(`${sts.url}/console`);
    await page.getByLabel("Approver name").fill("frank");
    await page.getByRole("button", { name: "Sign in as dev approver" }).click();
    await page.getByRole("heading", { name: /Pending requests/ }).waitFor();
    const token = await agentToken(sts.url);
    const narrowed = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:read",
      task: "Tidy the shared drive",
      tools: ["read_file", "delete_all"],
    });
    // A right-to-left name (names with invisible characters are refused by the API): its box is labelled
    // with the name as its own isolate, as the chips show it.
    const untouchedTools = ["read_file", "מחק_הכל"];
    const untouched = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:read",
      task: "Tidy the other drive",
      tools: untouchedTools,
    });
    const plain = await requestApproval(sts.url, token, {
      resource: CRM,
      scope: "crm:read",
      task: "Names no MCP lists",
    });
    const approver = await sts.app.services.devIssuer!.mint({ sub: "frank", usage: "approver" });

    // An approval naming no tools, resources or prompts gets the scope checkboxes only.
    const plainCard = card(page, "pending", plain.id as string);
    await plainCard.waitFor();
    assert.deepEqual(
      await plainCard.locator("form.approve-form fieldset.scope-set legend").allTextContents(),
      ["Scopes to grant"],
    );

    // One checkbox per requested tool, checked, labelled with the name as an agent-text isolate.
    const first = card(page, "pending", narrowed.id as string);
    await first.waitFor();
    const tools = first.getByRole("group", { name: "Tools to allow" });
    assert.deepEqual(await tools.locator("label").allTextContents(), ["read_file", "delete_all"]);
    assert.deepEqual(
      await tools
        .locator("label")
        .evaluateAll((labels) => labels.map((label) => [label.getAttribute("dir"), label.className])),
      [
        ["auto", "agent-text"],
        ["auto", "agent-text"],
      ],
    );
    assert.equal(await tools.getByRole("checkbox", { name: "read_file" }).isChecked(), true);
    assert.equal(await tools.getByRole("checkbox", { name: "delete_all" }).isChecked(), true);
    const second = card(page, "pending", untouched.id as string);
    await second.waitFor();
    const secondTools = second.getByRole("group", { name: "Tools to allow" });
    assert.deepEqual(await secondTools.locator("label").allTextContents(), ["read_file", "מחק_הכל"]);
    assert.deepEqual(
      await secondTools
        .locator("label")
        .evaluateAll((labels) => labels.map((label) => label.getAttribute("dir"))),
      ["auto", "auto"],
    );
    assert.equal(await secondTools.getByRole("checkbox", { name: "מחק_הכל" }).isChecked(), true);

    // Unchecking every tool would send an empty list (the API refuses one; no list means "all"):
    // the page says so, marks the first box, and nothing is approved.
    await tools.getByRole("checkbox", { name: "read_file" }).uncheck();
    await tools.getByRole("checkbox", { name: "delete_all" }).uncheck();
    await first.getByRole("button", { name: "Approve" }).click();
    await first.getByText("Choose at least one tool, or deny the request.").waitFor();
    assert.equal(
      await tools.getByRole("checkbox", { name: "read_file" }).getAttribute("aria-invalid"),
      "true",
    );
    const stillPending = await getJson(`${sts.url}/approvals/${narrowed.id}`, approver);
    assert.equal(stillPending.body.status, "pending");
    assert.deepEqual(stillPending.body.tools, ["read_file", "delete_all"]);

    // Keep read_file only, approve: the approval allows exactly read_file.
    await tools.getByRole("checkbox", { name: "read_file" }).check();
    await first.getByRole("button", { name: "Approve" }).click();
    const firstApproved = card(page, "approved", narrowed.id as string);
    await firstApproved.waitFor();
    assert.match(await factsOf(firstApproved), /Tools read_file$/);
    const stored = await getJson(`${sts.url}/approvals/${narrowed.id}`, approver);
    assert.equal(stored.body.status, "approved");
    assert.deepEqual(stored.body.tools, ["read_file"]);
    assert.equal(stored.body.resources, null);
    assert.equal(stored.body.prompts, null);

    // Approving untouched keeps the requested tools, exactly as stored; and the plain one keeps none.
    await second.getByRole("button", { name: "Approve" }).click();
    await card(page, "approved", untouched.id as string).waitFor();
    const storedUntouched = await getJson(`${sts.url}/approvals/${untouched.id}`, approver);
    assert.equal(storedUntouched.body.status, "approved");
    assert.deepEqual(storedUntouched.body.tools, untouchedTools);
    await plainCard.getByRole("button", { name: "Approve" }).click();
    await card(page, "approved", plain.id as string).waitFor();
    const storedPlain = await getJson(`${sts.url}/approvals/${plain.id}`, approver);
    assert.equal(storedPlain.body.status, "approved");
    assert.equal(storedPlain.body.tools, null);
    await shot(page, "10-narrowed-tools");
    await page.close();
  });

  test("one agent's flood does not hide another agent's request: it is second of 200, and the page says how the list is ordered", async () => {
    const page = await context.newPage();
    await page.goto(`${sts.url}/console`);
    await page.getByLabel("Approver name").fill("dave");
    await page.getByRole("button", { name: "Sign in as dev approver" }).click();
    await page.getByRole("heading", { name: /Pending requests/ }).waitFor();
    const quiet = await requestApproval(sts.url, await agentToken(sts.url), {
      resource: CRM,
      scope: "crm:read",
      task: "The legitimate request",
    });
    const flooder = await postForm(`${sts.url}/token`, {
      grant_type: "client_credentials",
      scope: "approvals:request",
      client_id: "post-agent",
      client_secret: TEST_SECRET,
    });
    assert.equal(flooder.status, 200, JSON.stringify(flooder.body));
    for (let sent = 0; sent < 210; sent += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          requestApproval(sts.url, flooder.body.access_token as string, {
            resource: CRM,
            scope: "crm:read",
            task: `junk ${sent + i}`,
          }),
        ),
      );
    }
    await page.locator("#pending-more", { hasText: "Showing 200" }).waitFor();
    assert.equal(await page.locator("#pending-count").textContent(), "200");
    assert.equal(
      await page.locator("#pending-more").textContent(),
      "Showing 200, each agent's newest first; decide these to see more.",
    );
    const ids = await page
      .locator("#pending-list > li")
      .evaluateAll((items) => items.map((item) => item.getAttribute("data-approval-id")));
    assert.equal(ids.length, 200);
    // Round 0: each agent's newest, newest first — the flood's newest, then the legitimate request.
    assert.equal(ids[1], quiet.id);
    await page.close();
  });
});
