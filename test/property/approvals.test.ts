import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type { ApprovalJson } from "../../sts/src/approvals/model.js";
import { basicAuth, postForm, startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { propertyRuns } from "./runs.js";

/**
 * Property: the approval API answers random bodies (unknown fields, wrong types, huge strings, nested
 * objects, non-JSON, wrong content types, wrong credentials) only with its documented statuses, never a
 * 5xx; and an approver's decision only ever narrows what the agent asked for.
 */

/** Any UTF-16 units (NUL, controls, lone surrogates) and the ones Postgres cannot store. */
const awkwardText = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 20 }),
  fc.constantFrom("a\u0000b", "\ud800", "x\udfff", "line\nbreak", "c1\u0085"),
);

const CRM = "https://crm.example.test";
const MAIL = "https://mail.example.test";
const SCOPES: Record<string, string[]> = {
  [CRM]: ["crm:read", "crm:write", "crm:delete"],
  [MAIL]: ["mail:send", "mail:read"],
};
const CREATE_STATUSES = [201, 400, 401, 403, 404, 409, 413, 415];
const DECISION_STATUSES = [200, 400, 401, 403, 404, 409, 413, 415];

/** Any JSON value, including deep nesting and odd strings. */
const anyJson = fc.jsonValue({ maxDepth: 4 });

/** A field value: usually plausible, sometimes anything at all. */
function field<T>(plausible: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof({ arbitrary: plausible, weight: 4 }, { arbitrary: anyJson, weight: 1 });
}

const rateLimitArb = fc.record(
  {
    per_second: field(
      fc.oneof(fc.integer({ min: -1, max: 100 }), fc.double({ min: 0, max: 100, noNaN: true })),
    ),
    burst: field(fc.integer({ min: -1, max: 200 })),
  },
  { requiredKeys: [] },
);

const createBodyArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.record(
          {
            resource: field(fc.constantFrom(CRM, CRM, MAIL, "https://evil.example.test", "")),
            scope: field(
              fc.oneof(
                fc
                  .subarray([...(SCOPES[CRM] ?? []), ...(SCOPES[MAIL] ?? [])], { minLength: 1 })
                  .map((s) => s.join(" ")),
                fc.string({ maxLength: 30 }),
                awkwardText,
              ),
            ),
            task: field(
              fc.oneof(
                fc.string({ minLength: 1, maxLength: 60 }),
                awkwardText,
                fc.constant("x".repeat(2001)),
              ),
            ),
            max_tokens: field(fc.oneof(fc.integer({ min: -5, max: 2_000_000 }), fc.double())),
            ttl_seconds: field(fc.integer({ min: -5, max: 3_000_000 })),
            subject: field(fc.oneof(fc.string({ maxLength: 40 }), awkwardText, fc.constant("s".repeat(300)))),
            rate_limit: field(rateLimitArb),
          },
          { requiredKeys: [] },
        ),
        fc.dictionary(fc.string({ maxLength: 12 }), anyJson, { maxKeys: 2 }),
        fc.boolean(),
      )
      .map(([body, extra, withExtra]) => (withExtra ? { ...extra, ...body } : body)),
  },
  { weight: 1, arbitrary: anyJson },
  { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 20 }), anyJson) },
);

/** How the body travels: JSON (mostly), raw text, or too large; and with which content type. */
const transportArb = fc.record({
  encoding: fc.constantFrom("json", "json", "json", "json", "raw", "huge", "empty"),
  contentType: fc.constantFrom(
    "application/json",
    "application/json",
    "application/json",
    "application/merge-patch+json",
    "application/json; charset=latin1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "none",
  ),
  raw: fc.string({ maxLength: 80 }),
  auth: fc.constantFrom("agent", "agent", "agent", "agent", "approver", "none", "garbage", "basic"),
});
type Transport = typeof transportArb extends fc.Arbitrary<infer T> ? T : never;

describe("property: the approval API never answers 5xx and never widens", () => {
  let sts: TestApp;
  let agent: string;
  let approver: string;
  const seen = new Map<string, number>();

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    const answer = await postForm(
      `${sts.url}/token`,
      { grant_type: "client_credentials", scope: "approvals:request" },
      { authorization: basicAuth("billing-agent", TEST_SECRET) },
    );
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    agent = String(answer.body.access_token);
    const dev = sts.app.services.devIssuer;
    assert.ok(dev);
    approver = await dev.mint({ sub: "alice", usage: "approver" });
  });
  after(async () => {
    console.log(`approvals property: answers by call and status ${JSON.stringify(Object.fromEntries(seen))}`);
    await sts?.stop();
  });

  async function send(
    method: string,
    pathname: string,
    body: unknown,
    transport: Transport,
  ): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
    const headers: Record<string, string> = {};
    if (transport.auth === "agent") headers.authorization = `Bearer ${agent}`;
    if (transport.auth === "approver") headers.authorization = `Bearer ${approver}`;
    if (transport.auth === "garbage") headers.authorization = `Bearer ${transport.raw || "x"}`.slice(0, 200);
    if (transport.auth === "basic") headers.authorization = basicAuth("billing-agent", TEST_SECRET);
    if (transport.contentType !== "none") headers["content-type"] = transport.contentType;
    let payload: string | undefined;
    if (transport.encoding === "json") payload = JSON.stringify(body);
    if (transport.encoding === "raw") payload = transport.raw;
    if (transport.encoding === "huge") payload = JSON.stringify({ task: "y".repeat(70 * 1024) });
    const response = await fetch(`${sts.url}${pathname}`, {
      method,
      headers: headers as Record<string, string>,
      ...(payload === undefined ? {} : { body: payload }),
    });
    const text = await response.text();
    const action = /^\/approvals\/[^/]+(\/[a-z]+)?$/.exec(pathname)?.[1] ?? "";
    const key = `${method} ${pathname === "/approvals" ? pathname : `/approvals/{id}${action}`} ${response.status}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
    assert.ok(response.status < 500, `${response.status} ${text}`);
    let json: Record<string, unknown> = {};
    if (text) json = JSON.parse(text) as Record<string, unknown>;
    if (response.status >= 400) {
      assert.equal(typeof json.error, "string", text);
      assert.equal(typeof json.error_description, "string", text);
      assert.doesNotMatch(text, /\n\s+at |node_modules/, "a stack trace leaked");
      if (response.status === 401)
        assert.ok(response.headers.get("www-authenticate"), "401 without a challenge");
    }
    return { status: response.status, json, text };
  }

  test("POST /approvals with random bodies: only 201/400/401/403/404/409/413/415, a 201 is well-formed", async () => {
    await fc.assert(
      fc.asyncProperty(createBodyArb, transportArb, async (body, transport) => {
        const answer = await send("POST", "/approvals", body, transport);
        assert.ok(CREATE_STATUSES.includes(answer.status), `${answer.status} ${answer.text}`);
        if (answer.status !== 201) return;
        const approval = answer.json as unknown as ApprovalJson;
        assert.equal(approval.status, "pending");
        assert.equal(approval.client_id, "billing-agent");
        const allowed = SCOPES[approval.resource];
        assert.ok(allowed, `created for an unconfigured resource ${approval.resource}`);
        for (const scope of approval.scope.split(" ")) assert.ok(allowed.includes(scope), scope);
        assert.ok(approval.max_tokens >= 1 && approval.max_tokens <= 1_000_000);
        assert.equal(approval.tokens_issued, 0);
      }),
      propertyRuns(150, 2000),
    );
  });

  test("POST /approvals, valid but for one text field of arbitrary UTF-16: 201 with the text kept exactly, or 400", async () => {
    const agentTransport: Transport = {
      encoding: "json",
      contentType: "application/json",
      raw: "",
      auth: "agent",
    };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("task", "subject", "scope"), awkwardText, async (name, value) => {
        const body = { resource: CRM, scope: "crm:read", task: "reconcile", [name]: value };
        const answer = await send("POST", "/approvals", body, agentTransport);
        assert.ok([201, 400].includes(answer.status), `${answer.status} ${answer.text}`);
        if (answer.status === 201)
          assert.equal(answer.json[name], value, "stored text differs from what was sent");
      }),
      propertyRuns(150, 1000),
    );
  });

  /** A pending approval asked with random (valid) terms. */
  const requestedArb = fc.record({
    resource: fc.constantFrom(CRM, MAIL),
    scopeCount: fc.integer({ min: 1, max: 3 }),
    max_tokens: fc.integer({ min: 1, max: 1000 }),
    ttl_seconds: fc.integer({ min: 60, max: 100_000 }),
    rate_limit: fc.option(
      fc.record({ per_second: fc.integer({ min: 1, max: 50 }), burst: fc.integer({ min: 1, max: 100 }) }),
    ),
  });

  /**
   * An approve body, as a recipe resolved against what was asked: mostly narrowing terms (which must
   * succeed or be refused for a stated reason), sometimes widening ones, sometimes anything.
   */
  const approveRecipeArb = fc.record({
    scope: fc.constantFrom(
      "omit",
      "omit",
      "omit",
      "subset",
      "subset",
      "subset",
      "superset",
      "other",
      "blank",
      "random",
    ),
    max_tokens: fc.constantFrom(
      "omit",
      "omit",
      "omit",
      "lower",
      "lower",
      "lower",
      "same",
      "higher",
      "zero",
      "random",
    ),
    ttl_seconds: fc.constantFrom(
      "omit",
      "omit",
      "omit",
      "shorter",
      "shorter",
      "shorter",
      "longer",
      "elapsed",
      "random",
    ),
    rate_limit: fc.constantFrom(
      "omit",
      "omit",
      "omit",
      "lower",
      "lower",
      "lower",
      "higher",
      "fresh",
      "random",
    ),
    extra: fc.constantFrom(false, false, false, false, true),
    fraction: fc.double({ min: 0, max: 1, noNaN: true }),
    anything: anyJson,
    whole: fc.constantFrom(false, false, false, false, false, false, false, true),
    /** Half the recipes keep only their narrowing choices, so many approvals are granted and checked. */
    narrowOnly: fc.boolean(),
  });
  type ApproveRecipe = typeof approveRecipeArb extends fc.Arbitrary<infer T> ? T : never;

  function approveBody(input: ApproveRecipe, asked: ApprovalJson): unknown {
    const narrowing = <T extends string>(choice: T, allowed: readonly T[]): T | "omit" =>
      allowed.includes(choice) ? choice : "omit";
    const recipe: ApproveRecipe = input.narrowOnly
      ? {
          ...input,
          scope: narrowing(input.scope, ["subset"]),
          max_tokens: narrowing(input.max_tokens, ["lower", "same"]),
          ttl_seconds: narrowing(input.ttl_seconds, ["shorter"]),
          rate_limit: narrowing(input.rate_limit, ["lower"]),
          extra: false,
          whole: false,
        }
      : input;
    if (recipe.whole) return recipe.anything;
    const body: Record<string, unknown> = {};
    const askedScopes = asked.scope.split(" ");
    const pickCount = Math.max(1, Math.ceil(recipe.fraction * askedScopes.length));
    if (recipe.scope === "subset") body.scope = askedScopes.slice(0, pickCount).join(" ");
    if (recipe.scope === "superset")
      body.scope = [...askedScopes, ...(SCOPES[asked.resource] ?? [])].join(" ");
    if (recipe.scope === "other") body.scope = asked.resource === CRM ? "mail:send" : "crm:read";
    if (recipe.scope === "blank") body.scope = " ";
    if (recipe.scope === "random") body.scope = recipe.anything;
    const lower = Math.max(1, Math.floor(recipe.fraction * asked.max_tokens));
    if (recipe.max_tokens === "lower") body.max_tokens = lower;
    if (recipe.max_tokens === "same") body.max_tokens = asked.max_tokens;
    if (recipe.max_tokens === "higher") body.max_tokens = asked.max_tokens + 1 + lower;
    if (recipe.max_tokens === "zero") body.max_tokens = 0;
    if (recipe.max_tokens === "random") body.max_tokens = recipe.anything;
    const askedTtl = Math.round((Date.parse(asked.expires_at) - Date.parse(asked.created_at)) / 1000);
    if (recipe.ttl_seconds === "shorter")
      body.ttl_seconds = Math.max(30, Math.floor(recipe.fraction * askedTtl));
    if (recipe.ttl_seconds === "longer") body.ttl_seconds = askedTtl + 1 + Math.floor(recipe.fraction * 1000);
    if (recipe.ttl_seconds === "elapsed") body.ttl_seconds = 1;
    if (recipe.ttl_seconds === "random") body.ttl_seconds = recipe.anything;
    const limit = asked.rate_limit ?? { per_second: 10, burst: 10 };
    if (recipe.rate_limit === "lower")
      body.rate_limit = {
        per_second: Math.max(1, Math.floor(limit.per_second * recipe.fraction)),
        burst: Math.max(1, Math.floor(limit.burst * recipe.fraction)),
      };
    if (recipe.rate_limit === "higher")
      body.rate_limit = { per_second: limit.per_second + 1, burst: limit.burst + 1 };
    if (recipe.rate_limit === "fresh") body.rate_limit = { per_second: 1, burst: 1 };
    if (recipe.rate_limit === "random") body.rate_limit = recipe.anything;
    if (recipe.extra) body.status = "approved";
    return body;
  }

  test("approve/deny/revoke/read with random bodies and ids: documented statuses; approving only narrows", async () => {
    let narrowed = 0;
    await fc.assert(
      fc.asyncProperty(
        requestedArb,
        approveRecipeArb,
        fc.oneof(
          {
            weight: 3,
            arbitrary: fc.constant<Transport>({
              encoding: "json",
              contentType: "application/json",
              raw: "",
              auth: "approver",
            }),
          },
          { weight: 1, arbitrary: transportArb },
        ),
        fc.constantFrom("approve", "approve", "approve", "deny", "revoke", "read"),
        fc.constantFrom("real", "real", "real", "real", "unknown", "garbage"),
        fc.string({ maxLength: 30 }),
        async (requested, recipe, transport, action, idKind, garbage) => {
          const scopes = (SCOPES[requested.resource] ?? []).slice(0, requested.scopeCount);
          const created = await send(
            "POST",
            "/approvals",
            {
              resource: requested.resource,
              scope: scopes.join(" "),
              task: "property test",
              max_tokens: requested.max_tokens,
              ttl_seconds: requested.ttl_seconds,
              ...(requested.rate_limit ? { rate_limit: requested.rate_limit } : {}),
            },
            { encoding: "json", contentType: "application/json", raw: "", auth: "agent" },
          );
          assert.equal(created.status, 201, created.text);
          const asked = created.json as unknown as ApprovalJson;
          const body = approveBody(recipe, asked);
          const id =
            idKind === "real"
              ? asked.id
              : idKind === "unknown"
                ? "apr_AAAAAAAAAAAAAAAAAAAAAA"
                : // "." and ".." (and %2E spellings) are dot segments that URL parsing removes (RFC 3986 §5.2.4,
                  // WHATWG URL): a client cannot send them as an id, so they are suffixed to stay one.
                  encodeURIComponent(/^\.{1,2}$/.test(garbage) ? `${garbage}x` : garbage || "%");
          // Decisions come from the approver; mostly with the right credentials.
          const decisionTransport = {
            ...transport,
            auth: transport.auth === "agent" ? "approver" : transport.auth,
          };
          const answer =
            action === "read"
              ? await send("GET", `/approvals/${id}`, undefined, { ...decisionTransport, encoding: "empty" })
              : await send("POST", `/approvals/${id}/${action}`, body, decisionTransport);
          assert.ok(DECISION_STATUSES.includes(answer.status), `${action}: ${answer.status} ${answer.text}`);
          if (answer.status !== 200 || action !== "approve") return;

          const approved = answer.json as unknown as ApprovalJson;
          narrowed += 1;
          assert.equal(approved.id, asked.id);
          assert.equal(approved.status, "approved");
          assert.equal(approved.resource, asked.resource);
          for (const scope of approved.scope.split(" "))
            assert.ok(asked.scope.split(" ").includes(scope), `approved ${scope} was not asked`);
          assert.ok(approved.scope.length > 0);
          assert.ok(approved.max_tokens <= asked.max_tokens, "max_tokens widened");
          assert.ok(Date.parse(approved.expires_at) <= Date.parse(asked.expires_at), "expiry widened");
          if (asked.rate_limit) {
            assert.ok(approved.rate_limit, "rate limit dropped");
            assert.ok(approved.rate_limit.per_second <= asked.rate_limit.per_second, "per_second widened");
            assert.ok(approved.rate_limit.burst <= asked.rate_limit.burst, "burst widened");
          }
          // What the API says is what is stored.
          const stored = await sts.handle.db
            .selectFrom("approvals")
            .select(["scope", "max_tokens", "expires_at", "status"])
            .where("id", "=", asked.id)
            .executeTakeFirstOrThrow();
          assert.deepEqual(
            { ...stored, expires_at: stored.expires_at.toISOString() },
            {
              scope: approved.scope,
              max_tokens: approved.max_tokens,
              expires_at: approved.expires_at,
              status: "approved",
            },
          );
        },
      ),
      propertyRuns(120, 1500),
    );
    console.log(`approvals property: ${narrowed} approvals granted and checked for narrowing`);
    assert.ok(narrowed > 0);
  });
});
